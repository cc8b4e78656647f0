package snapstore

import (
	"time"

	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/internal/backoff"
)

// RetryPolicy is how the store retries a read that failed for a reason
// that may pass (a 5xx answer, a reset connection, a timeout): exponential
// backoff with full jitter, starting at Initial and capped at Max, for at
// most Attempts tries in a row that make no progress. Uploads are retried
// by the providers' SDKs, part by part, configured to a similar policy
// (see Open).
type RetryPolicy struct {
	Attempts     int
	Initial, Max time.Duration
}

// orDefault returns p, or, when p.Attempts is not positive, the default
// policy: up to 8 tries, from 0.5 s up to 15 s apart (about a minute).
func (p RetryPolicy) orDefault() RetryPolicy {
	if p.Attempts <= 0 {
		return RetryPolicy{Attempts: 8, Initial: 500 * time.Millisecond, Max: 15 * time.Second}
	}
	return p
}

// backoff returns the waits between the tries of one read: from Initial up to Max, with
// full jitter.
func (p RetryPolicy) backoff() backoff.Backoff {
	return backoff.Backoff{Min: p.Initial, Max: p.Max, Jitter: true}
}

// permanent reports whether an error of the store cannot pass by retrying:
// the object or bucket is missing, access is denied, the request is wrong.
func permanent(err error) bool {
	switch gcerrors.Code(err) {
	case gcerrors.NotFound, gcerrors.PermissionDenied, gcerrors.InvalidArgument,
		gcerrors.FailedPrecondition, gcerrors.Unimplemented, gcerrors.AlreadyExists,
		gcerrors.Canceled:
		return true
	}
	return false
}
