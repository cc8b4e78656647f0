package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/etcdbr/etcdbr/internal/backoff"
)

// JoinConfig is what Join needs.
type JoinConfig struct {
	Self Self
	// Data is the data dir's state at start; DataMember and DataCluster its IDs when valid.
	Data                    Data
	DataMember, DataCluster uint64
	// StoreCluster reads the cluster the store's record names (0: none); it is asked only
	// when etcd would not simply start on the data dir. Nil: the store records none.
	StoreCluster func(context.Context) (uint64, error)
	// ConfigCluster is the cluster a bootstrap with this member's configuration creates
	// (0: unknown).
	ConfigCluster uint64
	// New: etcd is configured with --initial-cluster-state=new.
	New bool
	// Cluster reaches the peers.
	Cluster Cluster
	// MoveAside moves the data dir aside (kept) and returns where it went.
	MoveAside func() (string, error)
	// Log receives each step (nil: discarded).
	Log *slog.Logger
	// Wait is the backoff between looks that changed nothing (zero: 500ms doubling to 30s,
	// with jitter, so that two members that wait for the one learner slot do not retry
	// together).
	Wait backoff.Backoff
	// ProbeTimeout bounds one look at the peers (0: 3s).
	ProbeTimeout time.Duration
	// OnStep, when set, is called with each step before it is carried out (tests, status).
	OnStep func(Step)
	// BeforeChange, when set, is called before each membership change this member makes
	// (removing a stale entry, adding itself as a learner): the supervisor makes sure a
	// full snapshot of the cluster is in the store first.
	BeforeChange func(context.Context, Step)
}

// OutcomeKind is how etcd is to start after Join.
type OutcomeKind int

const (
	// OutcomeStart: on the data dir as it is, as configured.
	OutcomeStart OutcomeKind = iota
	// OutcomeBootstrap: on no data, as configured: the member founds the cluster with its
	// peers.
	OutcomeBootstrap
	// OutcomeJoin: on no data, with --initial-cluster-state=existing and
	// Outcome.InitialCluster, as member Outcome.MemberID.
	OutcomeJoin
)

// String returns "start", "bootstrap" or "join".
func (k OutcomeKind) String() string {
	switch k {
	case OutcomeStart:
		return "start"
	case OutcomeBootstrap:
		return "bootstrap"
	case OutcomeJoin:
		return "join"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// Outcome is how Join ended.
type Outcome struct {
	Kind           OutcomeKind
	InitialCluster string
	MemberID       uint64
	// MovedAside is where the data dir went, if Join moved it aside.
	MovedAside string
	// Reason is the last step's.
	Reason string
}

// Join looks at the peers, decides (Decide) and carries out the step, again and again,
// until etcd may start: on the data dir as it is, as the founder of a new cluster, or as a
// member that joins the cluster on no data. It waits with backoff, without a cap on the
// tries, while nothing can be done (no quorum, another learner); only ctx's end or a data
// dir that cannot be moved aside ends it with an error.
//
// Each step is idempotent, so that a crash anywhere followed by a new Join finishes the
// job: an entry of this member that started is stale and removed ("member not found" means
// removed already); an unstarted entry of this member, whoever added it, is joined; "peer
// URL exists" and "member exists" send Join to look again; "too many learners" waits.
func Join(ctx context.Context, cfg JoinConfig) (Outcome, error) {
	lg := cfg.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	wait := cfg.Wait
	if wait == (backoff.Backoff{}) {
		wait = backoff.Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: true}
	}
	probeTimeout := cfg.ProbeTimeout
	if probeTimeout <= 0 {
		probeTimeout = 3 * time.Second
	}
	data, dataMember, dataCluster := cfg.Data, cfg.DataMember, cfg.DataCluster
	var out Outcome
	var lastReason string
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		f, answering := look(ctx, cfg, probeTimeout)
		f.Data, f.DataMember, f.DataCluster = data, dataMember, dataCluster
		f.ConfigCluster = cfg.ConfigCluster
		step := Decide(f)
		if step.Kind != StepStart && cfg.StoreCluster != nil {
			// What the store records decides the rest: read it, and decide again.
			sctx, cancel := context.WithTimeout(ctx, 4*probeTimeout)
			id, err := cfg.StoreCluster(sctx)
			cancel()
			f.StoreCluster = id
			if err != nil && !f.Quorum {
				f.StoreErr = err.Error() // with a quorum the peers say the cluster exists
			}
			step = Decide(f)
		}
		out.Reason = step.Reason
		if cfg.OnStep != nil {
			cfg.OnStep(step)
		}
		if step.Kind != StepWait || step.Reason != lastReason {
			lg.Info("membership step", "step", step.Kind.String(), "reason", step.Reason)
		}
		lastReason = step.Reason
		switch step.Kind {
		case StepStop:
			return out, errors.New(step.Reason)
		case StepStart:
			out.Kind = OutcomeStart
			return out, nil
		case StepBootstrap:
			out.Kind = OutcomeBootstrap
			return out, nil
		case StepJoin:
			out.Kind, out.InitialCluster, out.MemberID = OutcomeJoin, step.InitialCluster, step.ID
			return out, nil
		case StepMoveAside:
			aside, err := cfg.MoveAside()
			if err != nil {
				return out, fmt.Errorf("move the data dir aside before this member joins again: %w", err)
			}
			out.MovedAside = aside
			data, dataMember, dataCluster = DataMissing, 0, 0
			wait.Reset()
			continue
		case StepRemove:
			if cfg.BeforeChange != nil {
				cfg.BeforeChange(ctx, step)
			}
			cctx, cancel := context.WithTimeout(ctx, 2*probeTimeout)
			err := cfg.Cluster.Remove(cctx, answering, step.ID)
			cancel()
			switch {
			case err == nil:
				lg.Info("removed the stale member entry", "member", types.ID(step.ID).String())
				wait.Reset()
				continue
			case IsMemberNotFound(err):
				wait.Reset()
				continue // removed already: a state, not a failure
			case IsNotReadyForChange(err):
				lg.Info("etcd holds the removal back for now (its quorum check); trying again", "err", err)
			default:
				lg.Warn("could not remove the stale member entry; trying again", "member", types.ID(step.ID).String(), "err", err)
			}
		case StepAddLearner:
			if cfg.BeforeChange != nil {
				cfg.BeforeChange(ctx, step)
			}
			cctx, cancel := context.WithTimeout(ctx, 2*probeTimeout)
			m, err := cfg.Cluster.AddLearner(cctx, answering, cfg.Self.PeerURLs)
			cancel()
			switch {
			case err == nil:
				lg.Info("added this member to the cluster as a learner", "member", types.ID(m.ID).String(), "peer_urls", m.PeerURLs)
				wait.Reset()
				continue
			case IsExists(err):
				lg.Info("this member's entry exists already; looking again", "err", err)
			case IsTooManyLearners(err):
				lg.Info("another member holds the learner slot; waiting", "err", err)
			case IsNotReadyForChange(err):
				lg.Info("etcd holds the addition back for now (a peer connected less than 5s ago); trying again", "err", err)
			default:
				lg.Warn("could not add this member as a learner; trying again", "err", err)
			}
		}
		if err := backoff.Sleep(ctx, wait.Next()); err != nil {
			return out, err
		}
	}
}

// look asks the peers and returns the facts they give (without the data dir's), and the
// endpoints that answered, those that know a leader first.
func look(ctx context.Context, cfg JoinConfig, timeout time.Duration) (Facts, []string) {
	f := Facts{Self: cfg.Self, New: cfg.New}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	answers := cfg.Cluster.Probe(pctx)
	cancel()
	f.Peers = len(answers)
	var withLeader, without []string
	for _, a := range answers {
		switch {
		case a.Err != nil && a.Refused:
			f.Refused++
			f.PeerErrors = append(f.PeerErrors, a.Err.Error())
			continue
		case a.Err != nil:
			f.PeerErrors = append(f.PeerErrors, a.Err.Error())
			continue
		}
		f.Answered++
		for _, m := range a.Members {
			f.Formed = f.Formed || m.Started()
		}
		if a.Leader != 0 && !a.IsLearner {
			withLeader = append(withLeader, a.Endpoint)
		} else {
			without = append(without, a.Endpoint)
		}
	}
	answering := append(withLeader, without...)
	if len(withLeader) == 0 {
		return f, answering
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, ms, err := cfg.Cluster.MemberList(lctx, answering)
	if err != nil {
		f.PeerErrors = append(f.PeerErrors, err.Error())
		return f, answering
	}
	f.Quorum, f.ClusterID, f.Members = true, id, ms
	f.Formed = true
	return f, answering
}
