package supervisor

import (
	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// observer is the supervisor's backup.Observer: it keeps health, the metrics and the last
// error of the status.
type observer struct{ s *Supervisor }

// Taken records a snapshot that reached the store.
func (o observer) Taken(t backup.Taken) {
	o.s.metrics.taken(t)
	o.s.health.noteNewest(t.Snapshot)
	o.s.health.storeResult(nil)
	o.s.health.uploadResult(nil)
}

// Failed records a failed step of a taker.
func (o observer) Failed(f backup.Failure) {
	o.s.metrics.failed(f)
	if f.Reason == backup.ReasonStore {
		o.s.health.storeResult(f.Err)
		if f.Op == backup.OpSnapshot {
			o.s.health.uploadResult(f.Err)
		}
	}
	o.s.recordError(string(f.Kind)+" "+string(f.Op), f.Err)
}

// Fenced records an upload its fence refused (this member had stopped leading): no failure
// of the store's, nor an error of the member's.
func (o observer) Fenced(kind catalog.Kind, _ error) {
	o.s.metrics.fenced(kind)
}

// DeltaProgress records the delta taker's position.
func (o observer) DeltaProgress(p backup.DeltaProgress) {
	o.s.health.deltaProgress(p)
}
