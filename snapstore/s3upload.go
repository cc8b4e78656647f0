package snapstore

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3AbortTimeout bounds the AbortMultipartUpload request of a failed or
// cancelled S3 upload.
const s3AbortTimeout = 30 * time.Second

// configureS3Upload replaces the transfer manager of an S3 upload, when
// the upload is one, with one that is configured for etcdbr:
//
//   - a failed or cancelled upload aborts its multipart upload with a fresh
//     context (FailTimeout). The one gocloud configures sends
//     AbortMultipartUpload with the upload's own, cancelled, context, which
//     fails and leaves the uploaded parts stored (and billed) until a bucket
//     lifecycle rule removes them;
//   - uploads above one part become multipart at uploadPartSize instead of
//     16 MiB, which saves a 16 MiB buffer.
//
// The part size, concurrency and checksum settings are the ones gocloud
// would have used.
func configureS3Upload(client *s3.Client, as func(any) bool) {
	var tm *transfermanager.Client
	if client == nil || !as(&tm) {
		return
	}
	checksums := client.Options().RequestChecksumCalculation
	*tm = *transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = uploadPartSize
		o.Concurrency = uploadConcurrency
		o.MultipartUploadThreshold = uploadPartSize
		o.RequestChecksumCalculation = checksums
		o.FailTimeout = s3AbortTimeout
	})
}
