package membership

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/types"
)

// Member is one entry of the cluster's member list.
type Member struct {
	ID         uint64
	Name       string // "" until the member started and published itself
	PeerURLs   []string
	ClientURLs []string // none until the member started and published itself
	IsLearner  bool
}

// Started reports whether the member ever started: it published its client URLs (what
// etcd's own check, "member ... has already been bootstrapped", looks at).
func (m Member) Started() bool { return len(m.ClientURLs) > 0 }

// String is "name (id)", or "unstarted (id)".
func (m Member) String() string {
	name := m.Name
	if name == "" {
		name = "unstarted"
	}
	return fmt.Sprintf("%s (%s)", name, types.ID(m.ID))
}

// Self is this member as configured: etcd's --name and --initial-advertise-peer-urls.
type Self struct {
	Name     string
	PeerURLs []string
}

// Matches reports whether entry m of the member list is this member's: it has one of this
// member's peer URLs. A peer URL belongs to one member only (etcd refuses a second), so an
// entry with this member's address is this member's whatever its name; an entry with this
// member's name and other peer URLs is not touched (two nodes may be misconfigured with one
// name, and a healthy peer must never be removed for it).
func (s Self) Matches(m Member) bool {
	for _, u := range m.PeerURLs {
		if slices.Contains(s.PeerURLs, u) {
			return true
		}
	}
	return false
}

// Data is what the member's own data dir holds.
type Data int

const (
	// DataMissing: no data dir, or an empty one.
	DataMissing Data = iota
	// DataCorrupt: a data dir that cannot be used (it is moved aside, never deleted,
	// before the member joins again).
	DataCorrupt
	// DataValid: a data dir etcd can start on.
	DataValid
)

// String returns "missing", "corrupt" or "valid".
func (d Data) String() string {
	switch d {
	case DataMissing:
		return "missing"
	case DataCorrupt:
		return "corrupt"
	case DataValid:
		return "valid"
	}
	return fmt.Sprintf("Data(%d)", int(d))
}

// Facts are what Decide looks at: this member and its data dir, what its peers answered,
// and what the store records.
type Facts struct {
	Self Self
	Data Data
	// DataMember and DataCluster are the member and cluster IDs of a valid data dir (0:
	// unknown).
	DataMember, DataCluster uint64
	// Peers is how many peers are configured (the cluster endpoints besides this member's);
	// Answered how many answered; Refused how many answered but refused this member's
	// client (TLS, authentication): they run, but what they hold is unknown.
	Peers, Answered, Refused int
	// Formed: an answering peer knows a member that started (published itself), so the
	// cluster has had a leader: it exists.
	Formed bool
	// Quorum: the member list was read linearizably (Members, ClusterID): the cluster has a
	// leader and a quorum, and membership changes can go through.
	Quorum    bool
	Members   []Member
	ClusterID uint64
	// StoreCluster is the cluster the store's record names (0: none): a cluster that took a
	// backup exists. ConfigCluster is the cluster a bootstrap with this member's
	// configuration creates (0: unknown). StoreErr, when set, is why the store could not be
	// read: then it may record one.
	StoreCluster, ConfigCluster uint64
	StoreErr                    string
	// New: etcd is configured to bootstrap a new cluster (--initial-cluster-state=new).
	New bool
	// PeerErrors says why the peers that did not answer did not (for the reasons).
	PeerErrors []string
}

// StepKind is what Decide says to do next.
type StepKind int

const (
	// StepWait: nothing can be done now (no quorum, another learner, ...): look again
	// after a wait.
	StepWait StepKind = iota
	// StepStart: start etcd on the data dir as it is, as configured.
	StepStart
	// StepBootstrap: start etcd as configured on no data: the cluster does not exist yet
	// and this member founds it with its configured peers.
	StepBootstrap
	// StepMoveAside: move the data dir aside (kept), then look again.
	StepMoveAside
	// StepRemove: remove the stale member entry Step.ID, then look again.
	StepRemove
	// StepAddLearner: add this member to the cluster as a learner, then look again.
	StepAddLearner
	// StepJoin: start etcd on no data with --initial-cluster-state=existing and
	// Step.InitialCluster, as member Step.ID (unstarted, in the member list).
	StepJoin
	// StepStop: a configuration error etcdbr must not act on (the peers are another
	// cluster than the data dir's or the store's): stop with the reason.
	StepStop
)

// String names the kind, as the logs show it.
func (k StepKind) String() string {
	switch k {
	case StepWait:
		return "wait"
	case StepStart:
		return "start"
	case StepBootstrap:
		return "bootstrap"
	case StepMoveAside:
		return "move-aside"
	case StepRemove:
		return "remove-stale-member"
	case StepAddLearner:
		return "add-learner"
	case StepJoin:
		return "join"
	case StepStop:
		return "stop"
	}
	return fmt.Sprintf("StepKind(%d)", int(k))
}

// Step is Decide's answer.
type Step struct {
	Kind StepKind
	// ID is the member to remove (StepRemove) or to start as (StepJoin).
	ID uint64
	// InitialCluster is etcd's --initial-cluster for StepJoin: the cluster's members now.
	InitialCluster string
	// Reason says why, for the log and the status.
	Reason string
}

// Decide returns the next step of a member at start. It does no I/O. In order:
//
//   - a valid data dir starts as it is, unless a quorum of the cluster says its member was
//     removed: then it is moved aside (kept);
//   - a corrupt data dir is moved aside once a quorum answers (before, the member waits:
//     it cannot rejoin, and a restore from the store alone would go back in time);
//   - no data dir and no quorum: bootstrap only when the cluster does not exist yet
//     (--initial-cluster-state=new, no answering peer knows a started member, none refused
//     this member, and the store records no cluster); otherwise wait, saying why;
//   - peers that are another cluster than the store records, or than a valid data dir's:
//     stop (a configuration error: nothing is changed);
//   - no data dir and a quorum: the entries of this member that started are stale and are
//     removed one by one; an unstarted entry of this member (added by this member before a
//     crash, by kubeadm, or by a person) is joined; otherwise, with no other learner in the
//     cluster, this member is added as a learner.
func Decide(f Facts) Step {
	if f.Quorum && f.ClusterID != 0 && f.StoreCluster != 0 && f.StoreCluster != f.ClusterID {
		return Step{Kind: StepStop, Reason: fmt.Sprintf("the peers at the cluster endpoints are cluster %s, but the store records cluster %s: "+
			"a member joins only the cluster whose backups its store holds; nothing was changed: check --cluster-endpoints and --store",
			types.ID(f.ClusterID), types.ID(f.StoreCluster))}
	}
	switch f.Data {
	case DataValid:
		switch {
		case !f.Quorum:
			return Step{Kind: StepStart, Reason: "the data dir is valid; " + quorumText(f) + ": etcd starts on it and catches up from its peers"}
		case f.ClusterID != 0 && f.DataCluster != 0 && f.ClusterID != f.DataCluster:
			return Step{Kind: StepStop, Reason: fmt.Sprintf("the data dir belongs to cluster %s, but the peers at the cluster endpoints are cluster %s: "+
				"etcdbr moves no data dir of another cluster aside; nothing was changed: check --cluster-endpoints (or move the data dir away to join the peers' cluster)",
				types.ID(f.DataCluster), types.ID(f.ClusterID))}
		case f.DataMember != 0 && !slices.ContainsFunc(f.Members, func(m Member) bool { return m.ID == f.DataMember }):
			return Step{Kind: StepMoveAside, Reason: fmt.Sprintf("member %s of the data dir was removed from the cluster (members: %s): "+
				"the data dir is moved aside (kept) and this member joins again as a learner", types.ID(f.DataMember), memberList(f.Members))}
		}
		return Step{Kind: StepStart, Reason: "the data dir is valid and its member is in the cluster"}
	case DataCorrupt:
		if !f.Quorum {
			return Step{Kind: StepWait, Reason: "the data dir is corrupt and " + quorumText(f) + ": the member rejoins from its peers once a quorum answers " +
				"(a restore from the store alone would take it back in time); the data dir is untouched until then"}
		}
		return Step{Kind: StepMoveAside, Reason: "the data dir is corrupt: it is moved aside (kept) and this member joins again as a learner"}
	}
	if !f.Quorum {
		return decideWithoutQuorum(f)
	}
	mine, others := split(f)
	for _, m := range mine {
		if m.Started() {
			return Step{Kind: StepRemove, ID: m.ID, Reason: fmt.Sprintf("member %s has this member's peer URLs %v but this member has no data: "+
				"the entry is stale and is removed before this member joins again", m, m.PeerURLs)}
		}
	}
	for _, m := range mine {
		if !sameURLs(m.PeerURLs, f.Self.PeerURLs) {
			return Step{Kind: StepRemove, ID: m.ID, Reason: fmt.Sprintf("member %s is unstarted with peer URLs %v, not this member's %v: "+
				"it is removed and this member added with its own", m, m.PeerURLs, f.Self.PeerURLs)}
		}
		return Step{Kind: StepJoin, ID: m.ID, InitialCluster: InitialCluster(f.Members, f.Self, m.ID),
			Reason: fmt.Sprintf("member %s is this member's unstarted entry (learner: %t): etcd starts on no data and joins the cluster", m, m.IsLearner)}
	}
	for _, m := range others {
		if m.IsLearner {
			return Step{Kind: StepWait, Reason: fmt.Sprintf("member %s is a learner: one learner at a time; this member is added once it is promoted or removed", m)}
		}
	}
	return Step{Kind: StepAddLearner, Reason: "this member has no data and no entry in the cluster: it is added as a learner, then syncs from its peers and is promoted"}
}

// decideWithoutQuorum is Decide for a member with no data dir while no quorum answers.
func decideWithoutQuorum(f Facts) Step {
	switch {
	case f.StoreErr != "":
		return Step{Kind: StepWait, Reason: quorumText(f) + ", and the store cannot be read (" + f.StoreErr + "): whether it records this cluster is unknown, " +
			"so this member founds none; it waits for the store or a quorum of its peers"}
	case f.StoreCluster != 0 && f.ConfigCluster != 0 && f.StoreCluster != f.ConfigCluster:
		return Step{Kind: StepWait, Reason: fmt.Sprintf("%s, and the store records cluster %s, while this configuration would found cluster %s: "+
			"this member founds none; it waits for a quorum of its peers and joins them (a new cluster needs a store of its own)",
			quorumText(f), types.ID(f.StoreCluster), types.ID(f.ConfigCluster))}
	case f.StoreCluster != 0:
		return Step{Kind: StepWait, Reason: quorumText(f) + ", and the store records this cluster: it exists, so this member never founds another; " +
			"it waits for a quorum of its peers and joins them (if the whole cluster is lost, restore every member from the store at once: etcdbr cluster restore --store URL)"}
	case f.Formed:
		return Step{Kind: StepWait, Reason: quorumText(f) + ", and they have served as a cluster: this member never founds another; it waits for a quorum and joins them"}
	case f.Refused > 0:
		return Step{Kind: StepWait, Reason: fmt.Sprintf("%d peer(s) answer but refuse this member's client (%s): what they hold is unknown, so this member founds no cluster; "+
			"fix the client TLS (--cluster-cert, --cluster-key, --cluster-ca)", f.Refused, strings.Join(f.PeerErrors, "; "))}
	case !f.New:
		return Step{Kind: StepWait, Reason: quorumText(f) + " and --initial-cluster-state is existing: this member waits for a quorum of its peers and joins them"}
	}
	return Step{Kind: StepBootstrap, Reason: quorumText(f) + "; none has served as a cluster and the store records none: " +
		"this member starts as configured (--initial-cluster-state=new) and founds the cluster with its peers"}
}

// quorumText says how the peers answered.
func quorumText(f Facts) string {
	switch {
	case f.Quorum:
		return fmt.Sprintf("%d of %d peers answer, with a quorum", f.Answered, f.Peers)
	case f.Answered == 0:
		s := fmt.Sprintf("none of the %d peers answers", f.Peers)
		if len(f.PeerErrors) > 0 {
			s += " (" + strings.Join(f.PeerErrors, "; ") + ")"
		}
		return s
	}
	return fmt.Sprintf("%d of %d peers answer, without a leader and a quorum", f.Answered, f.Peers)
}

// split separates the entries of this member from the others.
func split(f Facts) (mine, others []Member) {
	for _, m := range f.Members {
		if f.Self.Matches(m) {
			mine = append(mine, m)
		} else {
			others = append(others, m)
		}
	}
	return mine, others
}

// sameURLs reports whether a and b hold the same URLs, in any order.
func sameURLs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

// memberList is "a (1), b (2)".
func memberList(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.String())
	}
	return strings.Join(s, ", ")
}

// InitialCluster is etcd's --initial-cluster for a member that joins as member id: every
// member of the list with each of its peer URLs, this member under its own name (etcd
// checks it), the others under their names, and unstarted ones under "unstarted-<id>"
// (etcd matches the members by their peer URLs; the names need only be unique).
func InitialCluster(members []Member, self Self, id uint64) string {
	var parts []string
	for _, m := range members {
		name := m.Name
		switch {
		case m.ID == id:
			name = self.Name
		case name == "":
			name = "unstarted-" + types.ID(m.ID).String()
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
