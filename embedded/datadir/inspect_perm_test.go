//go:build unix

package datadir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
)

// inspectChildEnv names the data dir a child process of TestInspectUnreadableFile inspects.
const inspectChildEnv = "ETCDBR_TEST_INSPECT_DIR"

// nobody is the unprivileged user the inspection runs as when the test runs as root (root
// reads any file whatever its mode).
const nobody = 65534

// A file of the data dir that the process may not read is "could not tell", never
// "corrupt": the data may be fine, and a wrong "corrupt" throws it away.
func TestInspectUnreadableFile(t *testing.T) {
	if dir := os.Getenv(inspectChildEnv); dir != "" {
		v := InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
		require.NoError(t, json.NewEncoder(os.Stdout).Encode(v))
		return
	}
	t.Parallel()
	base, _, _ := embeddedtest.NewDataDirKeys(t, embedded.Start, 50)
	for _, tc := range []struct {
		name string
		file func(t *testing.T, dir string) string // the file to make unreadable
	}{
		{"db", func(_ *testing.T, dir string) string { return filepath.Join(dir, "member", "snap", "db") }},
		{"WAL file", func(t *testing.T, dir string) string { return walFilePath(t, filepath.Join(dir, "member", "wal")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := filepath.Join(root, "data")
			embeddedtest.CopyTree(t, base.Dir, dir)
			file := tc.file(t, dir)
			require.NoError(t, os.Chmod(file, 0))

			v := inspectUnprivileged(t, root, dir)
			t.Logf("verdict: %s: %s", v.State, v.Reason)
			assert.Equal(t, StateUnknown, v.State, v.Reason)
			assert.Contains(t, v.Reason, file)
			assert.Contains(t, v.Reason, "permission denied")
			assert.NotContains(t, v.Reason, "damaged")

			// Readable again, the same dir is valid: nothing was changed by the check.
			require.NoError(t, os.Chmod(file, 0o600))
			assert.Equal(t, StateValid, InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull}).State)
		})
	}
}

// inspectUnprivileged runs the full check of dir as a user that file modes bind: this
// process, or, when it runs as root, a copy of the test binary running as nobody.
func inspectUnprivileged(t *testing.T, root, dir string) Verdict {
	t.Helper()
	if os.Geteuid() != 0 {
		return InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
	}
	out := runAsNobody(t, root, "TestInspectUnreadableFile", inspectChildEnv+"="+dir)
	var v Verdict
	require.NoError(t, json.NewDecoder(bytes.NewReader(out)).Decode(&v), "the child's verdict: %s", out)
	return v
}

// runAsNobody runs the test named test in a copy of the test binary as user nobody, with
// env added to its environment, and returns its standard output. Root must be a temporary
// dir of the test: it and everything below are handed over to nobody, and the dirs between
// the system's temp dir and it are opened for others to search.
func runAsNobody(t *testing.T, root, test string, env ...string) []byte {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	require.True(t, strings.HasPrefix(root, tmp+string(filepath.Separator)), "t.TempDir %s outside %s", root, tmp)
	info, err := os.Stat(tmp)
	require.NoError(t, err)
	require.NotZero(t, info.Mode().Perm()&0o001, "the temp dir %s is not searchable by other users: "+
		"this test runs as user %d; set TMPDIR to a dir others may search (like /tmp)", tmp, nobody)
	for p := filepath.Dir(root); p != tmp; p = filepath.Dir(p) {
		info, err := os.Stat(p)
		require.NoError(t, err)
		require.NoError(t, os.Chmod(p, info.Mode().Perm()|0o011))
	}
	require.NoError(t, filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, nobody, nobody)
	}))
	bin := filepath.Join(root, "embedded.test")
	if _, err := os.Stat(bin); errors.Is(err, fs.ErrNotExist) { // copied by an earlier call
		copyExecutable(t, os.Args[0], bin)
	}
	for attempt := 1; ; attempt++ {
		cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), env...)
		cmd.Dir = root
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		// A process forked by a parallel test while the copy was open for writing holds
		// it until it execs: ETXTBSY for a moment.
		if errors.Is(err, syscall.ETXTBSY) && attempt < 50 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		require.NoError(t, err, "%s as user %d: %s", test, nobody, out)
		return out
	}
}

// copyExecutable copies the file src to dst, executable by anybody.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
