package snapstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// fakeS3 runs an in-process S3 server with the bucket "backups" and returns
// its backend and a function that makes a store URL for "bucket/prefix".
func fakeS3(t *testing.T) (*s3mem.Backend, func(bucketAndPrefix string) string) {
	t.Helper()
	backend := s3mem.New()
	require.NoError(t, backend.CreateBucket("backups"))
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return backend, func(bucketAndPrefix string) string {
		return "s3://" + bucketAndPrefix + "?region=us-east-1&use_path_style=true&response_checksum_validation=when_required&endpoint=" + url.QueryEscape(srv.URL)
	}
}

// objectKeys lists every key in the fake bucket.
func objectKeys(t *testing.T, backend *s3mem.Backend) []string {
	t.Helper()
	list, err := backend.ListBucket("backups", nil, gofakes3.ListBucketPage{})
	require.NoError(t, err)
	var keys []string
	for _, obj := range list.Contents {
		keys = append(keys, obj.Key)
	}
	return keys
}

// openUploads lists the multipart uploads in progress in the fake bucket.
func openUploads(t *testing.T, s *Store) []types.MultipartUpload {
	t.Helper()
	var client *s3.Client
	require.True(t, s.bucket.As(&client))
	out, err := client.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String("backups")})
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchUpload" {
		return nil // gofakes3's answer for a bucket without uploads
	}
	require.NoError(t, err)
	return out.Uploads
}

// TestS3 checks the prefix split, a multipart round trip and abort against
// an S3 server.
func TestS3(t *testing.T) {
	backend, storeURL := fakeS3(t)
	ctx := context.Background()
	s, err := Open(ctx, storeURL("backups/prod/etcd"), Options{})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Check(ctx))

	// Larger than the 16 MiB threshold of a multipart upload.
	payload := randomBytes(20<<20, 11)
	snap := writeObject(t, s, catalog.Snapshot{Kind: catalog.KindFull, Revision: 77, Time: testTime}, payload)
	assert.Equal(t, []string{"prod/etcd/" + snap.Key}, objectKeys(t, backend))

	// Objects outside the prefix are not listed.
	other, err := Open(ctx, storeURL("backups/other/"), Options{})
	require.NoError(t, err)
	defer other.Close()
	writeObject(t, other, catalog.Snapshot{Kind: catalog.KindFull, Revision: 78, Time: testTime}, []byte("other"))

	listed, err := s.List(ctx, catalog.KindFull)
	require.NoError(t, err)
	require.Len(t, listed, 1)
	assert.Equal(t, snap, listed[0])

	back, err := readObject(s, snap)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(payload, back))

	// An aborted multipart upload leaves nothing behind.
	w, err := s.Create(ctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 78, Revision: 90, Time: testTime})
	require.NoError(t, err)
	_, err = io.Copy(w, bytes.NewReader(randomBytes(20<<20, 12)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(openUploads(t, s)) == 1 }, 10*time.Second, 10*time.Millisecond, "the upload is multipart")
	require.NoError(t, w.Abort())
	assert.Empty(t, openUploads(t, s), "multipart uploads left open")
	deltas, err := s.List(ctx, catalog.KindDelta)
	require.NoError(t, err)
	assert.Empty(t, deltas)

	// So does a cancelled one.
	cctx, cancel := context.WithCancel(ctx)
	w, err = s.Create(cctx, catalog.Snapshot{Kind: catalog.KindDelta, From: 78, Revision: 91, Time: testTime})
	require.NoError(t, err)
	_, err = io.Copy(w, bytes.NewReader(randomBytes(20<<20, 13)))
	require.NoError(t, err)
	cancel()
	_, err = w.Commit()
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, w.Abort())

	assert.Empty(t, openUploads(t, s), "multipart uploads left open")

	assert.ElementsMatch(t, []string{"prod/etcd/" + snap.Key, "other/" + catalog.FullName(78, testTime, false)}, objectKeys(t, backend))

	require.NoError(t, s.Delete(ctx, snap))
	assert.Equal(t, []string{"other/" + catalog.FullName(78, testTime, false)}, objectKeys(t, backend))
}

func TestS3MissingBucket(t *testing.T) {
	_, storeURL := fakeS3(t)
	s, err := Open(context.Background(), storeURL("nosuchbucket/x"), Options{})
	require.NoError(t, err, "Open does no I/O")
	defer s.Close()
	err = s.Check(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNoStore, "a missing bucket is no such store, not a failure to reach it")
	assert.Contains(t, err.Error(), "does not exist")
}
