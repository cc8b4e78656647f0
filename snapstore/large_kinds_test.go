//go:build !soak

package snapstore

// largeUploadKinds are the store kinds that `make test` uploads 1 GiB to; the
// soak build (`make soak`) uploads to all of them. Measured here: file 4 s,
// MinIO 4 s, Azurite 11 s, fake-gcs-server 39 s (it appends every chunk of a
// resumable upload in memory).
var largeUploadKinds = []string{"file", "s3"}
