package testsuite

import (
	"context"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fulls lists the full snapshots in a store.
func fulls(t testing.TB, url string) []catalog.Snapshot {
	t.Helper()
	return listKind(t, url, catalog.KindFull)
}

// deltas lists the deltas in a store.
func deltas(t testing.TB, url string) []catalog.Snapshot {
	t.Helper()
	return listKind(t, url, catalog.KindDelta)
}

// openStore opens the store at url without encryption; the caller closes it.
func openStore(t testing.TB, url string) *snapstore.Store {
	t.Helper()
	s, err := snapstore.Open(context.Background(), url, snapstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listKind lists the objects of one kind in a store.
func listKind(t testing.TB, url string, kind catalog.Kind) []catalog.Snapshot {
	t.Helper()
	ctx := context.Background()
	s := openStore(t, url)
	defer s.Close()
	list, err := s.List(ctx, kind)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// waitFull waits until the store holds a full snapshot at revision rev or later.
func waitFull(t testing.TB, url string, rev int64, timeout time.Duration) catalog.Snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list := fulls(t, url)
		if n := len(list); n > 0 && list[n-1].Revision >= rev {
			return list[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no full snapshot at revision >= %d in %s after %v (have %v)", rev, url, timeout, list)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
