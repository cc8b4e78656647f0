package supervisor

import (
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Status is what GET /v1/status answers: where the member is and how its backups are.
type Status struct {
	State State      `json:"state"`
	Since time.Time  `json:"since"` // when the state began
	PID   int        `json:"pid"`
	Etcd  EtcdStatus `json:"etcd"`
	// Validation is what the data dir check at start found.
	Validation ValidationStatus `json:"validation"`
	Backups    BackupStatus     `json:"backups"`
	// Restore is the restore while running that runs, or the last one; absent before the
	// first.
	Restore   *RestoreStatus `json:"restore,omitempty"`
	LastError *ErrorStatus   `json:"last_error,omitempty"`
	Ready     []Check        `json:"ready"`
}

// EtcdStatus describes the etcd member.
type EtcdStatus struct {
	Name      string `json:"name"`
	MemberID  string `json:"member_id,omitempty"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Revision is the current revision (the last known while etcd is stopped).
	Revision int64    `json:"revision"`
	Leader   string   `json:"leader,omitempty"`
	IsLeader bool     `json:"is_leader"`
	Members  int      `json:"members"` // in the initial cluster configuration
	Alarms   []string `json:"alarms,omitempty"`
}

// BackupStatus describes the backups.
type BackupStatus struct {
	Store string `json:"store"`
	// StoreReachable is what the last store operation said (nil before the first).
	StoreReachable *bool      `json:"store_reachable"`
	StoreCheckedAt *time.Time `json:"store_checked_at,omitempty"`
	StoreError     string     `json:"store_error,omitempty"`
	// StoreCluster is the etcd cluster the store belongs to, as last read (absent while it
	// records none, or before it was read).
	StoreCluster string `json:"store_cluster,omitempty"`
	// ClusterMismatch says why no backups are taken when the store belongs to another
	// cluster than this member's (absent otherwise).
	ClusterMismatch string `json:"cluster_mismatch,omitempty"`
	// NewestFull and NewestDelta are the newest objects of each kind in the store.
	NewestFull  *ObjectStatus `json:"newest_full,omitempty"`
	NewestDelta *ObjectStatus `json:"newest_delta,omitempty"`
	// BackedUpRevision is the newest revision in the store; LagRevisions how far etcd's
	// revision is ahead of it.
	BackedUpRevision int64 `json:"backed_up_revision"`
	LagRevisions     int64 `json:"lag_revisions"`
	// UnbackedSince is when the oldest write not in the store was made (absent when the
	// store holds etcd's revision); UnbackedAgeSeconds how long it has waited.
	UnbackedSince      *time.Time `json:"unbacked_since,omitempty"`
	UnbackedAgeSeconds float64    `json:"unbacked_age_seconds"`
	// DeltaBufferedBytes is the memory held by revisions waiting for their upload.
	DeltaBufferedBytes  int64   `json:"delta_buffered_bytes"`
	DeltaPeriodSeconds  float64 `json:"delta_period_seconds"` // 0: delta snapshots are disabled
	FullSchedule        string  `json:"full_schedule"`
	MaxBackupAgeSeconds float64 `json:"max_backup_age_seconds"`
}

// ObjectStatus describes a backup object.
type ObjectStatus struct {
	Kind       catalog.Kind `json:"kind"`
	Key        string       `json:"key"`
	From       int64        `json:"from,omitempty"` // a delta's first revision
	Revision   int64        `json:"revision"`
	Time       time.Time    `json:"time"`
	AgeSeconds float64      `json:"age_seconds,omitempty"`
	Size       int64        `json:"size"`
	Encrypted  bool         `json:"encrypted,omitempty"`
}

// objectStatus describes snap; the age is counted from now (zero now: no age).
func objectStatus(snap catalog.Snapshot, now time.Time) *ObjectStatus {
	o := &ObjectStatus{Kind: snap.Kind, Key: snap.Key, From: snap.From, Revision: snap.Revision, Time: snap.Time,
		Size: snap.Size, Encrypted: snap.Encrypted}
	if !now.IsZero() {
		o.AgeSeconds = now.Sub(snap.Time).Seconds()
	}
	return o
}

// ErrorStatus is the last error that etcdbr reported.
type ErrorStatus struct {
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Time      time.Time `json:"time"`
}

// ValidationStatus is what the data dir check at start found.
type ValidationStatus struct {
	Result          string  `json:"result,omitempty"` // valid, missing, corrupt
	Reason          string  `json:"reason,omitempty"`
	Revision        int64   `json:"revision,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
	// Shortfall is set when the restore at start could not reach the store's newest
	// revision because backup objects failed verification.
	Shortfall *ShortfallStatus `json:"shortfall,omitempty"`
}

// ShortfallStatus says what the restore at start could not reach.
type ShortfallStatus struct {
	// Revision is the revision restored, StoreRevision the store's newest; LostRevisions
	// the revisions after Revision that are lost.
	Revision      int64 `json:"revision"`
	StoreRevision int64 `json:"store_revision"`
	LostRevisions int64 `json:"lost_revisions"`
	// Damaged are the objects that failed verification (still in the store: look at them
	// with etcdbr verify, and replace them from a copy if there is one).
	Damaged []string `json:"damaged"`
	// DataRevision is the restored data dir's revision (a new history); the backup
	// readiness check fails until a full snapshot at or after it is in the store.
	DataRevision int64 `json:"data_revision"`
}

// Status returns the supervisor's status now.
func (s *Supervisor) Status() Status {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.viewLocked()
	h := v.health
	st := Status{
		State:      v.state,
		Since:      v.since.UTC(),
		PID:        s.pid,
		Validation: v.validation,
		LastError:  v.lastErr,
		Etcd: EtcdStatus{
			Name:     s.cfg.Etcd.Name,
			Revision: h.revision,
			Members:  s.members,
			Alarms:   h.alarms,
		},
		Ready:   []Check{etcdCheck(v), backupCheck(v, now, s.cfg.MaxBackupAge)},
		Restore: v.restore,
	}
	if v.etcd != nil {
		srv := v.etcd.Server()
		st.Etcd.MemberID = srv.MemberID().String()
		st.Etcd.ClusterID = srv.Cluster().ID().String()
		st.Etcd.Revision = srv.KV().Rev()
		if lead := srv.Leader(); lead != 0 {
			st.Etcd.Leader = lead.String()
		}
		st.Etcd.IsLeader = srv.Leader() == srv.MemberID()
	}
	b := &st.Backups
	b.Store = s.cfg.Store.URL()
	if h.store.known {
		reachable, at := h.store.reachable, h.store.at
		b.StoreReachable, b.StoreCheckedAt, b.StoreError = &reachable, &at, h.store.err
	}
	b.StoreCluster, b.ClusterMismatch = v.storeCluster, v.mismatch
	if f, ok := h.newest[catalog.KindFull]; ok {
		b.NewestFull = objectStatus(f, now)
	}
	if d, ok := h.newest[catalog.KindDelta]; ok {
		b.NewestDelta = objectStatus(d, now)
	}
	b.BackedUpRevision = h.backedUp
	b.LagRevisions = max(0, st.Etcd.Revision-b.BackedUpRevision)
	if !h.unbacked.IsZero() {
		since := h.unbacked.UTC()
		b.UnbackedSince, b.UnbackedAgeSeconds = &since, now.Sub(h.unbacked).Seconds()
	}
	b.DeltaBufferedBytes = h.delta.Buffered
	b.DeltaPeriodSeconds = s.cfg.DeltaPeriod.Seconds()
	b.FullSchedule = s.cfg.Schedule.String()
	b.MaxBackupAgeSeconds = s.cfg.MaxBackupAge.Seconds()
	return st
}

// liveness returns the state and the process ID, for GET /healthz.
func (s *Supervisor) liveness() (State, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.pid
}
