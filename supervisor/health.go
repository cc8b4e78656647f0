package supervisor

import (
	"maps"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// health is what etcdbr knows of etcd and of the backups while it runs, besides the
// lifecycle's state: etcd's revision and alarms as last sampled, the newest objects in the
// store, the delta taker's position, what the last store operation said, and since when the
// oldest write not in the store has waited. The observer (the runners' backup.Observer), the
// store prober, the claims, the listings and the monitor's samples write it; the status, the
// readiness checks and the metrics read it (view).
//
// New creates it; it lives as long as the Supervisor, with nothing to start or stop (the
// monitor and the prober that feed it are Run's goroutines).
type health struct {
	// metrics are the gauges health keeps up to date with what it records. Set by
	// newHealth, read-only after.
	metrics *metrics

	// mu guards the fields below. When both are held, the Supervisor's mutex is taken
	// first; nothing else is locked while mu is held.
	mu       sync.Mutex
	revision int64    // etcd's revision, last known
	alarms   []string // etcd's alarms, as last sampled (alarmNames)
	newest   map[catalog.Kind]catalog.Snapshot
	delta    backup.DeltaProgress
	store    storeHealth
	// upload is why the last upload failed, "" once one succeeded after it: the store may
	// answer the prober's listings while it refuses every upload.
	upload   string
	clock    revisionClock // when etcd's revisions were first seen
	unbacked time.Time     // when the oldest write not in the store was made (zero: none)
	// damaged are the store's damage records that apply, as last read (Store.DamageRecords).
	damaged []catalog.Damage
}

// newHealth returns an empty health that keeps m up to date.
func newHealth(m *metrics) *health {
	return &health{metrics: m, newest: map[catalog.Kind]catalog.Snapshot{}}
}

// storeHealth is what the last store operation said about the store.
type storeHealth struct {
	known     bool
	reachable bool
	at        time.Time
	err       string
}

// healthView is a copy of health at one moment, for the status and the readiness checks.
type healthView struct {
	revision int64
	alarms   []string
	newest   map[catalog.Kind]catalog.Snapshot
	delta    backup.DeltaProgress
	store    storeHealth
	upload   string // why the last upload failed, "" when one succeeded since
	unbacked time.Time
	backedUp int64 // the newest revision known to be in the store
	damaged  []catalog.Damage
}

// view copies h.
func (h *health) view() healthView {
	h.mu.Lock()
	defer h.mu.Unlock()
	return healthView{revision: h.revision, alarms: h.alarms, newest: maps.Clone(h.newest), delta: h.delta,
		store: h.store, upload: h.upload, unbacked: h.unbacked, backedUp: h.backedUpLocked(), damaged: h.damaged}
}

// noteDamaged records the store's damage records that apply, and returns the keys of those
// that were not recorded before.
func (h *health) noteDamaged(ds []catalog.Damage) (added []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range ds {
		if !slices.ContainsFunc(h.damaged, func(o catalog.Damage) bool { return o.Key == d.Key }) {
			added = append(added, d.Key)
		}
	}
	h.damaged = ds
	h.metrics.storeDamaged.Set(float64(len(ds)))
	return added
}

// noteNewest records snap as the newest of its kind in the store, unless a newer one is
// known.
func (h *health) noteNewest(snap catalog.Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.newest[snap.Kind]; ok && cur.Revision > snap.Revision {
		return
	}
	h.newest[snap.Kind] = snap
	h.metrics.newest(snap)
}

// storeResult records the outcome of a store operation: err nil means it succeeded.
func (h *health) storeResult(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.store = storeHealth{known: true, reachable: err == nil, at: time.Now().UTC()}
	if err != nil {
		h.store.err = err.Error()
		h.metrics.storeReachable.Set(0)
	} else {
		h.metrics.storeReachable.Set(1)
	}
}

// uploadResult records the outcome of an upload (a full snapshot or a delta): err nil
// means it succeeded.
func (h *health) uploadResult(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.upload = ""
	if err != nil {
		h.upload = err.Error()
	}
}

// deltaProgress records the delta taker's position.
func (h *health) deltaProgress(p backup.DeltaProgress) {
	h.metrics.deltaBuffered.Set(float64(p.Buffered))
	h.mu.Lock()
	h.delta = p
	h.mu.Unlock()
}

// setRevision records etcd's revision (etcd stops: the last known).
func (h *health) setRevision(rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.revision = rev
}

// backedUpLocked is the newest revision known to be in the store. h.mu is held.
func (h *health) backedUpLocked() int64 {
	rev := h.delta.Stored
	for _, snap := range h.newest {
		rev = max(rev, snap.Revision)
	}
	return rev
}

// etcdSample is what the monitor read of a serving etcd.
type etcdSample struct {
	leader   bool // this member leads
	revision int64
	alarms   []*pb.AlarmMember
}

// sample records etcd's revision and alarms (s; nil while etcd does not serve) at now, and
// updates since when the oldest write not in the store has waited, and the metrics that
// depend on them.
func (h *health) sample(now time.Time, s *etcdSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	leader := true
	if s != nil {
		leader = s.leader
		h.revision = s.revision
		h.alarms = alarmNames(s.alarms)
		h.metrics.alarm.WithLabelValues("corrupt").Set(boolGauge(hasCorruptAlarm(s.alarms)))
		h.metrics.alarm.WithLabelValues("nospace").Set(boolGauge(hasAlarm(s.alarms, pb.AlarmType_NOSPACE)))
	}
	backedUp := h.backedUpLocked()
	if leader {
		h.clock.observe(h.revision, now)
		var exact time.Time
		if h.delta.Stored >= backedUp {
			// The revisions the taker holds are the first ones after the store's.
			exact = h.delta.Oldest
		}
		h.unbacked = h.clock.unbackedSince(backedUp, exact)
	} else {
		// The leader backs up; this member does not see its uploads.
		h.clock.reset()
		h.unbacked, backedUp = time.Time{}, h.revision
	}
	h.metrics.etcdRevision.Set(float64(h.revision))
	h.metrics.deltaLag.Set(float64(max(0, h.revision-backedUp)))
	age := 0.0
	if !h.unbacked.IsZero() {
		age = now.Sub(h.unbacked).Seconds()
	}
	h.metrics.unbackedAge.Set(age)
}
