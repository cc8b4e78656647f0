package snapstore

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// maxUploadRSS bounds the peak resident memory of a process that uploads and
// then downloads a 1 GiB snapshot.
const maxUploadRSS = 200 << 20

// TestStreamedUpload1GiB uploads 1 GiB in a child process, reads it back
// verified, and checks the child's peak RSS. It runs for the kinds in
// largeUploadKinds (all of them under the soak build tag).
func TestStreamedUpload1GiB(t *testing.T) {
	large := func(k storeKind) bool { return slices.Contains(largeUploadKinds, k.name) }
	forKinds(t, large, func(t *testing.T, kind storeKind) {
		ts := newTestStore(t, kind)
		start := time.Now()
		h := startHelper(t, ts.url, 1<<30, 42)
		committed := h.waitFor(t, "committed", 10*time.Minute)
		uploaded := time.Since(start)
		sum := h.waitFor(t, "verified", 10*time.Minute)
		rss := h.waitFor(t, "peak-rss", time.Minute)
		require.NoError(t, <-h.done)
		kb, err := strconv.ParseInt(rss[0], 10, 64)
		require.NoError(t, err)
		t.Logf("%s: 1 GiB stored as %s bytes (%s); upload %v, upload+download %v; peak RSS %d MiB; sha256 %s",
			kind.name, committed[1], committed[0], uploaded.Round(time.Millisecond),
			time.Since(start).Round(time.Millisecond), kb>>10, sum[0])
		assert.Less(t, kb<<10, int64(maxUploadRSS), "peak RSS")

		s := ts.open(t, Options{})
		list, err := s.List(context.Background(), catalog.KindFull)
		require.NoError(t, err)
		require.Len(t, list, 1)
		assert.Equal(t, committed[0], list[0].Key)
		assert.Equal(t, committed[1], strconv.FormatInt(list[0].Size, 10))
	})
}

// TestKilledUpload kills a process with SIGKILL in the middle of an upload:
// nothing becomes visible. What an interrupted upload leaves behind, out of
// sight, is logged: a file store's temporary file, an S3 multipart upload in
// progress, an Azure blob of uncommitted blocks.
func TestKilledUpload(t *testing.T) {
	// A mem store dies with its process.
	persistent := func(k storeKind) bool { return k.persistent }
	forKinds(t, persistent, func(t *testing.T, kind storeKind) {
		ctx := context.Background()
		ts := newTestStore(t, kind)
		h := startHelper(t, ts.url, 1<<30, 43)
		// 256 MiB of payload written, more than 100 MiB stored: the upload
		// buffers (32 MiB) are full many times over, so parts were uploaded.
		for range 16 {
			h.waitFor(t, "progress", 5*time.Minute)
		}
		require.NoError(t, h.cmd.Process.Kill())
		<-h.done

		s := ts.open(t, Options{})
		for _, k := range []catalog.Kind{catalog.KindFull, catalog.KindDelta} {
			list, err := s.List(ctx, k)
			require.NoError(t, err)
			assert.Empty(t, list, "%s objects visible after the kill", k)
		}
		raw := ts.rawKeys(t, s)
		for _, key := range raw {
			_, ok := catalog.ParseName(key)
			assert.False(t, ok, "object %s is visible under a backup name", key)
		}
		var incomplete []string
		if kind.server != nil {
			var err error
			incomplete, err = kind.server.IncompleteUploads(ctx, ts.bucket)
			require.NoError(t, err)
		}
		t.Logf("%s after SIGKILL mid-upload: objects under the prefix %q, incomplete uploads %q", kind.name, raw, incomplete)
	})
}
