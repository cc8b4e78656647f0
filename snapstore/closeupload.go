package snapstore

import (
	"fmt"

	"gocloud.dev/blob"
)

// closeUpload closes (commits, or after a cancellation discards) an upload.
//
// It contains a bug of gocloud v0.47.0's azureblob driver: its writer's
// Close panics with a nil pointer dereference whenever the upload failed,
// which is what every aborted or cancelled upload does (its upload goroutine
// sets the pipe reader to nil after the failure, and Close's deferred
// pr.Close() runs after waiting for that goroutine). Unchecked, that panic
// would bring down the whole process, etcd included, e.g. on SIGTERM during
// an upload. The panic happens on the caller's goroutine after the driver's
// upload goroutine has finished, so recovering it leaves nothing running; it
// does lose the driver's error, which the error returned here says.
func closeUpload(upload *blob.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the upload failed (the storage driver panicked while closing it, "+
				"which hides why; a retry or the logs of the store may tell): %v", r)
		}
	}()
	return upload.Close()
}
