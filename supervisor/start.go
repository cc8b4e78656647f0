package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// validate checks the data dir and restores it when needed, and records how it went. It
// returns the restore that built the data dir when it started a history the store has no
// full snapshot of yet.
func (s *Supervisor) validate(ctx context.Context) (*datadir.RestoredMarker, error) {
	dir, walDir := s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir
	if err := datadir.CheckWritable(dir); err != nil {
		return nil, err
	}
	if _, err := rebuild.RecoverInterruptedRestore(dir, walDir, s.lg); err != nil {
		return nil, fmt.Errorf("finish an interrupted restore of %q: %w", dir, err)
	}
	// A whole-cluster restore goes first: the member restores the intent's point whatever its
	// data dir holds, and starts on it without asking its peers (they restore too).
	s.readDataIntent()
	if history, handled, err := s.intentAtStart(ctx); handled {
		return history, err
	}
	start := time.Now()
	v := datadir.InspectWith(ctx, dir, walDir, datadir.InspectOptions{Depth: s.cfg.Validation})
	if v.State == datadir.StateUnknown && s.cfg.Validation == datadir.DepthQuick {
		// Quick needs what a clean stop leaves; without it, check fully rather than refuse.
		s.lg.Warn("quick validation cannot vouch for the data dir; validating fully", "reason", v.Reason)
		v = datadir.InspectWith(ctx, dir, walDir, datadir.InspectOptions{Depth: datadir.DepthFull})
	}
	took := time.Since(start)
	s.metrics.validationDuration.Set(took.Seconds())
	s.metrics.validations.WithLabelValues(v.State.String()).Inc()
	s.mu.Lock()
	s.validation = ValidationStatus{Result: v.State.String(), Reason: v.Reason, Revision: v.Revision, DurationSeconds: took.Seconds()}
	s.mu.Unlock()
	s.lg.Info("data dir checked", "data_dir", dir, "verdict", v.State.String(), "depth", v.Depth.String(),
		"revision", v.Revision, "max_revision", v.MaxRevision, "reason", v.Reason, "took", took.Round(time.Millisecond))
	members := s.members
	if v.State == datadir.StateValid {
		// The data dir knows its cluster: kubeadm's first control-plane node names only
		// itself in --initial-cluster, however many members joined it since.
		if ms, err := datadir.ReadMembers(dir); err == nil && len(ms) > members {
			s.lg.Info("the data dir's cluster has more members than --initial-cluster names", "members", len(ms), "initial_cluster", s.members)
			members = len(ms)
		}
	}
	if v2, moved := s.leaveReplacedCluster(ctx, v, members); moved {
		v = v2
	}
	// The wait for the peers (no quorum) is cut short by a cluster restore (watchIntents).
	pctx, cancelWait := context.WithCancelCause(ctx)
	s.setWaiting(cancelWait)
	prep, err := prepareDataDir(pctx, s.cfg, v, members, s.restorePointBeforeChange, s.lg)
	s.setWaiting(nil)
	cut := errors.Is(context.Cause(pctx), errIntentSeen)
	cancelWait(nil)
	if err != nil && cut && ctx.Err() == nil {
		s.lg.Warn("cluster restore: the wait for the peers was cut short", "err", err)
		if history, handled, err := s.intentAtStart(ctx); handled {
			return history, err
		}
		return s.validate(ctx) // the intent ended meanwhile: start over
	}
	if prep.etcd != nil {
		s.startCfg = prep.etcd
	}
	s.claim.setStoreCluster(prep.storeCluster)
	s.mu.Lock()
	s.validation.Shortfall = prep.shortfall
	s.mu.Unlock()
	if prep.shortfall != nil {
		s.metrics.lostRevisions.Set(float64(prep.shortfall.LostRevisions))
	}
	if err != nil {
		return nil, err
	}
	if prep.restored {
		s.learnDamage(ctx) // the restore may have found objects damaged, and recorded them
	}
	switch {
	case prep.follow == "":
	case prep.restored:
		s.claim.follow(ctx, prep.follow)
	default: // a new member: its cluster is known once it started; the first claim records it
		s.claim.reclaimAt(prep.follow)
	}
	return prep.history, nil
}

// prepared is what prepareDataDir did.
type prepared struct {
	storeCluster string // the cluster the store records ("" none, or unknown)
	restored     bool   // the data dir was restored
	// follow is the store's cluster, to replace in its record with the cluster of the
	// restored data dir or new member ("" nothing to replace).
	follow string
	// shortfall says what the restore at start could not reach (nil: it reached the
	// newest point, or there was no restore).
	shortfall *ShortfallStatus
	// history is the restore that built the data dir, when it started a new history of
	// which the store holds no full snapshot yet: etcdbr records the history and takes
	// one at once.
	history *datadir.RestoredMarker
	// etcd is the configuration etcd starts with when it is not Config.Etcd: a member that
	// joins its cluster again (--initial-cluster-state=existing, the cluster's members now).
	etcd *embed.Config
}

// prepareDataDir decides from the verdict and the store what to do with the data dir
// (DecideStart over SurveyStart's facts) and does it: keep it, restore the store's newest
// point over it (the old dir is moved aside and kept), start a new member, or stop with the
// reason. A restore or a new member that creates another cluster than the one the store
// records is refused unless it replaces the store's own member or --force-restore
// (CheckRestoreCluster); then the store's record is to follow it (prepared.follow).
//
// A member of a cluster of several members (members > 1) with peers to reach goes through
// membership.Join first (joinPeers): a valid data dir whose member was removed from the
// cluster is moved aside, and a missing or corrupt one is replaced through etcd's learner
// path, with a full snapshot in the store before its first membership change (before);
// prepared.etcd is then the configuration etcd starts with.
func prepareDataDir(ctx context.Context, cfg Config, v datadir.Verdict, members int, before beforeChange, lg *slog.Logger) (prepared, error) {
	var prep prepared
	dir := cfg.Etcd.Dir
	survey, src, err := surveyStart(ctx, cfg, v, lg)
	survey.Facts.Members = max(survey.Facts.Members, members)
	peers := survey.Facts.Members > 1 && len(cfg.Cluster.Endpoints) > 0
	if serr := survey.StoreErr; serr != nil {
		if peers && v.State != datadir.StateUnknown {
			// The peers hold the data; the store only says whether the cluster exists, which
			// Join asks it again when that decides.
			lg.Warn("the store cannot be read; this member of a cluster of several goes on with its peers", "store", cfg.Store.URL(), "err", serr)
			return joinPeers(ctx, cfg, v, "", before, lg)
		}
		if v.State == datadir.StateValid {
			lg.Warn("the store cannot be read; starting on the valid data dir without comparing it with the backups",
				"store", src.URL(), "err", serr)
			return prep, nil
		}
		return prep, fmt.Errorf("data dir %q is %s (%s) and the store %s cannot be read to restore it: %w",
			dir, v.State, v.Reason, src.URL(), serr)
	}
	facts := survey.Facts
	facts.ForceRestore = cfg.ForceRestore
	prep.storeCluster = facts.StoreCluster
	if err != nil {
		return prep, err
	}
	if m := survey.Restored; m != nil && m.NewHistory() && survey.NewestFull < m.DataRevision {
		prep.history = m
	}
	if takeoverApplies(facts) {
		// A new machine on the store of another cluster: the store is taken over when that
		// cluster stopped writing to it, which takes watching its liveness record.
		d, err := watchOwner(ctx, cfg.Store, facts.StoreCluster, time.Now, lg)
		if err != nil {
			return prep, fmt.Errorf("data dir %q is missing (%s) and the store %s belongs to cluster %s, not to the cluster %s this configuration creates: %w",
				dir, v.Reason, cfg.Store.URL(), facts.StoreCluster, facts.NewCluster, err)
		}
		facts.OwnerGone, facts.Owner = d.Take, d.Reason
		if d.Take {
			lg.Warn("taking the store over: the cluster that owns it stopped writing to it, and this member has no data dir (a new machine); "+
				"it starts from the store's data, and the store then belongs to its cluster",
				"store", cfg.Store.URL(), "store_cluster", facts.StoreCluster, "last_written", d.LastWritten, "takeover_after", d.After,
				"cluster", facts.NewCluster, "reason", d.Reason)
		}
	}
	decision, reason := DecideStart(facts)
	lg.Info("start-up decision", "decision", decision.String(), "reason", reason,
		"data_revision", v.Revision, "store_revision", facts.StoreNewest,
		"data_cluster", facts.DirCluster, "store_cluster", facts.StoreCluster, "config_cluster", facts.NewCluster)
	if storeFollows(facts, decision) {
		prep.follow = facts.StoreCluster
	}
	switch decision {
	case DecideKeep, DecideJoin:
		switch {
		case peers:
		case decision == DecideJoin && v.State == datadir.StateMissing:
			lg.Warn("no peer client endpoints (--cluster-endpoints): this member cannot ask its peers whether the cluster exists; etcd starts as configured")
			return prep, nil
		case decision == DecideJoin:
			return prep, fmt.Errorf("%s; but this member has no peer client endpoints to reach: give them with --cluster-endpoints", reason)
		default:
			return prep, nil
		}
		p, err := joinPeers(ctx, cfg, v, facts.NewCluster, before, lg)
		p.storeCluster, p.history = prep.storeCluster, prep.history
		return p, err
	case DecideNewMember:
		return prep, nil
	case DecideStop:
		return prep, errors.New(reason)
	}
	// What the member served after the store's newest revision is unknown (it is lost):
	// the restore starts a new history past a bound of it.
	opts := rebuild.RestoreOptions{
		Served: facts.StoreNewest + cfg.unbacked(),
		Marker: &datadir.RestoredMarker{Source: src.URL(), Trigger: TriggerStart},
	}
	res, err := RestoreNewestIntact(ctx, src, cfg.Etcd, opts, lg)
	switch {
	case err == nil:
		prep.restored = true
		if sf := res.Shortfall; sf != nil {
			prep.shortfall = &ShortfallStatus{Revision: res.Revision, StoreRevision: sf.Newest, LostRevisions: sf.Lost,
				Damaged: snapKeyList(sf.Damaged), DataRevision: res.DataRevision}
			lg.Error("etcd starts on an earlier point than the store's newest: backup objects failed verification, and the "+
				"revisions after the point restored are lost; the damaged objects are still in the store (etcdbr verify names them; "+
				"replace them from a copy if there is one, and restore with POST /v1/restore)",
				"damaged", prep.shortfall.Damaged, "revision", res.Revision, "store_revision", sf.Newest, "lost_revisions", sf.Lost)
		}
		if res.MovedAside != "" {
			lg.Warn("the previous data dir was moved aside and kept", "path", res.MovedAside)
		}
		if res.Bump > 0 {
			lg.Warn("the restored data starts a new history: what the lost member served after the store's newest revision is unknown, "+
				"so the revision is raised past a bound of it and marked compacted; clients (kube-apiserver, informers) are told to list again",
				"revision", res.Revision, "data_revision", res.DataRevision, "store_revision", facts.StoreNewest, "unbacked_bound", cfg.unbacked())
			prep.history = opts.Marker
		}
		return prep, nil // old data dirs are pruned once etcd started on the new one
	case errors.Is(err, ErrNoBackup) && v.State == datadir.StateCorrupt:
		return prep, fmt.Errorf("data dir %q is corrupt (%s) and the store %s has no full snapshot to restore from; "+
			"the data dir was left untouched: restore it from another copy, or move it away to start an empty member", dir, v.Reason, src.URL())
	default:
		return prep, fmt.Errorf("data dir %q: %w", dir, err)
	}
}

// StartSurvey is what start-up reads before it decides what to do with the data dir: the
// facts DecideStart looks at, and what the restore that built the data dir recorded.
type StartSurvey struct {
	// Facts are the facts of the decision; ForceRestore is the caller's to set.
	Facts StartFacts
	// StoreErr is why the store could not be read (nil: it could): then the survey holds
	// the verdict and the size of the initial cluster only.
	StoreErr error
	// Restored is what the restore that built the data dir recorded in it (nil: nothing, it
	// could not be read, or the data dir is not valid).
	Restored *datadir.RestoredMarker
	// NewestFull is the revision of the store's newest full snapshot (0: none).
	NewestFull int64
}

// SurveyStart gathers what start-up decides with, for the data dir of cfg whose verdict is
// v (datadir.InspectWith): from the store, its newest restorable revision and the cluster
// it records; from the data dir, its cluster and the record of the restore that built it;
// from cfg, the size of the initial cluster and the cluster a restore or a new member
// creates. etcdbr run decides with it; etcdbr validate shows what run would decide. It only
// reads.
//
// A store that cannot be read is reported in StartSurvey.StoreErr, with nothing read
// after it. A valid data dir that is an exact copy restored from this store is refused with
// CheckExactCopy's error, beside the survey so far.
func SurveyStart(ctx context.Context, cfg *embed.Config, store *snapstore.Store, v datadir.Verdict, lg *slog.Logger) (StartSurvey, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	sv := StartSurvey{Facts: StartFacts{Verdict: v, Members: clusterSize(cfg)}}
	facts := &sv.Facts
	listing, err := store.ListBackups(ctx)
	if err == nil {
		var ok bool
		facts.StoreCluster, ok, err = store.ClusterID(ctx)
		if !ok {
			facts.StoreCluster = ""
		}
	}
	if err != nil {
		sv.StoreErr = err
		return sv, nil
	}
	facts.StoreNewest = catalog.RestorableWindow(listing.Fulls, listing.Deltas).Newest.Revision
	sv.NewestFull = newestRevision(listing.Fulls)
	if v.State == datadir.StateValid || v.State == datadir.StateCorrupt {
		if id, err := datadir.ReadIDs(cfg.Dir, cfg.WalDir); err == nil {
			facts.DirCluster = id.ClusterID
		}
	}
	if facts.NewCluster, err = embedded.ClusterIDFor(cfg); err != nil {
		lg.Warn("cannot tell which cluster ID a restore would create", "err", err)
	}
	if v.State == datadir.StateValid {
		m, ok, err := datadir.ReadRestoredMarker(cfg.Dir)
		switch {
		case err != nil:
			lg.Warn("cannot read what the restore that built the data dir did", "err", err)
		case ok:
			if err := CheckExactCopy(cfg.Dir, m, store.URL()); err != nil {
				return sv, err
			}
			sv.Restored = &m
		}
	}
	return sv, nil
}

// CheckExactCopy refuses a data dir that m says is an exact copy restored from the store at
// storeURL (etcdbr restore --exact): its history is not the store's, so it must never back
// up into it, nor be restored over as if it were behind it.
func CheckExactCopy(dir string, m datadir.RestoredMarker, storeURL string) error {
	if !m.Exact || m.Source != storeURL {
		return nil
	}
	return fmt.Errorf("data dir %q is an exact copy of revision %d restored from this store (etcdbr restore --exact): "+
		"its history is not the store's, so it never backs up into it and is never restored over; "+
		"give it another --store (or move %s out of it to restore the store's newest point over it, the data dir kept aside)",
		dir, m.Revision, filepath.Join(dir, datadir.RestoredMarkerName))
}

// unbacked is Config.UnbackedRevisions, or its default.
func (c Config) unbacked() int64 {
	if c.UnbackedRevisions > 0 {
		return c.UnbackedRevisions
	}
	return catalog.DefaultUnbackedRevisions
}

// clusterSize counts the members in the initial cluster configuration.
func clusterSize(cfg *embed.Config) int {
	names := map[string]bool{}
	for _, part := range strings.Split(cfg.InitialCluster, ",") {
		if name, _, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
			names[name] = true
		}
	}
	return len(names)
}
