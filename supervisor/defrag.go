package supervisor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/etcdbr/etcdbr/backup"
)

// Defragmentation (docs/defrag.md). etcd's db file never shrinks: the pages that deletes and
// etcd's compaction free stay in the file until the member is defragmented, which rewrites the
// db and blocks that member's reads and writes meanwhile. The leader's etcdbr (a single
// member's always) defragments the members that need it, one at a time, followers first and
// itself last, only while every member is a healthy started voter and no restore runs. The
// decisions are the pure functions of this file; defrag_run.go does the I/O.

// The defaults of DefragConfig.
const (
	// DefaultDefragMinFree is the free space (dbSize - dbSizeInUse) below which a member is
	// never defragmented by the threshold: a defrag blocks the member for about the time it
	// takes to copy what is in use, and reclaiming less is not worth a pause.
	DefaultDefragMinFree = 100 << 20
	// DefaultDefragMinFreeRatio is the share of the db file that must be free as well: the
	// file is at least twice what it holds. etcd reuses free pages for new writes, so a
	// steady churn keeps a modest share free without growing; only a file this much larger
	// than its content is worth the pause.
	DefaultDefragMinFreeRatio = 0.5
	// DefaultDefragPeriod is how often the leader checks its members' free space: one
	// Status request per member, the cluster prober's cost once a minute.
	DefaultDefragPeriod = time.Minute
)

// DefragConfig turns on the defragmentation of the cluster's members in etcdbr run.
type DefragConfig struct {
	// MinFree and MinFreeRatio are the threshold: a member is defragmented once its free
	// space is at least MinFree bytes and at least MinFreeRatio of its db file (both hold).
	MinFree      int64
	MinFreeRatio float64
	// Schedule, when set, also defragments every member each time it fires, whatever
	// their free space (a round: followers first, the leader last).
	Schedule *backup.Schedule
	// Period is how often the members are checked (0: DefaultDefragPeriod).
	Period time.Duration
}

// DefaultDefragConfig is the configuration etcdbr run uses unless told otherwise.
func DefaultDefragConfig() DefragConfig {
	return DefragConfig{MinFree: DefaultDefragMinFree, MinFreeRatio: DefaultDefragMinFreeRatio, Period: DefaultDefragPeriod}
}

// Validate checks the threshold.
func (c DefragConfig) Validate() error {
	switch {
	case c.MinFree < 0:
		return fmt.Errorf("defragmentation: a minimum free space of %d bytes: give 0 or more", c.MinFree)
	case c.MinFreeRatio < 0 || c.MinFreeRatio > 1:
		return fmt.Errorf("defragmentation: a minimum free ratio of %g: give a share of the db between 0 and 1", c.MinFreeRatio)
	case c.MinFree == 0 && c.MinFreeRatio == 0:
		return fmt.Errorf("defragmentation: a threshold of 0 bytes and 0%% would defragment every member at every check: " +
			"give a minimum free space or ratio (or turn automatic defragmentation off)")
	case c.Period < 0:
		return fmt.Errorf("defragmentation: a check period of %v: give a positive one", c.Period)
	}
	return nil
}

// overThreshold reports whether a db of size bytes with inUse bytes in use is worth
// defragmenting, and says why.
func (c DefragConfig) overThreshold(size, inUse int64) (bool, string) {
	free := size - inUse
	if size <= 0 || free <= 0 {
		return false, ""
	}
	ratio := float64(free) / float64(size)
	if free < c.MinFree || ratio < c.MinFreeRatio {
		return false, ""
	}
	return true, fmt.Sprintf("%d of %d bytes free (%.0f%%; the threshold is %d bytes and %.0f%%)",
		free, size, 100*ratio, c.MinFree, 100*c.MinFreeRatio)
}

// defragMember is what the leader knows of one member when it decides: the membership's
// entry and the member's answer to etcd's Status request.
type defragMember struct {
	ID      uint64
	Name    string // "" while it never started
	Learner bool
	// Answered: it answered its Status request (Err says why not, or its error).
	Answered bool
	Err      string
	// Leader is the leader it names (0: none).
	Leader uint64
	// DBSize and DBInUse are its db file's size and the bytes of it in use.
	DBSize, DBInUse int64
	// Committed and Applied are its raft indexes.
	Committed, Applied uint64
}

// name names the member for logs.
func (m defragMember) name() string {
	if m.Name == "" {
		return fmt.Sprintf("(unstarted %x)", m.ID)
	}
	return m.Name
}

// defragView is what one check sees: this member, the leader it knows, every member of the
// membership, and what this process does meanwhile.
type defragView struct {
	Self, Leader uint64
	Members      []defragMember
	// Restoring: a restore of this member runs (or was asked for).
	Restoring bool
	// Snapshotting: a full snapshot of this member's db is being read; a defrag of it would
	// block its writes until the snapshot ends (etcd's defrag closes the db, which waits for
	// every read transaction).
	Snapshotting bool
}

// member returns the member with id.
func (v defragView) member(id uint64) (defragMember, bool) {
	for _, m := range v.Members {
		if m.ID == id {
			return m, true
		}
	}
	return defragMember{}, false
}

// The reasons a due defragmentation waits (etcdbr_defrags_skipped_total{reason}).
const (
	defragSkipRestore    = "restore"    // a restore of this member runs
	defragSkipMembership = "membership" // a learner, a member that never started: a membership change is under way
	defragSkipUnhealthy  = "unhealthy"  // a member does not answer, knows no other leader, or is behind
	defragSkipSnapshot   = "snapshot"   // a full snapshot of this member is being read
)

// defragSkipReasons are the reasons' label values.
var defragSkipReasons = []string{defragSkipRestore, defragSkipMembership, defragSkipUnhealthy, defragSkipSnapshot}

// defragStepKind is what a check does.
type defragStepKind int

const (
	// defragNone: nothing is due, or this member does not lead.
	defragNone defragStepKind = iota
	// defragSkip: a member is due, but the cluster is not in a state to defragment it
	// (defragStep.Skip says which reason, Why the detail).
	defragSkip
	// defragRun: defragment defragStep.Member now.
	defragRun
)

// defragStep is the outcome of decideDefrag.
type defragStep struct {
	Kind   defragStepKind
	Member defragMember
	Leader bool   // the member is the leader (this member)
	Skip   string // the reason label of a skip
	Why    string // why it runs, or waits
}

// defragMemory is what the defragger remembers between checks, for decideDefrag.
type defragMemory struct {
	// Round are the members the current scheduled round has yet to defragment.
	Round map[uint64]bool
	// NotBefore holds a member back after its defrag failed.
	NotBefore map[uint64]time.Time
	// InUse is each member's DBInUse at the previous check.
	InUse map[uint64]int64
}

// settled reports whether member m's bytes in use did not shrink since the previous check
// (by more than 1% of its db): etcd's compaction of its history frees pages in batches for
// a while, and a member defragmented halfway through would be due again once it ends. A
// member not seen before is not settled yet.
func (mem defragMemory) settled(m defragMember) bool {
	prev, ok := mem.InUse[m.ID]
	return ok && m.DBInUse+m.DBSize/100 >= prev
}

// decideDefrag is the next step of the leader's defragmentation: which member to
// defragment now, if any. A member is due when its free space passes the threshold (cfg)
// and its bytes in use settled since the previous check (mem.settled), the leader only once
// its followers are done compacting too (followersCompacted), or a scheduled round
// has not done it yet (mem.Round), unless a failure holds it back until mem.NotBefore[id].
// Nothing runs unless this member leads, no restore runs, every member of the
// membership is a started voter (no membership change), and every member answers, names
// this leader and is within maxLagEntries of the leader's committed index. Followers come
// first (by name), the leader last; one member per step.
func decideDefrag(v defragView, cfg DefragConfig, mem defragMemory, now time.Time) defragStep {
	if v.Leader == 0 || v.Leader != v.Self {
		return defragStep{Why: "this member does not lead: the leader's etcdbr defragments"}
	}
	type due struct {
		m   defragMember
		why string
	}
	var dues []due
	for _, m := range v.Members {
		if t, ok := mem.NotBefore[m.ID]; ok && now.Before(t) {
			continue
		}
		if mem.Round[m.ID] {
			dues = append(dues, due{m, "the defragmentation schedule fired"})
		} else if ok, why := cfg.overThreshold(m.DBSize, m.DBInUse); ok && m.Answered && m.Err == "" && mem.settled(m) &&
			(m.ID != v.Leader || followersCompacted(v, m, mem)) {
			dues = append(dues, due{m, why})
		}
	}
	if len(dues) == 0 {
		return defragStep{Why: "no member is due"}
	}
	slices.SortFunc(dues, func(a, b due) int {
		// Followers first, by name; the leader last.
		if (a.m.ID == v.Leader) != (b.m.ID == v.Leader) {
			if a.m.ID == v.Leader {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.m.Name, b.m.Name), cmp.Compare(a.m.ID, b.m.ID))
	})
	next := dues[0]
	skip := func(reason, why string) defragStep {
		return defragStep{Kind: defragSkip, Member: next.m, Leader: next.m.ID == v.Leader, Skip: reason,
			Why: fmt.Sprintf("%s is due (%s), but %s", next.m.name(), next.why, why)}
	}
	if v.Restoring {
		return skip(defragSkipRestore, "a restore of this member runs")
	}
	if why := membershipChange(v); why != "" {
		return skip(defragSkipMembership, why)
	}
	if why := unhealthy(v); why != "" {
		return skip(defragSkipUnhealthy, why)
	}
	if next.m.ID == v.Self && v.Snapshotting {
		return skip(defragSkipSnapshot, "a full snapshot of it is being read (a defrag would block its writes until the snapshot ends)")
	}
	return defragStep{Kind: defragRun, Member: next.m, Leader: next.m.ID == v.Leader, Why: next.why}
}

// followersCompacted reports whether the followers are done with the compaction that freed
// the leader's pages: every follower that answers is settled (mem.settled) and holds no more
// than a tenth of the leader's db beyond what the leader holds in use. The members hold the
// same data, and each compacts it on its own, a follower a moment after the leader: one that
// still holds far more, or is shrinking, is about to be due, and the leader, due by the
// threshold, waits for it, so that it is defragmented last.
func followersCompacted(v defragView, leader defragMember, mem defragMemory) bool {
	for _, f := range v.Members {
		if f.ID == leader.ID || !f.Answered || f.Err != "" {
			continue
		}
		if !mem.settled(f) || f.DBInUse > leader.DBInUse+leader.DBSize/10 {
			return false
		}
	}
	return true
}

// membershipChange says why the membership is changing ("" when it is not): a learner, or a
// member added that never started.
func membershipChange(v defragView) string {
	var why []string
	for _, m := range v.Members {
		switch {
		case m.Learner:
			why = append(why, m.name()+" is a learner")
		case m.Name == "":
			why = append(why, m.name()+" was added and never started")
		}
	}
	if len(why) == 0 {
		return ""
	}
	return "the membership is changing: " + strings.Join(why, ", ")
}

// unhealthy says which members are not healthy ("" when every one is): one that does not
// answer its Status, names no leader or another one, or whose applied index trails the
// leader's committed index by more than maxLagEntries.
func unhealthy(v defragView) string {
	leader, ok := v.member(v.Leader)
	var why []string
	for _, m := range v.Members {
		switch {
		case !m.Answered:
			why = append(why, fmt.Sprintf("%s does not answer (%s)", m.name(), m.Err))
		case m.Err != "":
			why = append(why, fmt.Sprintf("%s answers with an error (%s)", m.name(), m.Err))
		case m.Leader == 0:
			why = append(why, m.name()+" knows no leader")
		case m.Leader != v.Leader:
			why = append(why, fmt.Sprintf("%s names another leader (%x)", m.name(), m.Leader))
		case ok && leader.Answered && m.Applied+maxLagEntries < leader.Committed:
			why = append(why, fmt.Sprintf("%s is behind (%d entries)", m.name(), leader.Committed-m.Applied))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return "not every member is healthy: " + strings.Join(why, ", ")
}

// caughtUp reports whether member id, after its defragmentation, answers, names the leader,
// and has applied at least index (the leader's committed index once the defrag ended).
func caughtUp(v defragView, id uint64, index uint64) bool {
	m, ok := v.member(id)
	return ok && m.Answered && m.Err == "" && m.Leader != 0 && m.Leader == v.Leader && m.Applied >= index
}
