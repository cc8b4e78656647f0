package supervisor

import (
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"

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
	// Cluster is etcd's cluster as this member sees it; absent while etcd is not running.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
	// ClusterRestore is the whole-cluster restore the store holds, with every member's
	// progress, as this member last read it (absent while none is active).
	ClusterRestore *ClusterRestoreStatus `json:"cluster_restore,omitempty"`
}

// ClusterRestoreStatus is a whole-cluster restore as this member last read it from the
// store (docs/cluster-restore.md).
type ClusterRestoreStatus struct {
	Intent catalog.Intent `json:"intent"`
	// Members is every member's progress (those that have not seen it yet are absent).
	Members []catalog.MemberProgress `json:"members"`
	// Action is what this member does about it now, and why.
	Action string `json:"action"`
	Reason string `json:"reason"`
	// ReadAt is when the store was read; Error why the last read failed.
	ReadAt time.Time `json:"read_at"`
	Error  string    `json:"error,omitempty"`
}

// EtcdStatus describes the etcd member.
type EtcdStatus struct {
	Name      string `json:"name"`
	MemberID  string `json:"member_id,omitempty"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Revision is the current revision (the last known while etcd is stopped).
	Revision int64  `json:"revision"`
	Leader   string `json:"leader,omitempty"`
	IsLeader bool   `json:"is_leader"`
	// Role is this member's role in etcd's membership: voter or learner (absent while etcd
	// is not running).
	Role string `json:"role,omitempty"`
	// InitialClusterSize is the number of members in the initial cluster configuration
	// (--initial-cluster); Cluster.Size is the membership's now.
	InitialClusterSize int      `json:"initial_cluster_size"`
	Alarms             []string `json:"alarms,omitempty"`
}

// ClusterStatus is etcd's cluster as this member sees it: its membership, each member's role
// and health, and whether the cluster has quorum (docs/api.md, "The cluster").
type ClusterStatus struct {
	// Size is the number of members in etcd's membership, voters and learners; Voters and
	// Learners count them by role.
	Size     int `json:"size"`
	Voters   int `json:"voters"`
	Learners int `json:"learners"`
	// Quorum says whether the cluster has quorum as this member sees it (absent before the
	// first probe since etcd started), QuorumSince since when that holds, QuorumMessage
	// why.
	Quorum        *bool      `json:"quorum,omitempty"`
	QuorumSince   *time.Time `json:"quorum_since,omitempty"`
	QuorumMessage string     `json:"quorum_message,omitempty"`
	// QuorumRepair, while the cluster has no quorum, is the command that restores the whole
	// cluster from the store if the members that do not answer will not come back.
	QuorumRepair string `json:"quorum_repair,omitempty"`
	// Answering is how many members answered the last probe, this member included;
	// ProbedAt when it ended (absent before the first).
	Answering int        `json:"answering"`
	ProbedAt  *time.Time `json:"probed_at,omitempty"`
	// Members are the members by name (those that never started last).
	Members []ClusterMember `json:"members"`
}

// ClusterMember is one member of the cluster, as this member's last probe found it.
type ClusterMember struct {
	ID string `json:"id"`
	// Name is absent until the member's etcd started once.
	Name       string   `json:"name,omitempty"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls,omitempty"`
	Role       string   `json:"role"` // voter or learner
	IsLeader   bool     `json:"is_leader"`
	Self       bool     `json:"self"` // this member
	// LearnerSince is since when it has been a learner, as this member saw it (learners
	// only).
	LearnerSince *time.Time `json:"learner_since,omitempty"`
	// Health is healthy, behind, no_leader, unreachable, unstarted or unknown; Error says
	// why it did not answer, or the error it answered.
	Health string `json:"health"`
	Error  string `json:"error,omitempty"`
	// AppliedIndex is the newest raft entry it applied; LagEntries how many entries that
	// trails the leader's committed index (both absent when unknown).
	AppliedIndex uint64  `json:"applied_index,omitempty"`
	LagEntries   *uint64 `json:"lag_entries,omitempty"`
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
	// TakenBy, on a member that serves and does not lead, names the leader ("m1 (ID ...)"),
	// which takes the cluster's backups: this member does not see its uploads, so its RPO and
	// lag are the leader's status to tell (LagRevisions is 0), and BackedUpRevision is the
	// store's newest as this member last learnt it (absent on the leader, and while etcd does
	// not serve or knows no leader).
	TakenBy string `json:"taken_by,omitempty"`
	// UnbackedSince is when the oldest write not in the store was made (absent when the
	// store holds etcd's revision); UnbackedAgeSeconds how long it has waited.
	UnbackedSince      *time.Time `json:"unbacked_since,omitempty"`
	UnbackedAgeSeconds float64    `json:"unbacked_age_seconds"`
	// Damaged are the backup objects the store records as damaged, as last read (about once
	// a minute): every restore leaves them out, and garbage collection keeps them, until a
	// person replaces them from a copy or removes their records (absent: none).
	Damaged []damageStatus `json:"damaged,omitempty"`
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
			Name:               s.cfg.Etcd.Name,
			Revision:           h.revision,
			InitialClusterSize: s.members,
			Alarms:             h.alarms,
		},
		Ready:   readiness(v, now, s.cfg.MaxBackupAge),
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
		st.Etcd.Role = RoleVoter
		if srv.IsLearner() {
			st.Etcd.Role = RoleLearner
		}
		st.Cluster = clusterStatus(v, srv.Cluster().Members(), srv.MemberID(), srv.Leader(), st.Ready)
	}
	if in := s.intents; in.intent != nil {
		st.ClusterRestore = &ClusterRestoreStatus{Intent: *in.intent, Members: in.progress, Action: in.action.Kind.String(),
			Reason: in.action.Reason, ReadAt: in.read.UTC(), Error: in.err}
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
	if st.Etcd.Leader != "" && !st.Etcd.IsLeader {
		b.TakenBy, b.LagRevisions = leaderName(st), 0
	}
	if !h.unbacked.IsZero() {
		since := h.unbacked.UTC()
		b.UnbackedSince, b.UnbackedAgeSeconds = &since, now.Sub(h.unbacked).Seconds()
	}
	for _, d := range h.damaged {
		b.Damaged = append(b.Damaged, damageStatus{Key: d.Key, Found: d.Found, By: d.By, Reason: d.Reason})
	}
	b.DeltaBufferedBytes = h.delta.Buffered
	b.DeltaPeriodSeconds = s.cfg.DeltaPeriod.Seconds()
	b.FullSchedule = s.cfg.Schedule.String()
	b.MaxBackupAgeSeconds = s.cfg.MaxBackupAge.Seconds()
	return st
}

// leaderName is the leader etcd names in st, with its name when the cluster's members give
// it: "m1 (ID 8e9e05c52164694d)", or its ID alone.
func leaderName(st Status) string {
	if st.Cluster != nil {
		for _, m := range st.Cluster.Members {
			if m.ID == st.Etcd.Leader && m.Name != "" {
				return m.Name + " (ID " + m.ID + ")"
			}
		}
	}
	return "ID " + st.Etcd.Leader
}

// clusterStatus describes the cluster of v's etcd: the membership of the last probe (members,
// this member self and the leader as etcd says now before the first), with the health it
// found; ready are the readiness checks of v.
func clusterStatus(v memberView, members []*membership.Member, self, leader types.ID, ready []Check) *ClusterStatus {
	p := v.cluster.probe
	if p != nil {
		members, leader = p.members, p.leader
	}
	cs := &ClusterStatus{Size: len(members), Members: []ClusterMember{}}
	selfCaughtUp := false
	for _, c := range ready {
		if c.Name == checkVoter {
			selfCaughtUp = c.OK
		}
	}
	for _, m := range sortedMembers(members) {
		cm := ClusterMember{ID: m.ID.String(), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Role: roleOf(m),
			IsLeader: leader != 0 && m.ID == leader, Self: m.ID == self, Health: MemberUnknown}
		if m.IsLearner {
			cs.Learners++
			if since, ok := v.cluster.learners[m.ID]; ok {
				since = since.UTC()
				cm.LearnerSince = &since
			}
		} else {
			cs.Voters++
		}
		if p != nil {
			cm.Health = memberHealth(p, m, selfCaughtUp)
			st := p.status[m.ID]
			cm.Error = st.err
			if st.known() {
				cm.AppliedIndex = st.applied
			}
			if lag, ok := p.lag(m.ID); ok {
				cm.LagEntries = &lag
			}
		}
		cs.Members = append(cs.Members, cm)
	}
	if p != nil {
		q, since, at := v.cluster.quorum, v.cluster.quorumSince.UTC(), p.at.UTC()
		cs.Quorum, cs.QuorumSince, cs.ProbedAt, cs.QuorumMessage = &q, &since, &at, v.cluster.quorumWhy
		if !q {
			cs.QuorumRepair = v.repair
		}
		cs.Answering = len(p.answering())
	}
	return cs
}

// liveness returns the state and the process ID, for GET /healthz.
func (s *Supervisor) liveness() (State, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.pid
}
