package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every path flag of every command refuses an empty value, on the command line and from its
// ETCDBR_ variable, where kong would take the current directory; nothing is created there.
func TestEmptyPathRefused(t *testing.T) {
	t.Chdir(t.TempDir()) // were an empty path taken, it would be this directory
	type pathFlag struct{ cmd, name, env string }
	var flags []pathFlag
	for _, c := range cliModel(t).Node.Children {
		for _, f := range c.Flags {
			if f.Tag.Type == "path" {
				flags = append(flags, pathFlag{c.Name, f.Name, f.Envs[0]})
			}
		}
	}
	require.GreaterOrEqual(t, len(flags), 10, "the path flags: %v", flags)
	// Were the empty path taken, these stop the command before it starts etcd or calls an
	// API, so that the test fails at once.
	stop := map[string][]string{"run": {"--delta-snapshot-period=500ms"}, "status": {"--api=http://127.0.0.1:1"}}
	for _, f := range flags {
		code, out := etcdbr(t, append([]string{f.cmd, "--" + f.name + "="}, stop[f.cmd]...)...)
		assert.Equal(t, exitUsage, code, "%s --%s=: %s", f.cmd, f.name, out)
		assert.Contains(t, out, "--"+f.name+": empty path: give a path (. for the current directory)", f.cmd)
	}
	t.Setenv("ETCDBR_DATA_DIR", "")
	for _, cmd := range []string{"run", "validate", "restore"} {
		code, out := etcdbr(t, append([]string{cmd}, stop[cmd]...)...)
		assert.Equal(t, exitUsage, code, "%s with ETCDBR_DATA_DIR empty: %s", cmd, out)
		assert.Contains(t, out, `--data-dir: empty path`, cmd)
		assert.Contains(t, out, `ETCDBR_DATA_DIR=""`, cmd)
	}
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	assert.Empty(t, entries, "the working directory is untouched")

	// A path is still made absolute, ~ expanded.
	require.NoError(t, os.Unsetenv("ETCDBR_DATA_DIR"))
	var cli CLI
	parser, err := newParser(&cli, &strings.Builder{}, &strings.Builder{}, func(int) {})
	require.NoError(t, err)
	_, err = parser.Parse([]string{"validate", "--data-dir", "data"})
	require.NoError(t, err)
	wd, err := os.Getwd()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(wd, "data"), cli.Validate.DataDir)
	_, err = parser.Parse([]string{"validate", "--data-dir", "~/data"})
	require.NoError(t, err)
	assert.Equal(t, kong.ExpandPath("~/data"), cli.Validate.DataDir)
	assert.True(t, filepath.IsAbs(cli.Validate.DataDir))
}

// --store "" or ETCDBR_STORE set to nothing is refused: run would otherwise back up into
// the default store beside the data dir instead of the store that was meant.
func TestEmptyStoreRefused(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, cmd := range []string{"run", "snapshot", "list", "restore"} {
		// --delta-snapshot-period stops run before etcd starts, were the empty store taken.
		args := []string{cmd, "--store="}
		if cmd == "run" {
			args = append(args, "--delta-snapshot-period=500ms")
		}
		code, out := etcdbr(t, args...)
		assert.Equal(t, exitUsage, code, "%v: %s", args, out)
		assert.Contains(t, out, "--store: empty value: give one, or leave the flag and its ETCDBR_ variable out", cmd)
	}
	t.Setenv("ETCDBR_STORE", "")
	code, out := etcdbr(t, "run", "--delta-snapshot-period=500ms")
	assert.Equal(t, exitUsage, code, out)
	assert.Contains(t, out, `--store: empty value`)
	assert.Contains(t, out, `ETCDBR_STORE=""`)
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing created")
}
