package snapstore

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// restartDelay is how long a server stays down in TestServerRestart.
const restartDelay = 2 * time.Second

// TestServerRestart stops a server in the middle of a download and in the
// middle of an upload, and starts it again after restartDelay on the same
// port and data: the download resumes where it broke off and reads back
// verified; the upload completes (the SDK retried its parts until the server
// was back) and reads back verified, or, where the server forgot the upload
// (fake-gcs-server), fails and leaves nothing visible.
// Each kind gets a server of its own, since the shared ones serve other tests.
func TestServerRestart(t *testing.T) {
	bins, ok := storetest.BinariesFromEnv()
	if !ok {
		if storetest.Required() {
			t.Fatal(storetest.MissingHelp)
		}
		t.Skip(storetest.MissingHelp)
	}
	for _, kind := range storetest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			ctx := context.Background()
			srv, err := storetest.Start(ctx, kind, bins, filepath.Join(t.TempDir(), "data"))
			require.NoError(t, err)
			t.Cleanup(srv.Kill)
			svc := storetest.ServiceOf(srv)
			ts := newTestStore(t, storeKind{name: string(kind), server: &svc, persistent: true})
			s := ts.open(t, Options{Log: testLogger(t)})
			// Azurite keeps its metadata in memory and saves it now and
			// then and when it stops: killed, it forgets recent containers
			// and blobs, which no real service does. Stop it cleanly.
			stop := srv.Kill
			if kind == storetest.Azure {
				stop = srv.Stop
			}
			restart := func() <-chan error {
				stop()
				done := make(chan error, 1)
				go func() {
					time.Sleep(restartDelay)
					done <- srv.Restart(ctx)
				}()
				return done
			}
			t.Run("download", func(t *testing.T) { testRestartDownload(t, s, kind, restart) })
			t.Run("upload", func(t *testing.T) { testRestartUpload(t, s, kind, restart) })
		})
	}
}

func testRestartDownload(t *testing.T, s *Store, kind storetest.Kind, restart func() <-chan error) {
	payload := randomBytes(64<<20, 21) // stored as about as many bytes
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 100, Time: testTime}, payload)
	r, err := s.Open(context.Background(), snap)
	require.NoError(t, err)
	defer r.Close()
	head := make([]byte, 16<<20)
	_, err = io.ReadFull(r, head)
	require.NoError(t, err)

	restarted := restart()
	rest, err := io.ReadAll(r)
	require.NoError(t, err, "the download did not survive the restart")
	require.NoError(t, <-restarted)
	assert.True(t, bytes.Equal(payload, append(head, rest...)), "payload differs")
	resumes := r.(*Reader).body.(*resumingReader).resumes
	t.Logf("download resumed %d time(s) by etcdbr", resumes)
	if kind != storetest.GCS {
		assert.Positive(t, resumes, "the stream was never resumed: the restart did not break it")
	}
	// The GCS client resumes broken reads itself (storage.Reader reopens at
	// the offset it reached), so etcdbr sees no break there.
}

func testRestartUpload(t *testing.T, s *Store, kind storetest.Kind, restart func() <-chan error) {
	ctx := context.Background()
	payload := randomBytes(64<<20, 22)
	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindFull, Revision: 200, Time: testTime})
	require.NoError(t, err)
	defer w.Abort()
	half := len(payload) / 2
	_, err = w.Write(payload[:half])
	require.NoError(t, err)

	restarted := restart()
	start := time.Now()
	_, err = w.Write(payload[half:])
	var snap catalog.Snapshot
	if err == nil {
		snap, err = w.Commit()
	}
	require.NoError(t, <-restarted)
	// MinIO and Azurite keep a multipart upload's parts (uncommitted
	// blocks) on disk, so the SDKs' retries carry the upload across the
	// restart. fake-gcs-server keeps resumable upload sessions in memory and
	// forgets them (GCS itself keeps them for a week): there the upload
	// fails, cleanly.
	if kind != storetest.GCS {
		require.NoError(t, err, "the upload did not survive the restart")
	}
	if err != nil {
		// The server lost the upload's state: nothing may be visible.
		t.Logf("upload failed across the restart after %v: %v", time.Since(start).Round(time.Millisecond), err)
		list, lerr := s.List(ctx, catalog.KindFull)
		require.NoError(t, lerr)
		for _, snap := range list {
			assert.NotEqual(t, w.Key(), snap.Key, "a failed upload is visible")
		}
	} else {
		t.Logf("upload completed across the restart in %v", time.Since(start).Round(time.Millisecond))
		back, err := readObject(s, snap)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(payload, back), "payload differs")
	}
	// The store works again for the next upload.
	next := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 201, Time: testTime}, payload[:1<<20])
	back, err := readObject(s, next)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload[:1<<20], back))
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSuffix(p, []byte("\n"))))
	return len(p), nil
}
