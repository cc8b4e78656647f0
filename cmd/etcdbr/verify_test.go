package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

var testTime = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// writeTestChain writes a full snapshot at revision 10 and deltas 11..20 and 21..30 into
// the file store at dir, encrypted to recipients if any.
func writeTestChain(t *testing.T, dir string, recipients ...age.Recipient) []catalog.Snapshot {
	t.Helper()
	ctx := context.Background()
	s, err := snapstore.Open(ctx, "file://"+dir, snapstore.Options{Recipients: recipients})
	require.NoError(t, err)
	defer s.Close()
	put := func(snap catalog.Snapshot, payload []byte) catalog.Snapshot {
		w, err := s.Create(ctx, snap)
		require.NoError(t, err)
		defer w.Abort()
		_, err = w.Write(payload)
		require.NoError(t, err)
		done, err := w.Commit()
		require.NoError(t, err)
		return done
	}
	db := bytes.Repeat([]byte("/registry/pods/default/x "), 4096)
	sum := sha256.Sum256(db)
	snaps := []catalog.Snapshot{put(catalog.Snapshot{Kind: catalog.KindFull, Revision: 10, Time: testTime}, append(db, sum[:]...))}
	for _, r := range [][2]int64{{11, 20}, {21, 30}} {
		var buf bytes.Buffer
		e, err := snapstore.NewDeltaEncoder(&buf, r[0], r[1])
		require.NoError(t, err)
		for rev := r[0]; rev <= r[1]; rev++ {
			require.NoError(t, e.Revision(snapstore.Revision{Revision: rev, Time: testTime, Events: []*mvccpb.Event{{
				Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), CreateRevision: 11, ModRevision: rev, Version: rev - 10},
			}}}))
		}
		require.NoError(t, e.Close())
		snaps = append(snaps, put(catalog.Snapshot{Kind: catalog.KindDelta, From: r[0], Revision: r[1], Time: testTime.Add(time.Duration(r[0]) * time.Second)}, buf.Bytes()))
	}
	return snaps
}

// etcdbr runs the command line and returns the exit code and what it printed.
func etcdbr(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut strings.Builder
	code := run(append([]string{"etcdbr", "--log-level", "error"}, args...), &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestVerifyCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	snaps := writeTestChain(t, dir)

	code, out := etcdbr(t, "verify", "--store", "file://"+dir)
	assert.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "latest point: revision 30")
	assert.Contains(t, out, "\nOK\n")

	path := filepath.Join(dir, filepath.FromSlash(snaps[1].Key))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[len(b)/2] ^= 1
	require.NoError(t, os.WriteFile(path, b, 0o600))
	code, out = etcdbr(t, "verify", "--store", "file://"+dir)
	assert.Equal(t, exitFailure, code, out)
	assert.Contains(t, out, "  "+snaps[1].Key+": ", "the problem names the object")
	t.Log(out)
}

func TestCopyCommand(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	key, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	snaps := writeTestChain(t, src, key.Recipient())
	keyFile := writeFile(t, root, "key.txt", key.String()+"\n")

	// Byte for byte, without the key: the copies are checked byte for byte only.
	dst := "file://" + filepath.Join(root, "dst")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "dst"), 0o700))
	code, out := etcdbr(t, "copy", "--from", "file://"+src, "--to", dst)
	require.Equal(t, exitOK, code, out)
	for _, s := range snaps {
		assert.Contains(t, out, "copied "+s.Key+" (")
	}
	assert.Contains(t, out, "no identity to decrypt it")
	code, out = etcdbr(t, "copy", "--from", "file://"+src, "--to", dst)
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "copied 0 objects (0 bytes); 3 were in the destination already")

	// Verifying the copy needs the key, and says so, naming the objects.
	code, out = etcdbr(t, "verify", "--store", dst)
	assert.Equal(t, exitFailure, code, out)
	assert.Contains(t, out, snaps[0].Key+": ")
	assert.Contains(t, out, "give the identity")
	code, out = etcdbr(t, "verify", "--store", dst, "--encryption-identity", keyFile)
	assert.Equal(t, exitOK, code, out)

	// Re-encrypted to a passphrase, from a point in time on.
	pass := writeFile(t, root, "pass", "another-long-passphrase-for-the-copy\n")
	rotated := "file://" + filepath.Join(root, "rotated")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "rotated"), 0o700))
	code, out = etcdbr(t, "copy", "--from", "file://"+src, "--to", rotated, "--encryption-identity", keyFile,
		"--encryption-passphrase-file", pass, "--since", testTime.Add(time.Minute).Format(time.RFC3339))
	require.Equal(t, exitOK, code, out)
	assert.Contains(t, out, "re-encrypted, verified")
	assert.Contains(t, out, "copied 3 objects", "the full snapshot before --since and everything after it")
	code, out = etcdbr(t, "verify", "--store", rotated, "--encryption-passphrase-file", pass)
	assert.Equal(t, exitOK, code, out)

	code, out = etcdbr(t, "copy", "--from", "file://"+src, "--to", dst, "--since", "yesterday")
	assert.Equal(t, exitUsage, code, out)
	assert.Contains(t, out, "--since \"yesterday\"")
}
