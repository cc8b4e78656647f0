//go:build unix

package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	base, _, _ := newDataDirKeys(t, 50)
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
			copyTree(t, base.Dir, dir)
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
// process, or, when it runs as root, a copy of the test binary running as nobody, to which
// root (a temporary dir holding dir) and dir are handed over.
func inspectUnprivileged(t *testing.T, root, dir string) Verdict {
	t.Helper()
	if os.Geteuid() != 0 {
		return InspectWith(context.Background(), dir, "", InspectOptions{Depth: DepthFull})
	}
	// nobody must reach the dir: the test's own dirs between the temp dir and root are
	// opened for others to search; the temp dir itself must already be.
	tmp := filepath.Clean(os.TempDir())
	require.True(t, strings.HasPrefix(root, tmp+string(filepath.Separator)), "t.TempDir %s outside %s", root, tmp)
	info, err := os.Stat(tmp)
	require.NoError(t, err)
	require.NotZero(t, info.Mode().Perm()&0o001, "the temp dir %s is not searchable by other users: "+
		"this test runs the check as user %d; set TMPDIR to a dir others may search (like /tmp)", tmp, nobody)
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
	copyExecutable(t, os.Args[0], bin)
	cmd := exec.Command(bin, "-test.run=^TestInspectUnreadableFile$", "-test.count=1")
	cmd.Env = append(os.Environ(), inspectChildEnv+"="+dir)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	require.NoError(t, err, "the check as user %d: %s", nobody, out)
	var v Verdict
	dec := json.NewDecoder(bytes.NewReader(out))
	require.NoError(t, dec.Decode(&v), "the child's verdict: %s", out)
	return v
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
