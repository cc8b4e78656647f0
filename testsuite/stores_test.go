package testsuite

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/etcdbr/etcdbr/internal/etcdtest"
	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestMinIOEndToEnd runs `etcdbr run --store s3://...` against a real MinIO server with delta
// snapshots, destroys the data dir, and lets `etcdbr run` restore it: every key and lease
// comes back exactly, and `etcdbr verify --deep` passes. With encryption on, no object in the
// bucket holds a known key or value in clear.
func TestMinIOEndToEnd(t *testing.T) {
	svc := storetest.RequireService(t, storetest.S3)
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) { testMinIOEndToEnd(t, svc, encrypted) })
	}
}

func testMinIOEndToEnd(t *testing.T, svc storetest.Service, encrypted bool) {
	ctx := context.Background()
	dir := t.TempDir()
	bucket := storetest.NewBucketName()
	if err := svc.CreateBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	store := svc.URL(bucket, "clusters/one")
	var keyArgs []string
	if encrypted {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(dir, "backup.key")
		if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		keyArgs = []string{"--encryption-recipient", id.Recipient().String(), "--encryption-identity", keyFile}
	}
	m := newMember(t, dir)
	args := m.runArgs(store, append([]string{"--full-snapshot-schedule", "@daily", "--delta-snapshot-period", "1s"}, keyArgs...)...)

	p := start(t, args)
	cli := client(t, m.ClientURL)
	waitFull(t, store, 1, time.Minute)
	if _, err := (etcdtest.Workload{Seed: 4, Keys: 2000, Overwrites: 300, Deletes: 150, LeasedKeys: 40}).Run(ctx, cli); err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, memberRevision(t, cli), time.Minute)
	// More writes, in later deltas: the secret, and overwrites of keys of the first ones.
	secretKey, secretValue := "/registry/secrets/kube-system/"+randomHex(t, 8), randomHex(t, 24)
	if _, err := cli.Put(ctx, secretKey, secretValue); err != nil {
		t.Fatal(err)
	}
	first, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for key := range first.KVs {
		if n++; n > 100 {
			break
		}
		if _, err := cli.Put(ctx, key, "overwritten "+randomHex(t, 4)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond) // spread over more than one delta period
	}
	want, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitStoreRevision(t, store, want.Revision, time.Minute)
	cli.Close()
	p.stop()
	if n := len(deltas(t, store)); n < 3 {
		t.Fatalf("%d deltas in the store, want at least 3", n)
	}

	// The data dir is lost; the backups in MinIO are all there is.
	if err := os.RemoveAll(m.DataDir); err != nil {
		t.Fatal(err)
	}
	code, out := runToExit(t, append([]string{"verify", "--store", store, "--deep", "--temp-dir", t.TempDir()}, keyArgs...))
	if code != 0 || !strings.Contains(out, "\nOK\n") {
		t.Fatalf("etcdbr verify --deep: exit code %d:\n%s", code, out)
	}
	t.Logf("etcdbr verify --deep:\n%s", out)

	p = start(t, args)
	cli = client(t, m.ClientURL)
	got, err := etcdtest.Take(ctx, cli, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The restore at start cannot know what the lost member served after the store's newest
	// revision: the restored data starts a new history.
	if diff := etcdtest.Diff(newHistory(want, want.Revision), got, 10); len(diff) > 0 {
		t.Fatalf("restored data differs from the source:\n%s", strings.Join(diff, "\n"))
	}
	t.Logf("restored %d keys and %d leases at revision %d from %s", len(got.KVs), len(got.Leases), got.Revision, store)
	cli.Close()
	p.stop()

	checkObjectsInClear(t, svc, bucket, encrypted, []byte(secretKey), []byte(secretValue))
}

// checkObjectsInClear reads every object in the bucket as stored. Encrypted, none may hold
// the secret key or value, and every object is an age file; plain, the decompressed objects
// hold them (so the search would find them if they were there).
func checkObjectsInClear(t *testing.T, svc storetest.Service, bucket string, encrypted bool, secrets ...[]byte) {
	t.Helper()
	ctx := context.Background()
	b, err := svc.Bucket(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	keys, err := svc.Keys(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, key := range keys {
		raw, err := b.ReadAll(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if path.Base(key) == snapstore.ClusterIDKey || strings.Contains(key, "/"+snapstore.HistoryPrefix) || strings.Contains("/"+key, "/alive/") {
			// The store's cluster record, history records and liveness records: plain JSON
			// naming the cluster or revisions and times, no etcd data.
			for _, s := range secrets {
				if bytes.Contains(raw, s) {
					t.Errorf("the record %s holds %q", key, s)
				}
			}
			if !json.Valid(raw) {
				t.Errorf("the record %s is not JSON: %q", key, raw)
			}
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(raw, s) {
				if encrypted {
					t.Errorf("object %s holds %q in clear", key, s)
				}
				found++
			}
		}
		if !encrypted {
			payload, err := unzstd(raw)
			if err != nil {
				t.Fatalf("object %s: %v", key, err)
			}
			for _, s := range secrets {
				if bytes.Contains(payload, s) {
					found++
				}
			}
			continue
		}
		if _, ok := catalog.ParseName(strings.TrimPrefix(key, "clusters/one/")); ok && !strings.HasSuffix(key, ".age") {
			t.Errorf("object %s is not encrypted", key)
		}
		if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1\n")) {
			t.Errorf("object %s is not an age file", key)
		}
	}
	if !encrypted && found == 0 {
		t.Fatalf("the plain objects do not hold the secret key or value: the search cannot find what it looks for")
	}
	t.Logf("%d objects searched (encrypted: %v), %d hits", len(keys), encrypted, found)
}

func unzstd(raw []byte) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(d)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
