package supervisor

import (
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// observer is the supervisor's backup.Observer: it keeps the status and the metrics.
type observer struct{ s *Supervisor }

// Taken records a snapshot that reached the store.
func (o observer) Taken(t backup.Taken) {
	o.s.metrics.taken(t)
	o.s.noteNewest(t.Snapshot)
	o.s.storeResult(nil)
}

// Failed records a failed step of a taker.
func (o observer) Failed(f backup.Failure) {
	o.s.metrics.failed(f)
	if f.Reason == backup.ReasonStore {
		o.s.storeResult(f.Err)
	}
	o.s.recordError(string(f.Kind)+" "+string(f.Op), f.Err)
}

// DeltaProgress records the delta taker's position.
func (o observer) DeltaProgress(p backup.DeltaProgress) {
	o.s.metrics.deltaBuffered.Set(float64(p.Buffered))
	o.s.mu.Lock()
	o.s.delta = p
	o.s.mu.Unlock()
}

// noteNewest records snap as the newest of its kind in the store, unless a newer one is
// known.
func (s *Supervisor) noteNewest(snap catalog.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.newest[snap.Kind]; ok && cur.Revision > snap.Revision {
		return
	}
	s.newest[snap.Kind] = snap
	s.metrics.newest(snap)
}

// storeHealth is what the last store operation said about the store.
type storeHealth struct {
	known     bool
	reachable bool
	at        time.Time
	err       string
}

// storeResult records the outcome of a store operation: err nil means it succeeded.
func (s *Supervisor) storeResult(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.store = storeHealth{known: true, reachable: err == nil, at: time.Now().UTC()}
	if err != nil {
		s.store.err = err.Error()
		s.metrics.storeReachable.Set(0)
	} else {
		s.metrics.storeReachable.Set(1)
	}
}

// backedUpLocked is the newest revision known to be in the store. s.mu is held.
func (s *Supervisor) backedUpLocked() int64 {
	rev := s.delta.Stored
	for _, snap := range s.newest {
		rev = max(rev, snap.Revision)
	}
	return rev
}
