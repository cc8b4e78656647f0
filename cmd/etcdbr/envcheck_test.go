package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func cliModel(t *testing.T) *kong.Application {
	t.Helper()
	parser, err := kong.New(&CLI{}, kong.Name("etcdbr"))
	require.NoError(t, err)
	return parser.Model
}

// Every flag of every command has an ETCDBR_ variable, and the known set is all of them.
func TestKnownEnv(t *testing.T) {
	app := cliModel(t)
	known := knownEnv(app)
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Name == "help" {
				continue
			}
			if assert.NotEmpty(t, f.Envs, "%s --%s has no environment variable", n.Path(), f.Name) {
				assert.True(t, strings.HasPrefix(f.Envs[0], envPrefix), "%s --%s: %s", n.Path(), f.Name, f.Envs[0])
				assert.Contains(t, known, f.Envs[0])
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	// One from each command's own flags, and the global ones.
	for _, name := range []string{"ETCDBR_LOG_LEVEL", "ETCDBR_STORE", "ETCDBR_FULL_SNAPSHOT_SCHEDULE", "ETCDBR_ENDPOINTS",
		"ETCDBR_TO_REVISION", "ETCDBR_WINDOW_ONLY", "ETCDBR_VERIFY_DEEP", "ETCDBR_COPY_FROM", "ETCDBR_GC_DRY_RUN", "ETCDBR_MAX_BACKUPS"} {
		assert.Contains(t, known, name)
	}
}

func TestUnknownEnvWarnings(t *testing.T) {
	known := knownEnv(cliModel(t))
	environ := []string{
		"ETCDBR_STORE=s3://b/p",               // known
		"ETCDBR_STOR=s3://b/p",                // a typo: one letter
		"ETCDBR_FULL_SNAPSHOT_SCHEDUL=@daily", // another
		"ETCDBR_MAXBACKUPS=3",                 // a missing underscore
		"ETCDBR_COMPLETELY_DIFFERENT=1",       // nothing near
		"ETCD_NAME=m1",                        // etcd's namespace, not ours
		"ETCD_STORE=x",                        // likewise, even if it looks like ours
		"ETCDBR_TEST_S3_ENDPOINT=http://x",    // the test harness's
		"ETCDBR_FAILPOINT=",                   // the crash tests'
		"PATH=/bin",
		"ETCDBR_LISTEN_API", // a malformed entry still names a variable
	}
	w := unknownEnvWarnings(environ, known)
	require.Len(t, w, 4, "%q", w)
	assert.Contains(t, w[0], "ETCDBR_COMPLETELY_DIFFERENT is ignored: no known variable is close")
	assert.Contains(t, w[1], "ETCDBR_FULL_SNAPSHOT_SCHEDUL is ignored: did you mean ETCDBR_FULL_SNAPSHOT_SCHEDULE?")
	assert.Contains(t, w[2], "ETCDBR_MAXBACKUPS is ignored: did you mean ETCDBR_MAX_BACKUPS?")
	assert.Contains(t, w[3], "ETCDBR_STOR is ignored: did you mean ETCDBR_STORE?")
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"ETCDBR_STORE", "ETCDBR_STOR", 1}, {"ETCDBR_STORE", "ETCDBR_STROE", 2}, {"same", "same", 0},
	} {
		assert.Equal(t, c.d, editDistance(c.a, c.b), "%q %q", c.a, c.b)
		assert.Equal(t, c.d, editDistance(c.b, c.a), "%q %q", c.b, c.a)
	}
}
