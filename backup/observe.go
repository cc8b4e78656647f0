package backup

import (
	"errors"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Observer is told what the full snapshot runner and the delta taker do, for metrics and
// status. Its methods are called from the takers' goroutines, so they must be safe for
// concurrent use and must not block.
type Observer interface {
	// Taken reports an object that reached the store.
	Taken(t Taken)
	// Failed reports a step that failed; the taker retries it.
	Failed(f Failure)
	// DeltaProgress reports where the delta taker is: called whenever it received revisions
	// from the watch or an upload reached the store.
	DeltaProgress(p DeltaProgress)
	// Fenced reports an upload of kind that its Fence refused (err wraps ErrFenced): nothing
	// of it became visible, and it is not retried.
	Fenced(kind catalog.Kind, err error)
}

// Taken is a full snapshot or a delta that reached the store.
type Taken struct {
	Snapshot catalog.Snapshot
	Duration time.Duration
	// Trigger is what caused a full snapshot: "startup", "schedule", "request" (TakeNow),
	// or what the caller of Observer.Taken says (the supervisor: "restore"); "" for deltas.
	Trigger string
	// Revisions and Events count a delta's content (0 for a full snapshot).
	Revisions, Events int
}

// Op names the kind of step that failed.
type Op string

// The steps a Failure reports.
const (
	// OpSnapshot is taking a full snapshot or uploading a delta.
	OpSnapshot Op = "snapshot"
	// OpList is listing the store (to learn whether a full snapshot is due, or where the
	// delta chain continues).
	OpList Op = "list"
)

// Reason classifies why a step failed. The set is small and fixed, so that it can label
// metrics.
type Reason string

// The failure reasons.
const (
	// ReasonStore: the store failed (unreachable, refused, an upload cut off).
	ReasonStore Reason = "store"
	// ReasonEtcd: etcd failed (reading the snapshot or the revision, a lease lookup).
	ReasonEtcd Reason = "etcd"
	// ReasonOther: anything else.
	ReasonOther Reason = "other"
)

// Reasons are all failure reasons.
var Reasons = []Reason{ReasonStore, ReasonEtcd, ReasonOther}

// Failure is a failed step of a taker.
type Failure struct {
	Kind   catalog.Kind // the kind of backup the step was for
	Op     Op
	Reason Reason
	Err    error
}

// DeltaProgress is the delta taker's position.
type DeltaProgress struct {
	// Stored is the newest revision known to be in the store.
	Stored int64
	// Last is the last revision received from the watch (uploaded, being uploaded or
	// held in memory).
	Last int64
	// Buffered is the memory held by revisions not yet in the store, in bytes.
	Buffered int64
	// Oldest is when the oldest revision not yet in the store was observed; zero when
	// every revision received is in the store.
	Oldest time.Time
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Taken(Taken)                 {}
func (nopObserver) Failed(Failure)              {}
func (nopObserver) DeltaProgress(DeltaProgress) {}
func (nopObserver) Fenced(catalog.Kind, error)  {}

// observerOr returns o, or an observer that does nothing when o is nil.
func observerOr(o Observer) Observer {
	if o == nil {
		return nopObserver{}
	}
	return o
}

// classified marks an error with the reason it happened; its message is the error's own.
type classified struct {
	reason Reason
	err    error
}

func (c *classified) Error() string { return c.err.Error() }
func (c *classified) Unwrap() error { return c.err }

// classify marks err (when not nil) as having happened for reason.
func classify(reason Reason, err error) error {
	if err == nil {
		return nil
	}
	return &classified{reason: reason, err: err}
}

// ReasonOf returns the reason the error of a backup step carries: the innermost
// classification wins, ReasonOther when there is none.
func ReasonOf(err error) Reason {
	var c *classified
	if !errors.As(err, &c) {
		return ReasonOther
	}
	for {
		var inner *classified
		if !errors.As(c.err, &inner) {
			return c.reason
		}
		c = inner
	}
}
