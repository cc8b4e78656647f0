// Package clusterrestore decides what one member does about a whole-cluster restore
// (catalog.Intent): a pure function over what the member knows (the active intent, what
// built its data dir, whether its etcd serves, every member's progress), with a table test.
// The supervisor gathers the facts from the store and the data dir and carries the action
// out; this package does no I/O.
package clusterrestore

import (
	"fmt"
	"slices"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Facts are what a member knows when it decides.
type Facts struct {
	// Intent is the active intent (nil: none).
	Intent *catalog.Intent
	// Now is the time of the decision.
	Now time.Time
	// DataIntent is the intent that built this member's data dir ("" none, or it could not
	// be read).
	DataIntent string
	// Serving reports that this member's etcd serves clients.
	Serving bool
	// Self is this member's name; Members are the names of the configured membership
	// (etcd's --initial-cluster), Self among them.
	Self    string
	Members []string
	// Progress is every member's progress with Intent, as read from the store (only
	// needed once this member serves the restored data).
	Progress []catalog.MemberProgress
	// NewestFull is the revision of the store's newest full snapshot (0: none).
	NewestFull int64
}

// Kind is what the member does.
type Kind int

const (
	// Nothing: no intent, or this member's part is done and the others' is not.
	Nothing Kind = iota
	// Restore: stop serving clients, stop etcd, restore the intent's point with its token,
	// and start as a member of the restored cluster.
	Restore
	// ReportServing: this member serves the restored data; it says so in its progress.
	ReportServing
	// Finish: every member serves the restored data and a full snapshot of it is in the
	// store; the intent is done.
	Finish
	// Abandon: the deadline passed before this member began; the intent ends abandoned and
	// this member goes on as it is.
	Abandon
)

func (k Kind) String() string {
	switch k {
	case Restore:
		return "restore"
	case ReportServing:
		return "report-serving"
	case Finish:
		return "finish"
	case Abandon:
		return "abandon"
	}
	return "nothing"
}

// Action is the decision, with the reason in words for the log and the status.
type Action struct {
	Kind   Kind
	Reason string
}

// Decide returns what the member does now. It is called again on every poll; every action
// is safe to repeat (a restore that was done is never done twice: DataIntent names it).
func Decide(f Facts) Action {
	in := f.Intent
	if in == nil {
		return Action{Nothing, "no cluster restore is active"}
	}
	if f.DataIntent != in.ID {
		if in.Expired(f.Now) {
			return Action{Abandon, fmt.Sprintf("%s passed its deadline %s before this member restored; "+
				"this member goes on with its data dir as it is", in, in.Deadline.UTC().Format(time.RFC3339))}
		}
		return Action{Restore, fmt.Sprintf("%s is active and this member's data dir is not its", in)}
	}
	if !f.Serving {
		return Action{Nothing, "this member's data dir is the restored one; its etcd starts and waits for its peers"}
	}
	own := progressOf(f.Progress, f.Self)
	if own == nil || own.Phase != catalog.PhaseServing {
		return Action{ReportServing, "this member serves the restored data"}
	}
	var waiting []string
	var dataRev int64
	for _, m := range f.Members {
		p := progressOf(f.Progress, m)
		if p == nil || p.Phase != catalog.PhaseServing {
			waiting = append(waiting, m)
			continue
		}
		dataRev = max(dataRev, p.DataRevision)
	}
	switch {
	case len(waiting) > 0:
		if in.Expired(f.Now) {
			return Action{Abandon, fmt.Sprintf("%s passed its deadline with members %v not serving the restored data; "+
				"each joins the restored cluster with no data when it comes back (its data dir of the old cluster kept aside)", in, waiting)}
		}
		return Action{Nothing, fmt.Sprintf("waiting for members %v to serve the restored data", waiting)}
	case f.NewestFull < dataRev:
		return Action{Nothing, fmt.Sprintf("every member serves; waiting for the full snapshot of the restored cluster (revision %d or later)", dataRev)}
	}
	return Action{Finish, "every member serves the restored data and the store holds a full snapshot of it"}
}

func progressOf(ps []catalog.MemberProgress, member string) *catalog.MemberProgress {
	i := slices.IndexFunc(ps, func(p catalog.MemberProgress) bool { return p.Member == member })
	if i < 0 {
		return nil
	}
	return &ps[i]
}

// AutoFacts are what a member knows when it decides whether to record a cluster restore by
// itself (--auto-restore-on-quorum-loss-after, never by default).
type AutoFacts struct {
	// After is the opt-in: how long the quorum must have been lost (0: never).
	After time.Duration
	// Now is the time of the decision.
	Now time.Time
	// Serving reports that this member's etcd runs (only a member whose etcd runs judges the
	// quorum); Quorum is its verdict, LostSince since when the quorum is lost.
	Serving   bool
	Quorum    bool
	LostSince time.Time
	// Active reports that an intent is active already.
	Active bool
	// StoreAtLoss is the store's newest revision when this member first saw the quorum lost,
	// StoreNow the newest now: a store that moved on means that a leader still uploads, so
	// that the quorum is alive elsewhere and this member is the one cut off.
	StoreAtLoss, StoreNow int64
}

// DecideAuto reports whether the member records a cluster restore of the store's newest
// point now, and why (or why not).
func DecideAuto(f AutoFacts) (bool, string) {
	switch {
	case f.After <= 0:
		return false, "automatic restore is off (--auto-restore-on-quorum-loss-after)"
	case f.Active:
		return false, "a cluster restore is active already"
	case !f.Serving || f.Quorum || f.LostSince.IsZero():
		return false, "the cluster has its quorum, as this member sees it (or it was not judged)"
	case f.StoreNow != f.StoreAtLoss:
		return false, fmt.Sprintf("the store's newest revision moved from %d to %d since the quorum was lost: a leader still backs up, "+
			"so the quorum lives on where this member cannot see it", f.StoreAtLoss, f.StoreNow)
	case f.Now.Sub(f.LostSince) < f.After:
		return false, fmt.Sprintf("the quorum is lost since %s; the cluster is restored automatically after %s",
			f.LostSince.UTC().Format(time.RFC3339), f.After)
	}
	return true, fmt.Sprintf("the quorum is lost since %s, longer than %s, and the store received nothing since",
		f.LostSince.UTC().Format(time.RFC3339), f.After)
}

// ThawFacts are what a serving member knows when it decides whether to lift the freeze of
// its cluster (the alarm that makes every member refuse writes during a cluster restore).
type ThawFacts struct {
	// Frozen reports that the member's cluster is frozen.
	Frozen bool
	// Intent is the active intent (nil: none); DataIntent the intent that built this
	// member's data dir.
	Intent     *catalog.Intent
	DataIntent string
	// Notice is the store's freeze notice (nil: none): a command freezing the cluster before
	// it records its intent.
	Notice *catalog.FreezeNotice
	// Now is the time of the decision.
	Now time.Time
}

// DecideThaw reports whether the member lifts the freeze now, and why. The freeze belongs to
// the old cluster while an intent is active, or while a command that froze it records its
// intent: a restored cluster is never frozen, and a freeze without either is lifted (one left
// by an intent that ended without restoring the cluster, by a restore of this member that
// was cut short, or by a command that was killed).
func DecideThaw(f ThawFacts) (bool, string) {
	switch {
	case !f.Frozen:
		return false, "the cluster is not frozen"
	case f.Intent != nil && f.DataIntent == f.Intent.ID:
		return true, "a restored cluster is never frozen"
	case f.Intent != nil:
		return false, fmt.Sprintf("%s is active: the old cluster stays frozen until its members restore", f.Intent)
	case f.Notice != nil && f.Now.Before(f.Notice.Until):
		return false, fmt.Sprintf("a command froze the cluster at %s to record a cluster restore (%s)",
			f.Notice.Created.UTC().Format(time.RFC3339), f.Notice.By)
	}
	return true, "frozen with no cluster restore active or being recorded"
}
