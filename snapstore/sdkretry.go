package snapstore

import (
	"time"

	"cloud.google.com/go/storage"
	gax "github.com/googleapis/gax-go/v2"
)

// SDK retry settings. An upload streams: it cannot start over, so each part
// (S3), chunk (GCS) or block (Azure) must survive a transient failure on its
// own. The SDKs retry 5xx answers, throttling, reset and refused
// connections and timeouts; these settings let them ride out about a
// minute of trouble (a server restarting, a load balancer failing over).
const (
	sdkAttempts       = 10
	sdkInitialBackoff = 500 * time.Millisecond
	sdkMaxBackoff     = 15 * time.Second
)

// configureRetries sets the retry policy of the provider's SDK client:
//
//   - S3: uploads go through a client of their own made by openS3, with
//     the standard retryer at sdkAttempts.
//   - GCS: every request of the bucket's client is retried, uploads
//     included (by default the client retries an upload only when it has a
//     precondition), up to sdkAttempts with exponential backoff. Retrying is
//     safe for what etcdbr does: uploads write whole objects under new
//     names, and a delete retried after it succeeded finds nothing, which
//     Delete accepts.
//   - Azure: the client made by openAzure retries up to sdkAttempts
//     (408, 429, 5xx, connection errors).
//   - file and mem: nothing to retry.
func configureRetries(s *Store, scheme string) {
	switch scheme {
	case "gs":
		var client *storage.Client
		if s.bucket.As(&client) {
			client.SetRetry(
				storage.WithPolicy(storage.RetryAlways),
				storage.WithMaxAttempts(sdkAttempts),
				storage.WithBackoff(gax.Backoff{Initial: sdkInitialBackoff, Max: sdkMaxBackoff, Multiplier: 2}),
			)
		}
	}
}
