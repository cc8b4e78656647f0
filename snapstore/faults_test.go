package snapstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/internal/faultstore"
	"github.com/etcdbr/etcdbr/internal/storetest"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// s3TestServer is the S3 server of the tests (MinIO), with the environment the SDK reads its
// credentials from set for the test.
func s3TestServer(t *testing.T) *storetest.Service {
	t.Helper()
	kind := storeKind{name: "s3", persistent: true, server: &storetest.Service{Kind: storetest.S3}}
	if svc, ok := storetest.ServiceFromEnv(storetest.S3); ok {
		kind.server = &svc
	}
	kind.require(t)
	for _, kv := range kind.server.ProviderEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return kind.server
}

// TestS3MaxAttemptsFromEnvironment: AWS_MAX_ATTEMPTS sets how many times an upload's
// request is tried, as docs/stores.md says (gocloud's own retryer made the SDK ignore it:
// ten tries, about a minute and a half, against a store that throttles every upload). The
// store is MinIO behind a proxy that answers every upload with S3's 503 SlowDown; the
// failed upload names the object and the store's answer, and leaves nothing.
func TestS3MaxAttemptsFromEnvironment(t *testing.T) {
	server := s3TestServer(t)
	t.Setenv("AWS_MAX_ATTEMPTS", "2")
	ctx := context.Background()
	bucket := storetest.NewBucketName()
	require.NoError(t, server.CreateBucket(ctx, bucket))
	proxy, err := faultstore.Start(server.Endpoint, nil)
	require.NoError(t, err)
	defer proxy.Close()
	s, err := Open(ctx, storetest.Service{Kind: storetest.S3, Endpoint: proxy.URL()}.URL(bucket, "x"), Options{})
	require.NoError(t, err)
	defer s.Close()

	proxy.Set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpPut}, Fault: faultstore.Fault{Kind: faultstore.SlowDown}})
	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 2, Revision: 3, Time: testTime})
	require.NoError(t, err)
	_, err = w.Write(randomBytes(64<<10, 1))
	require.NoError(t, err)
	_, err = w.Commit()
	require.Error(t, err)
	require.Contains(t, err.Error(), w.Key())
	require.Contains(t, err.Error(), "SlowDown")
	puts := 0
	for _, r := range proxy.Requests() {
		if r.Op == faultstore.OpPut {
			puts++
		}
	}
	require.Equal(t, 2, puts, "upload requests with AWS_MAX_ATTEMPTS=2")

	proxy.Clear()
	l, err := s.ListBackups(ctx)
	require.NoError(t, err)
	require.Empty(t, l.Deltas)
	uploads, err := server.IncompleteUploads(ctx, bucket)
	require.NoError(t, err)
	require.Empty(t, uploads)
}

// TestS3VerifyRereadsCorruptionInTransit: a byte flipped in one read of an object fails
// that read as corrupt, naming it (the object is intact in the store); Verify reads it again
// and finds nothing wrong.
func TestS3VerifyRereadsCorruptionInTransit(t *testing.T) {
	server := s3TestServer(t)
	ctx := context.Background()
	bucket := storetest.NewBucketName()
	require.NoError(t, server.CreateBucket(ctx, bucket))
	proxy, err := faultstore.Start(server.Endpoint, nil)
	require.NoError(t, err)
	defer proxy.Close()
	s, err := Open(ctx, storetest.Service{Kind: storetest.S3, Endpoint: proxy.URL()}.URL(bucket, "x"), Options{})
	require.NoError(t, err)
	defer s.Close()
	db := compressible(32 << 10) // a full snapshot's payload: the db, then its SHA-256
	sum := sha256.Sum256(db)
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 5, Time: testTime}, append(db, sum[:]...))

	proxy.Set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpGet}, Times: 1, Fault: faultstore.Fault{Kind: faultstore.Corrupt, After: 100}})
	_, err = readObject(s, snap)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, err.Error(), snap.Key)

	proxy.Set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpGet}, Times: 1, Fault: faultstore.Fault{Kind: faultstore.Corrupt, After: 100}})
	rep, err := Verify(ctx, s, VerifyOptions{RecordDamage: true})
	require.NoError(t, err)
	require.True(t, rep.OK(), "problems: %v", rep.Problems)
	damaged, err := s.DamagedIn(ctx, []catalog.Snapshot{snap})
	require.NoError(t, err)
	require.Empty(t, damaged)

	// Damaged at every read, as in the store: reported and recorded.
	proxy.Set(faultstore.Rule{Ops: []faultstore.Op{faultstore.OpGet}, Key: snap.Key, Fault: faultstore.Fault{Kind: faultstore.Corrupt, After: 100}})
	rep, err = Verify(ctx, s, VerifyOptions{RecordDamage: true})
	require.NoError(t, err)
	require.False(t, rep.OK())
	require.Equal(t, snap.Key, rep.Problems[0].Key)
	require.True(t, errors.Is(rep.Problems[0].Err, ErrCorrupt), "%v", rep.Problems[0].Err)
	proxy.Clear()
	damaged, err = s.DamagedIn(ctx, []catalog.Snapshot{snap})
	require.NoError(t, err)
	require.Contains(t, damaged, snap.Key)
}
