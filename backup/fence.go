package backup

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrFenced is wrapped by the error of an upload (or a garbage collection) that its Fence
// refused: this member lost the right to write to the store. Nothing of the upload became
// visible, and it is not retried: whoever holds the right now continues from the store.
var ErrFenced = errors.New("fenced: this member no longer holds the right to write to the store")

// Fence proves, just before a backup object becomes visible in the store
// (snapstore.Writer.CommitFenced) and before garbage collection deletes, that this member
// still holds the right to write to the store (in a cluster: it still leads in the raft term
// its backups began in, proven by a read etcd linearizes: supervisor). It returns nil when
// it does; an error wrapping ErrFenced when it lost the right for good; any other error
// when the right could not be proven now (etcd slow, the read timed out): the upload fails
// and is retried, and the retry is fenced again. A nil Fence lets every upload through (a
// single uploader: the sidecar).
type Fence func(ctx context.Context) error

// DeltaCommitWindow is how long after its Fence was called a delta may still become
// visible: past it, the commit is cancelled (snapstore.ErrCommitLate) and the delta is
// uploaded again later, fenced again. Whoever takes the chain over waits as long before it
// reads where the store's chain ends (supervisor's deltasWhileLeader), so that a delta of
// the previous leader, fenced before the new leader was elected, can no longer land after
// that reading and overlap the new leader's first delta.
const DeltaCommitWindow = 10 * time.Second

// check is f as a snapstore commit check: nil for no fence; an error that does not wrap
// ErrFenced (the right was not proven) is classified ReasonEtcd.
func (f Fence) check() func(context.Context) error {
	if f == nil {
		return nil
	}
	return func(ctx context.Context) error {
		err := f(ctx)
		if err == nil || errors.Is(err, ErrFenced) {
			return err
		}
		return classify(ReasonEtcd, fmt.Errorf("the right to upload was not proven: %w", err))
	}
}
