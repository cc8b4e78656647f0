package snapstore

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/storetest"
)

// storeKind is a kind of store the conformance suite runs against.
type storeKind struct {
	name string
	// server is the object-storage server (nil for file and mem).
	server *storetest.Service
	// persistent stores keep their objects when the process that wrote
	// them dies (all but mem).
	persistent bool
}

// storeKinds returns every kind of store: file and mem, and the servers
// scripts/test-services runs. A missing server is a failure when the servers
// are required (make test, CI) and a skip otherwise.
func storeKinds() []storeKind {
	kinds := []storeKind{{name: "file", persistent: true}, {name: "mem"}}
	for _, k := range storetest.Kinds {
		kind := storeKind{name: string(k), persistent: true, server: &storetest.Service{Kind: k}}
		if svc, ok := storetest.ServiceFromEnv(k); ok {
			kind.server = &svc
		}
		kinds = append(kinds, kind)
	}
	return kinds
}

// forEachKind runs f for every store kind in a subtest of its name.
func forEachKind(t *testing.T, f func(t *testing.T, kind storeKind)) {
	forKinds(t, func(storeKind) bool { return true }, f)
}

// forKinds runs f for every store kind that match accepts, in a subtest of
// its name.
func forKinds(t *testing.T, match func(storeKind) bool, f func(t *testing.T, kind storeKind)) {
	for _, kind := range storeKinds() {
		if !match(kind) {
			continue
		}
		t.Run(kind.name, func(t *testing.T) {
			kind.require(t)
			f(t, kind)
		})
	}
}

// require stops the test when the kind's server is not running.
func (k storeKind) require(t *testing.T) {
	t.Helper()
	if k.server == nil || k.server.Endpoint != "" {
		return
	}
	if storetest.Required() {
		t.Fatalf("no %s server: %s", k.name, storetest.MissingHelp)
	}
	t.Skipf("no %s server: %s", k.name, storetest.MissingHelp)
}

// testStore is one fresh, empty store of a kind.
type testStore struct {
	kind   storeKind
	url    string
	bucket string // the server's bucket
	prefix string // the key prefix in the bucket
	dir    string // the file store's directory
}

// newTestStore makes a fresh store of the kind: a temporary directory, a mem
// store, or a new bucket with a prefix. For server kinds it sets the
// provider's environment variables (inherited by child processes).
func newTestStore(t *testing.T, kind storeKind) *testStore {
	t.Helper()
	ts := &testStore{kind: kind}
	switch {
	case kind.name == "file":
		ts.dir = t.TempDir()
		ts.url = "file://" + ts.dir
	case kind.name == "mem":
		ts.url = "mem://some/prefix"
	default:
		for _, kv := range kind.server.ProviderEnv() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		ts.bucket = storetest.NewBucketName()
		ts.prefix = "etcd/prod"
		require.NoError(t, kind.server.CreateBucket(context.Background(), ts.bucket))
		ts.url = kind.server.URL(ts.bucket, ts.prefix)
	}
	return ts
}

// open opens the store with opts. Every mem Store is private: call open once
// for mem stores.
func (ts *testStore) open(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), ts.url, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Check(context.Background()))
	return s
}

// sibling returns a store in the same bucket under another prefix (server
// kinds only).
func (ts *testStore) sibling(prefix string) string {
	return ts.kind.server.URL(ts.bucket, prefix)
}

// rawKeys lists every object under the store's prefix whatever its name
// (temporary files included), relative to the prefix. s is the store for
// mem, which is visible only through its Store.
func (ts *testStore) rawKeys(t *testing.T, s *Store) []string {
	t.Helper()
	ctx := context.Background()
	switch ts.kind.name {
	case "file":
		var keys []string
		require.NoError(t, filepath.WalkDir(ts.dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(ts.dir, path)
				keys = append(keys, filepath.ToSlash(rel))
			}
			return err
		}))
		return keys
	case "mem":
		var keys []string
		it := s.bucket.List(nil)
		for {
			obj, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				return keys
			}
			require.NoError(t, err)
			keys = append(keys, obj.Key)
		}
	default:
		all, err := ts.kind.server.Keys(ctx, ts.bucket)
		require.NoError(t, err)
		var keys []string
		for _, k := range all {
			if rel, ok := strings.CutPrefix(k, ts.prefix+"/"); ok {
				keys = append(keys, rel)
			}
		}
		return keys
	}
}

// putRaw stores an object that etcdbr did not write (another tool's file).
func (ts *testStore) putRaw(t *testing.T, s *Store, key string, data []byte) {
	t.Helper()
	if ts.kind.name == "file" {
		path := filepath.Join(ts.dir, filepath.FromSlash(key))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, data, 0o600))
		return
	}
	require.NoError(t, s.bucket.WriteAll(context.Background(), key, data, nil))
}
