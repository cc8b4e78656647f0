package supervisor

import (
	"fmt"

	"github.com/etcdbr/etcdbr/embedded/datadir"
)

// Decision is what etcdbr does with the data dir at start.
type Decision int

const (
	// DecideStop: do not start etcd; report the reason and exit with an error.
	// The data dir is left as it is.
	DecideStop Decision = iota
	// DecideKeep: start etcd on the data dir as it is.
	DecideKeep
	// DecideRestore: restore the newest point of the store (the data dir, if
	// any, is moved aside and kept), then start etcd.
	DecideRestore
	// DecideNewMember: start etcd as configured on no data: a new single-member
	// cluster.
	DecideNewMember
	// DecideJoin: a member of a cluster of several members whose data dir is missing or
	// corrupt: it joins its peers again through etcd's learner path (the corrupt dir moved
	// aside and kept), or founds the cluster with them when it does not exist yet;
	// membership.Join decides which, from what the peers and the store say.
	DecideJoin
)

// String returns "stop", "keep", "restore", "new-member" or "join".
func (d Decision) String() string {
	switch d {
	case DecideStop:
		return "stop"
	case DecideKeep:
		return "keep"
	case DecideRestore:
		return "restore"
	case DecideNewMember:
		return "new-member"
	case DecideJoin:
		return "join"
	}
	return fmt.Sprintf("Decision(%d)", int(d))
}

// StartFacts are what the start-up decision looks at.
type StartFacts struct {
	// Verdict is the validation of the data dir.
	Verdict datadir.Verdict
	// StoreNewest is the newest revision a restore from the store reaches; 0
	// when the store holds no full snapshot.
	StoreNewest int64
	// StoreCluster is the cluster ID the store records ("" for none yet), and
	// DirCluster the data dir's ("" when it has none or it could not be read).
	StoreCluster, DirCluster string
	// NewCluster is the cluster ID that a restore, or a new member, creates from
	// the etcd configuration (embedded.ClusterIDFor; "" when unknown).
	NewCluster string
	// Members is the size of the configured initial cluster (0 or 1: a single
	// member). A member of a larger cluster recovers from its peers, not from
	// the store.
	Members int
	// ForceRestore overrides the refusals of a data dir or a store of another
	// cluster (--force-restore): the store is restored, the data dir kept aside,
	// and the store then belongs to the cluster the restore created.
	ForceRestore bool
	// OwnerGone reports that the store's cluster stopped writing to the store
	// (DecideTakeover, asked only when takeoverApplies): this member, a new machine,
	// restores from the store although it creates another cluster (or starts a new
	// member on a store without backups), and the store then belongs to its cluster, as
	// with ForceRestore.
	OwnerGone bool
	// Owner says what is known of whether the store's cluster still writes to the store
	// (DecideTakeover's reason; "" when not asked): the reason of a takeover, or added to
	// a refusal.
	Owner string
}

// takeoverApplies reports whether the facts are a new machine's on the store of another
// cluster, the one case where the store's owner is asked whether it still writes to the
// store (DecideTakeover): a single member with a missing data dir, whose configuration
// creates another cluster than the store records, without ForceRestore.
func takeoverApplies(f StartFacts) bool {
	return f.Verdict.State == datadir.StateMissing && f.Members <= 1 && !f.ForceRestore &&
		f.StoreCluster != "" && f.NewCluster != "" && f.NewCluster != f.StoreCluster
}

// ownerGone is f.OwnerGone where it applies.
func (f StartFacts) ownerGone() bool { return f.OwnerGone && takeoverApplies(f) }

// DecideStart decides, from plain facts, what to do with the data dir at start,
// and says why (for the log). It does no I/O.
//
//   - unknown (could not tell): stop; a dir that could not be read is never
//     treated as corrupt;
//   - a data dir and a store of two different clusters: stop, unless
//     ForceRestore (then restore);
//   - valid: keep, unless a single member's dir is behind the store's newest
//     revision (data was lost locally): restore. A dir ahead of or equal to the
//     store is kept;
//   - corrupt: restore, or stop when the store has nothing to restore; a member of a
//     cluster of several members joins its peers again instead (DecideJoin);
//   - missing: restore from the store; a new member when the store is empty
//     (unless it belongs to another cluster than the configuration creates: stop,
//     or a new member with ForceRestore); a member of a cluster of several members
//     joins its peers, or founds the cluster with them (DecideJoin);
//   - a restore that creates another cluster than the store records (other peer
//     URLs or another token: NewCluster) is refused (stop) unless the data dir
//     belonged to the store's cluster (the same member, whose URLs or token
//     changed), a new machine's on a store whose cluster stopped writing to it
//     (OwnerGone: a single member with a missing data dir takes the store over) or
//     ForceRestore (CheckRestoreCluster); the store then follows the new cluster
//     (storeFollows).
func DecideStart(f StartFacts) (Decision, string) {
	d, reason := decideStart(f)
	if d != DecideRestore {
		return d, reason
	}
	follow, err := CheckRestoreCluster(f.restoreCluster())
	if err != nil {
		return DecideStop, fmt.Sprintf("refusing to restore (%s): %v", reason, err)
	}
	if follow {
		reason += fmt.Sprintf("; the restore creates cluster %s (other peer URLs or another token than those of cluster %s), "+
			"which the store then records instead of %s", f.NewCluster, f.StoreCluster, f.StoreCluster)
		if f.ownerGone() {
			reason += "; the store is taken over: " + f.Owner
		}
	}
	return d, reason
}

// restoreCluster is the RestoreCluster of a restore at start.
func (f StartFacts) restoreCluster() RestoreCluster {
	rc := RestoreCluster{Store: f.StoreCluster, New: f.NewCluster, Replaced: f.DirCluster, Force: f.ForceRestore, OwnerGone: f.ownerGone()}
	if takeoverApplies(f) {
		rc.Owner = f.Owner
	}
	return rc
}

// storeFollows reports whether, after decision d, the store's record is to move from
// f.StoreCluster to the cluster the restore or the new member creates.
func storeFollows(f StartFacts, d Decision) bool {
	if f.StoreCluster == "" || f.Members > 1 {
		return false
	}
	switch d {
	case DecideRestore:
		follow, err := CheckRestoreCluster(f.restoreCluster())
		return err == nil && follow
	case DecideNewMember:
		// Allowed by decideStart only for the store's own cluster, with ForceRestore, or
		// when the store's cluster stopped writing to it.
		return f.NewCluster != f.StoreCluster
	}
	return false
}

// decideStart is DecideStart without the check of the cluster a restore creates.
func decideStart(f StartFacts) (Decision, string) {
	v := f.Verdict
	multi := f.Members > 1
	switch v.State {
	case datadir.StateUnknown:
		return DecideStop, fmt.Sprintf("could not tell whether the data dir is valid (%s): it was left untouched; "+
			"fix the cause (permissions, a running etcd) and start again", v.Reason)
	case datadir.StateValid, datadir.StateCorrupt:
		if f.StoreCluster != "" && f.DirCluster != "" && f.StoreCluster != f.DirCluster && !multi {
			if !f.ForceRestore {
				return DecideStop, fmt.Sprintf("the data dir belongs to cluster %s but the store to cluster %s: "+
					"refusing to mix them; give this cluster its own store, or restore the store's cluster over the data dir with --force-restore (the data dir is kept aside)",
					f.DirCluster, f.StoreCluster)
			}
			if f.StoreNewest == 0 {
				return DecideStop, fmt.Sprintf("--force-restore: the store (cluster %s) has no full snapshot to restore", f.StoreCluster)
			}
			return DecideRestore, fmt.Sprintf("--force-restore: restoring the store's cluster %s over the data dir of cluster %s (revision %d in the store)",
				f.StoreCluster, f.DirCluster, f.StoreNewest)
		}
	}
	switch v.State {
	case datadir.StateValid:
		// After a crash the db lags its WAL, whose entries etcd applies at start:
		// MaxRevision bounds the revision it then serves. Restore only when the store is
		// past that bound, so that no write the WAL holds is thrown away.
		local := max(v.Revision, v.MaxRevision)
		if !multi && f.StoreNewest > local {
			return DecideRestore, fmt.Sprintf("the data dir is valid but at revision %d (at most %d once etcd replays its WAL), behind the store's newest revision %d: "+
				"data was lost locally; restoring the store's newest point", v.Revision, local, f.StoreNewest)
		}
		if f.StoreNewest > local {
			return DecideKeep, fmt.Sprintf("the data dir is valid at revision %d (at most %d once etcd replays its WAL), behind the store (%d): it catches up from its peers",
				v.Revision, local, f.StoreNewest)
		}
		return DecideKeep, fmt.Sprintf("the data dir is valid at revision %d (at most %d once etcd replays its WAL; store: %d)", v.Revision, local, f.StoreNewest)
	case datadir.StateCorrupt:
		switch {
		case multi:
			return DecideJoin, fmt.Sprintf("the data dir is corrupt (%s) and the member belongs to a cluster of %d members: it rejoins from its peers "+
				"through etcd's learner path once a quorum answers (the data dir is moved aside then, and kept), never from a backup alone", v.Reason, f.Members)
		case f.StoreNewest == 0:
			return DecideStop, fmt.Sprintf("the data dir is corrupt (%s) and the store has no full snapshot to restore from; "+
				"the data dir was left untouched: restore it from another copy, or move it away to start an empty member", v.Reason)
		}
		return DecideRestore, fmt.Sprintf("the data dir is corrupt (%s): restoring revision %d from the store (the data dir is kept aside)", v.Reason, f.StoreNewest)
	case datadir.StateMissing:
		switch {
		case multi:
			return DecideJoin, fmt.Sprintf("no data dir (%s): the member belongs to a cluster of %d members: it joins its peers through etcd's learner path, "+
				"or founds the cluster with them when it does not exist yet (no peer has served, the store records none)", v.Reason, f.Members)
		case f.StoreNewest > 0:
			return DecideRestore, fmt.Sprintf("no data dir (%s): restoring revision %d from the store", v.Reason, f.StoreNewest)
		case f.StoreCluster != "" && f.NewCluster == f.StoreCluster:
			return DecideNewMember, fmt.Sprintf("no data dir (%s) and the store of cluster %s holds no full snapshot: "+
				"starting a new member, of the same cluster ID (the same initial cluster and token)", v.Reason, f.StoreCluster)
		case f.StoreCluster != "" && f.ownerGone():
			return DecideNewMember, fmt.Sprintf("no data dir (%s) and the store of cluster %s holds no full snapshot: the store is taken over (%s): "+
				"starting a new member; the store then belongs to its cluster", v.Reason, f.StoreCluster, f.Owner)
		case f.StoreCluster != "" && !f.ForceRestore:
			owner := ""
			if takeoverApplies(f) && f.Owner != "" {
				owner = "; " + f.Owner
			}
			return DecideStop, fmt.Sprintf("no data dir (%s) and the store of cluster %s holds no full snapshot: a new member would be another cluster, "+
				"whose backups the store refuses; give it another store, or start a new cluster anyway with --force-restore "+
				"(the store then belongs to it)%s", v.Reason, f.StoreCluster, owner)
		case f.StoreCluster != "":
			return DecideNewMember, fmt.Sprintf("no data dir (%s) and the store of cluster %s holds no full snapshot: --force-restore: "+
				"starting a new member; the store then belongs to its cluster", v.Reason, f.StoreCluster)
		}
		return DecideNewMember, fmt.Sprintf("no data dir (%s) and nothing in the store: starting a new member", v.Reason)
	}
	return DecideStop, fmt.Sprintf("unexpected validation state %s", v.State)
}
