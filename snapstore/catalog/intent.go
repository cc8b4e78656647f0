package catalog

import (
	"fmt"
	"time"
)

// A whole-cluster restore is an intent a person records in the store (etcdbr cluster
// restore): the one place every member of the cluster reaches when etcd itself has no
// quorum. Every member's etcdbr reads it, stops etcd, restores the intent's point with the
// intent's cluster token, and starts as a member of the restored cluster; each says how
// far it got in a progress record of its own. The records are plain values here; the store
// reads and writes them (snapstore), the members decide what to do with them (supervisor).

// DefaultIntentDeadline is how long a cluster restore may take before it is abandoned when
// the person gave no deadline.
const DefaultIntentDeadline = 30 * time.Minute

// Intent is a whole-cluster restore: what every member restores, with which new cluster
// token, until when.
//
// Lifecycle: created once by etcdbr cluster restore (or the API) with an exclusive create,
// never changed afterwards; it is the active intent until it ends (IntentEnd, written by
// a member that saw every member serve and a fresh full snapshot, or by anyone once the
// deadline passed), after which it stays in the store as the record of what happened.
type Intent struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// ID names the intent: the time it was created and a random suffix, so that IDs sort
	// by creation.
	ID string `json:"id"`
	// Created is when it was recorded, Deadline when it is abandoned if it has not ended.
	Created  time.Time `json:"created"`
	Deadline time.Time `json:"deadline"`
	// Asked is the target as the person gave it ("the latest point", "revision N", "time T").
	Asked string `json:"asked"`
	// Revision is the revision every member restores: the target resolved against the store
	// when the intent was recorded, so that every member restores exactly the same point
	// whatever is uploaded afterwards.
	Revision int64 `json:"revision,omitempty"`
	// Time, for a time target, is the time every member restores to (the last revision
	// observed at or before it; Revision is then 0): the deltas that hold that moment are in
	// the store already, so every member reaches the same revision.
	Time time.Time `json:"time,omitzero"`
	// Served bounds the revisions the old cluster may have served (the store's newest when
	// the intent was recorded plus the unbacked bound): every member raises the restored
	// revision past it by the same RevisionBump, marked compacted, so that all of them
	// hold the same revision and every watcher of the old cluster is told to list again.
	Served int64 `json:"served"`
	// Token is the new cluster token: the restored cluster has a new cluster ID, so that no
	// member of the old one can take part in it.
	Token string `json:"token"`
	// OldCluster is the cluster the store recorded when the intent was recorded ("" none).
	OldCluster string `json:"old_cluster,omitempty"`
	// By says who recorded it (host and process, or the API and its client).
	By string `json:"by,omitempty"`
	// FrozenRevision is the old cluster's revision when it was frozen before the intent was
	// recorded (0: it was not: the members freeze it when they see the intent): no write was
	// accepted after it.
	FrozenRevision int64 `json:"frozen_revision,omitempty"`
}

// Target is the point every member restores.
func (i Intent) Target() Target { return Target{Revision: i.Revision, Time: i.Time} }

// Expired reports whether the deadline passed at now.
func (i Intent) Expired(now time.Time) bool { return !now.Before(i.Deadline) }

// Check reports what makes the intent unusable (nil: nothing).
func (i Intent) Check() error {
	switch {
	case i.Version != 1:
		return fmt.Errorf("cluster restore intent %q: version %d: this etcdbr reads version 1", i.ID, i.Version)
	case i.ID == "":
		return fmt.Errorf("cluster restore intent: no ID")
	case i.Revision < 1 && i.Time.IsZero(), i.Revision > 0 && !i.Time.IsZero():
		return fmt.Errorf("cluster restore intent %q: give a revision (%d) or a time (%v)", i.ID, i.Revision, i.Time)
	case i.Token == "":
		return fmt.Errorf("cluster restore intent %q: no cluster token", i.ID)
	case i.Deadline.IsZero():
		return fmt.Errorf("cluster restore intent %q: no deadline", i.ID)
	}
	return nil
}

func (i Intent) String() string {
	return fmt.Sprintf("cluster restore %s (%s, token %s)", i.ID, i.Target(), i.Token)
}

// MemberPhase is how far one member got with an intent.
type MemberPhase string

// The phases a member goes through, in order.
const (
	// PhaseSeen: the member saw the intent and stops serving clients.
	PhaseSeen MemberPhase = "seen"
	// PhaseRestoring: etcd is stopped; the member rebuilds its data dir.
	PhaseRestoring MemberPhase = "restoring"
	// PhaseRestored: the data dir holds the intent's point; etcd starts and waits for its
	// peers.
	PhaseRestored MemberPhase = "restored"
	// PhaseServing: etcd serves the restored data as a member of the restored cluster.
	PhaseServing MemberPhase = "serving"
	// PhaseFailed: the member could not restore (Error says why); it tries again.
	PhaseFailed MemberPhase = "failed"
)

// MemberProgress is one member's progress with an intent.
//
// Lifecycle: written only by that member's etcdbr (one object per member, so that members
// never overwrite each other), again at every phase; it stays with the intent.
type MemberProgress struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// Member is etcd's --name of the member.
	Member string      `json:"member"`
	Phase  MemberPhase `json:"phase"`
	// Updated is when it was written.
	Updated time.Time `json:"updated"`
	// StoppedRevision is the old etcd's revision when it stopped (0: it did not run).
	StoppedRevision int64 `json:"stopped_revision,omitempty"`
	// DataRevision is the restored data dir's revision (after the bump), Cluster the
	// restored cluster's ID.
	DataRevision int64  `json:"data_revision,omitempty"`
	Cluster      string `json:"cluster,omitempty"`
	// MovedAside is where the member's old data dir was kept.
	MovedAside string `json:"moved_aside,omitempty"`
	// InitialCluster is the member's configured membership (etcd's --initial-cluster).
	InitialCluster string `json:"initial_cluster,omitempty"`
	// FrozenRevision is the old cluster's revision when this member froze it (no write is
	// accepted after it), Frozen when (0 and zero: this member did not freeze it).
	FrozenRevision int64     `json:"frozen_revision,omitempty"`
	Frozen         time.Time `json:"frozen,omitzero"`
	// Error is why the last attempt failed.
	Error string `json:"error,omitempty"`
}

// IntentOutcome is how an intent ended.
type IntentOutcome string

// How an intent ends.
const (
	// OutcomeDone: every member serves the restored data and a full snapshot of it is in
	// the store.
	OutcomeDone IntentOutcome = "done"
	// OutcomeAbandoned: the deadline passed first.
	OutcomeAbandoned IntentOutcome = "abandoned"
)

// IntentEnd records that an intent ended.
//
// Lifecycle: written once per intent (a second write by another member says the same);
// after it, the intent is no longer active and a new one may be recorded.
type IntentEnd struct {
	// Version is the format's version (1).
	Version int           `json:"version"`
	ID      string        `json:"id"`
	Outcome IntentOutcome `json:"outcome"`
	Ended   time.Time     `json:"ended"`
	// Reason says why it ended so.
	Reason string `json:"reason,omitempty"`
	// Full is the full snapshot of the restored cluster that ended it (OutcomeDone).
	Full string `json:"full,omitempty"`
}

// FreezeNotice says that a command is freezing a cluster (the alarm that makes every member
// refuse writes) before it records a cluster restore intent: no member lifts a freeze it
// finds with no active intent before Until (clusterrestore.DecideThaw).
type FreezeNotice struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// Created is when the command began to freeze; Until when the notice stops holding the
	// freeze (the command records its intent or lifts the freeze before).
	Created time.Time `json:"created"`
	Until   time.Time `json:"until"`
	// By says who froze (host and process, or the API and its client).
	By string `json:"by,omitempty"`
}
