//go:build soak

package snapstore

// largeUploadKinds are the store kinds that the soak build uploads 1 GiB to.
var largeUploadKinds = []string{"file", "s3", "gcs", "azure"}
