package snapstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gocloud.dev/blob"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestListFileStoreDuringUploads lists a file store many times while uploads commit in a
// tight loop beside it, the way fileblob commits them: a temporary file
// <key>.<hex>.tmp next to the object, renamed to the key (or removed, for an upload
// abandoned). An entry that vanishes while the directory is listed must not fail the
// listing, and no committed object may be missing from it: every object committed before a
// listing starts is in it. (Listing through gocloud's fileblob fails within a few
// listings here.) Each writer commits up to maxCommits objects, then goes on with uploads
// it abandons, so that the directory stays small enough to list 300 times in seconds.
func TestListFileStoreDuringUploads(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	ctx := context.Background()
	fullDir := filepath.Join(dir, "full")
	require.NoError(t, os.MkdirAll(fullDir, 0o700))

	var mu sync.Mutex
	var committed []string // in commit order
	commit := func(rev int64) string {
		return catalog.FullName(rev, testTime.Add(time.Duration(rev)*time.Millisecond), false)
	}
	for rev := int64(1); rev <= 50; rev++ {
		key := commit(rev)
		require.NoError(t, os.WriteFile(filepath.Join(dir, key), []byte("full"), 0o600))
		committed = append(committed, key)
	}

	const writers, maxCommits = 2, 1500
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rev := int64(1_000_000*(w+1) + i)
				key := commit(rev)
				tmp := filepath.Join(dir, fmt.Sprintf("%s.%x.tmp", key, time.Now().UnixNano()))
				if err := os.WriteFile(tmp, []byte("full"), 0o600); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 2 || i >= maxCommits { // an upload abandoned
					if err := os.Remove(tmp); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				if err := os.Rename(tmp, filepath.Join(dir, key)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				committed = append(committed, key)
				mu.Unlock()
			}
		})
	}
	defer wg.Wait()
	defer close(stop)

	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < 300 && time.Now().Before(deadline); i++ {
		mu.Lock()
		before := slices.Clone(committed)
		mu.Unlock()
		var listed []catalog.Snapshot
		if i%2 == 0 {
			got, err := s.List(ctx, catalog.KindFull)
			require.NoError(t, err, "listing %d", i)
			listed = got
		} else {
			got, err := s.ListForGC(ctx)
			require.NoError(t, err, "listing %d", i)
			listed = got.Fulls
		}
		have := map[string]bool{}
		for _, snap := range listed {
			have[snap.Key] = true
		}
		for _, key := range before {
			require.True(t, have[key], "listing %d misses %s, committed before it started", i, key)
		}
	}
}

// TestListDirListsWhatFileblobLists compares a file store's listing with gocloud's fileblob
// listing of the same directory, when nothing changes in it: the same keys, sizes and times,
// for every prefix the store lists.
func TestListDirListsWhatFileblobLists(t *testing.T) {
	s, dir := openFileStore(t, Options{})
	ctx := context.Background()
	files := []string{
		catalog.FullName(10, testTime, false),
		catalog.FullName(20, testTime, true),
		catalog.FullName(30, testTime, false) + ".18eed1c873da89a7.tmp",
		catalog.DeltaName(11, 20, testTime, false),
		catalog.DeltaName(21, 25, testTime, true),
		"delta/notes.txt",
		"locks/restore-0123abcd.json",
		"locks/other.json",
		"history/00000000000000001000.json",
		"damaged/" + catalog.DeltaName(11, 20, testTime, false) + ".json",
		"cluster.json",
		"fullness/not-a-prefix-match",
		"deeply/nested/dir/file",
		"top-level-file",
	}
	for i, f := range files {
		path := filepath.Join(dir, filepath.FromSlash(f))
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
		require.NoError(t, os.WriteFile(path, make([]byte, i+1), 0o600))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "empty", "dir"), 0o700))
	type entry struct {
		Key  string
		Size int64
		Mod  time.Time
	}
	for _, prefix := range []string{"", "full/", "delta/", "locks/", "history/", "damaged/", "full", "nothing/"} {
		var want, got []entry
		it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
		for {
			obj, err := it.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			want = append(want, entry{obj.Key, obj.Size, obj.ModTime})
		}
		require.NoError(t, listDir(ctx, dir, prefix, func(obj *blob.ListObject) error {
			got = append(got, entry{obj.Key, obj.Size, obj.ModTime})
			return nil
		}))
		require.Equal(t, want, got, "prefix %q", prefix)
	}
}
