package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
	"github.com/etcdbr/etcdbr/supervisor/clusterrestore"
)

// A whole-cluster restore (docs/cluster-restore.md) is an intent recorded in the store
// (RecordClusterRestore: etcdbr cluster restore, POST /v1/cluster-restore). Every member's
// etcdbr polls the store for it (watchIntents, every Config.ClusterRestorePoll, whatever
// state etcd is in), decides with clusterrestore.Decide, and carries the decision out here:
// a member that serves hands a restore job to Run's loop (the live restore's path: backups
// and etcd stopped, the data dir rebuilt, etcd started again); a member that waits for its
// peers at start, or whose etcd waits for a quorum to start, is interrupted and restores
// before etcd starts. The rebuild is the one every restore uses (Restore), with the intent's
// point, its cluster token, and its bound of the revisions served, so that every member
// builds the same data dir but for its own member ID.

// DefaultClusterRestorePoll is how often a member reads the store for a cluster restore.
const DefaultClusterRestorePoll = 2 * time.Second

// Failpoints of a cluster restore for crash tests (ETCDBR_FAILPOINT, see failpoint): the
// process kills itself with SIGKILL once etcd stopped and the restore is about to rebuild the
// data dir, or once the rebuilt data dir is in place and before etcd starts on it. Never set
// them outside tests.
const (
	FailpointClusterRestoreBeforeRebuild = "cluster-restore-before-rebuild"
	FailpointClusterRestoreAfterRebuild  = "cluster-restore-after-rebuild"
)

// intentTimeout bounds one read or write of an intent's records.
const intentTimeout = 10 * time.Second

// errIntentSeen is the cause of a wait cut short by a cluster restore.
var errIntentSeen = errors.New("a cluster restore is active")

// intentStore is the part of the store a member's handling of cluster restores uses: the
// seam between the decisions and the store.
type intentStore interface {
	ActiveIntent(ctx context.Context) (catalog.Intent, bool, error)
	FreezeNotice(ctx context.Context) (catalog.FreezeNotice, bool, error)
	IntentProgress(ctx context.Context, id string) ([]catalog.MemberProgress, error)
	WriteIntentProgress(ctx context.Context, id string, p catalog.MemberProgress) error
	EndIntent(ctx context.Context, end catalog.IntentEnd) error
	Latest(ctx context.Context, kind catalog.Kind) (catalog.Snapshot, bool, error)
}

var _ intentStore = (*snapstore.Store)(nil)

// ClusterRestoreRequest is what a person asks of a cluster restore.
type ClusterRestoreRequest struct {
	// Target is the point (the zero Target: the newest point in the store).
	Target catalog.Target
	// Deadline is how long the members have to finish (0: catalog.DefaultIntentDeadline).
	Deadline time.Duration
	// Unbacked bounds the revisions the cluster may have served beyond the store's newest
	// (0: catalog.DefaultUnbackedRevisions): the restored revision is raised past the
	// store's newest plus this.
	Unbacked int64
	// By says who asks (default: host and process).
	By string
	// Freezer, when set, freezes the cluster before the intent is recorded (freeze.go), so
	// that no write is accepted between the intent and its end: the intent then waits (up to
	// frozenBackupWait) until the store holds every write before the freeze, and a target
	// of the newest point is the frozen revision. A cluster that cannot be frozen (no quorum)
	// accepts no write either: the intent is recorded all the same.
	Freezer Freezer
}

// RecordClusterRestore resolves req's target against the store and records the intent as
// the store's active one. It refuses (wrapping snapstore.ErrIntentRunning) while another
// intent runs, and when the target cannot be restored (the planner's error). Every member
// carries the intent out once it sees it.
func RecordClusterRestore(ctx context.Context, store *snapstore.Store, req ClusterRestoreRequest) (catalog.Intent, error) {
	recorded := false
	if err := req.Target.Validate(); err != nil {
		return catalog.Intent{}, err
	}
	by := req.By
	if by == "" {
		host, _ := os.Hostname()
		by = fmt.Sprintf("%s pid %d", host, os.Getpid())
	}
	var frozen int64
	if req.Freezer != nil {
		_, active, err := store.ActiveIntent(ctx)
		if err != nil {
			return catalog.Intent{}, err
		}
		if !active { // a second intent is refused below (CreateIntent), with no freeze of its own
			rev, finish, err := freezeBeforeIntent(ctx, store, req.Freezer, by)
			if err != nil {
				return catalog.Intent{}, err
			}
			frozen = rev
			defer func() { finish(recorded) }()
		}
	}
	l, err := store.ListBackups(ctx)
	if err != nil {
		return catalog.Intent{}, err
	}
	if len(l.Fulls) == 0 {
		return catalog.Intent{}, fmt.Errorf("cluster restore from %s: %w", store.URL(), ErrNoBackup)
	}
	plan, err := catalog.PlanRestore(l.Fulls, l.Deltas, req.Target, nil)
	if err != nil {
		return catalog.Intent{}, fmt.Errorf("cluster restore from %s: %w", store.URL(), betweenHistories(ctx, store, l.Fulls, l.Deltas, req.Target, err))
	}
	old, _, err := store.ClusterID(ctx)
	if err != nil {
		return catalog.Intent{}, err
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return catalog.Intent{}, fmt.Errorf("cluster restore ID: %w", err)
	}
	now := time.Now().UTC()
	id := now.Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:])
	deadline := req.Deadline
	if deadline <= 0 {
		deadline = catalog.DefaultIntentDeadline
	}
	unbacked := req.Unbacked
	if unbacked <= 0 {
		unbacked = catalog.DefaultUnbackedRevisions
	}
	in := catalog.Intent{
		Version: 1, ID: id, Created: now, Deadline: now.Add(deadline), Asked: req.Target.String(),
		Served: newestRevision(l.Fulls, l.Deltas) + unbacked, Token: "etcdbr-restored-" + id, OldCluster: old, By: by,
	}
	if req.Target.Time.IsZero() {
		in.Revision = plan.Revision // the newest point, or the revision asked for
		if frozen > 0 && req.Target.Revision == 0 {
			in.Revision = frozen // the newest point: every write accepted, and nothing after
		}
	} else {
		in.Time = req.Target.Time.UTC()
	}
	in.FrozenRevision = frozen
	if err := store.CreateIntent(ctx, in); err != nil {
		return catalog.Intent{}, err
	}
	recorded = true
	return in, nil
}

// RequestClusterRestore records a whole-cluster restore of target in the member's store
// (RecordClusterRestore, with the default deadline and unbacked bound); by says who asks.
func (s *Supervisor) RequestClusterRestore(ctx context.Context, target catalog.Target, by string) (catalog.Intent, error) {
	req := ClusterRestoreRequest{Target: target, Unbacked: s.cfg.UnbackedRevisions, By: by}
	s.mu.Lock()
	if s.etcd != nil && s.state == StateServing {
		req.Freezer = memberFreezer{s.etcd.Server()}
	}
	s.mu.Unlock()
	return RecordClusterRestore(ctx, s.cfg.Store, req)
}

// repairCommand is the command that restores the whole cluster from this member's store.
func (s *Supervisor) repairCommand() string {
	return "etcdbr cluster restore --store " + s.cfg.Store.URL()
}

// intentView is what this member last read and decided about cluster restores, for the
// status. Guarded by the supervisor's mutex; replaced whole by watchIntents.
type intentView struct {
	intent   *catalog.Intent
	progress []catalog.MemberProgress
	action   clusterrestore.Action
	read     time.Time
	err      string
}

// intentData is what the cluster restore that built this member's data dir made of it.
type intentData struct {
	id           string // "" none
	dataRevision int64
	cluster      string
	movedAside   string
}

// watchIntents polls the store for a cluster restore until ctx ends, and acts on it.
func (s *Supervisor) watchIntents(ctx context.Context) {
	period := s.cfg.ClusterRestorePoll
	if period <= 0 {
		period = DefaultClusterRestorePoll
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	var last string
	var auto autoWatch
	for {
		a, in := s.checkIntent(ctx)
		if in != "" || a.Kind != clusterrestore.Nothing {
			if key := in + "|" + a.Kind.String() + "|" + a.Reason; key != last {
				last = key
				s.lg.Info("cluster restore", "intent", in, "action", a.Kind.String(), "reason", a.Reason)
			}
		}
		if s.cfg.AutoRestoreAfter > 0 {
			s.autoRestore(ctx, &auto, in != "")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// autoWatch is what the automatic restore remembers between looks: since when the quorum is
// lost, and the store's newest revision then.
type autoWatch struct {
	lostSince   time.Time
	storeAtLoss int64
	said        string
}

// autoRestore records a cluster restore of the store's newest point when the quorum has been
// lost for Config.AutoRestoreAfter and the store received nothing since
// (clusterrestore.DecideAuto).
func (s *Supervisor) autoRestore(ctx context.Context, w *autoWatch, active bool) {
	s.mu.Lock()
	serving := s.state == StateServing && s.etcd != nil
	v := s.cluster.view(s.etcd)
	s.mu.Unlock()
	f := clusterrestore.AutoFacts{After: s.cfg.AutoRestoreAfter, Now: time.Now(), Serving: serving && v.probe != nil,
		Quorum: v.quorum, Active: active}
	if f.Serving && !f.Quorum {
		f.LostSince = v.quorumSince
		rctx, cancel := context.WithTimeout(ctx, intentTimeout)
		newest, err := s.cfg.Store.Newest(rctx)
		cancel()
		if err != nil {
			s.lg.Warn("automatic cluster restore: cannot read the store's newest revision", "err", err)
			return
		}
		if !w.lostSince.Equal(f.LostSince) {
			w.lostSince, w.storeAtLoss = f.LostSince, newest
		}
		f.StoreAtLoss, f.StoreNow = w.storeAtLoss, newest
		if newest != w.storeAtLoss {
			w.storeAtLoss = newest // a new baseline: the bound counts again from a still store
			w.lostSince = f.Now
			f.LostSince = f.Now
		}
	}
	ok, why := clusterrestore.DecideAuto(f)
	if f.Serving && !f.Quorum && why != w.said {
		w.said = why
		s.lg.Warn("automatic cluster restore", "restore", ok, "reason", why)
	}
	if !ok {
		return
	}
	in, err := RecordClusterRestore(ctx, s.cfg.Store, ClusterRestoreRequest{Unbacked: s.cfg.UnbackedRevisions,
		By: "etcdbr of member " + s.cfg.Etcd.Name + ", automatically: " + why})
	if err != nil {
		s.lg.Error("automatic cluster restore: cannot record the intent", "err", err)
		return
	}
	s.lg.Error("automatic cluster restore recorded: every member restores the store's newest point", "intent", in.ID,
		"target", in.Target().String(), "reason", why)
}

// memberNames are the names in the configured membership (etcd's --initial-cluster).
func (s *Supervisor) memberNames() []string {
	var names []string
	for _, part := range strings.Split(s.cfg.Etcd.InitialCluster, ",") {
		if name, _, ok := strings.Cut(strings.TrimSpace(part), "="); ok && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

// checkIntent reads the store once, decides, and acts; it returns the decision and the
// active intent's ID ("" none).
func (s *Supervisor) checkIntent(ctx context.Context) (clusterrestore.Action, string) {
	var st intentStore = s.cfg.Store
	rctx, cancel := context.WithTimeout(ctx, intentTimeout)
	defer cancel()
	in, ok, err := st.ActiveIntent(rctx)
	if err != nil {
		s.mu.Lock()
		s.intents.err, s.intents.read = err.Error(), time.Now()
		s.mu.Unlock()
		return clusterrestore.Action{}, ""
	}
	s.mu.Lock()
	f := clusterrestore.Facts{Now: time.Now(), DataIntent: s.intentData.id, Serving: s.state == StateServing && s.etcd != nil,
		Self: s.cfg.Etcd.Name, Members: s.memberNames()}
	state, waiting := s.state, s.cancelWait
	frozen := f.Serving && hasFreeze(s.etcd.Server().Alarms())
	s.mu.Unlock()
	if frozen {
		tf := clusterrestore.ThawFacts{Frozen: true, DataIntent: f.DataIntent, Now: f.Now}
		if ok {
			tf.Intent = &in
		} else if n, found, err := st.FreezeNotice(rctx); err != nil {
			tf.Notice = &catalog.FreezeNotice{Until: f.Now.Add(time.Hour)} // unknown: keep it until the store answers
		} else if found {
			tf.Notice = &n
		}
		if thaw, why := clusterrestore.DecideThaw(tf); thaw {
			s.thawFor(ctx, in.ID, why)
		}
	}
	var progress []catalog.MemberProgress
	if ok {
		f.Intent = &in
		// The progress is read on every look while an intent is active (one listing of its
		// records), for the status; the newest full snapshot only once it may end it.
		progress, err = st.IntentProgress(rctx, in.ID)
		if err == nil && f.DataIntent == in.ID && f.Serving {
			var full catalog.Snapshot
			full, _, err = st.Latest(rctx, catalog.KindFull)
			f.NewestFull = full.Revision
		}
		f.Progress = progress
		if err != nil {
			s.lg.Warn("cluster restore: cannot read the members' progress", "intent", in.ID, "err", err)
		}
	}
	a := clusterrestore.Decide(f)
	view := intentView{progress: progress, action: a, read: time.Now()}
	if ok {
		view.intent = &in
	}
	s.mu.Lock()
	if view.progress == nil && ok && s.intents.intent != nil && s.intents.intent.ID == in.ID {
		view.progress = s.intents.progress
	}
	s.intents = view
	s.mu.Unlock()
	s.metrics.setClusterRestore(ok, view.progress)
	switch a.Kind {
	case clusterrestore.Restore:
		switch {
		case state == StateServing:
			s.freezeForIntent(ctx, in)
			s.startIntentRestore(ctx, in)
		case waiting != nil: // waiting for peers, or for a quorum to start etcd
			waiting(errIntentSeen)
		}
	case clusterrestore.ReportServing:
		s.reportIntent(ctx, in.ID, catalog.PhaseServing, nil)
	case clusterrestore.Finish:
		full, _, err := st.Latest(rctx, catalog.KindFull)
		if err == nil {
			err = st.EndIntent(rctx, catalog.IntentEnd{ID: in.ID, Outcome: catalog.OutcomeDone, Ended: time.Now().UTC(), Reason: a.Reason, Full: full.Key})
		}
		if err != nil {
			s.lg.Warn("cluster restore: cannot record that it is done; trying again", "intent", in.ID, "err", err)
		} else {
			s.lg.Info("cluster restore done: every member serves the restored data", "intent", in.ID, "full", full.Key)
		}
	case clusterrestore.Abandon:
		if err := st.EndIntent(rctx, catalog.IntentEnd{ID: in.ID, Outcome: catalog.OutcomeAbandoned, Ended: time.Now().UTC(), Reason: a.Reason}); err != nil {
			s.lg.Warn("cluster restore: cannot record that it is abandoned; trying again", "intent", in.ID, "err", err)
		} else {
			s.lg.Warn("cluster restore abandoned", "intent", in.ID, "reason", a.Reason)
			if frozen {
				s.thawFor(ctx, in.ID, "the cluster restore was abandoned: the cluster goes on as it was")
			}
		}
	}
	return a, in.ID
}

// reportIntent writes this member's progress with the intent id at phase (failure: why it
// failed); a store that fails is logged, and the next poll writes again.
func (s *Supervisor) reportIntent(ctx context.Context, id string, phase catalog.MemberPhase, failure error) {
	s.mu.Lock()
	d := s.intentData
	stopped := s.intentStopped
	cluster := ""
	if s.etcd != nil && s.state == StateServing {
		cluster = clusterID(s.etcd)
	}
	s.mu.Unlock()
	p := catalog.MemberProgress{Member: s.cfg.Etcd.Name, Phase: phase, Updated: time.Now().UTC(),
		InitialCluster: s.cfg.Etcd.InitialCluster, StoppedRevision: stopped}
	if fz := s.freezeOf(id); fz.revision > 0 {
		p.FrozenRevision, p.Frozen = fz.revision, fz.at
	}
	if d.id == id {
		p.DataRevision, p.Cluster, p.MovedAside = d.dataRevision, d.cluster, d.movedAside
		if cluster != "" {
			p.Cluster = cluster
		}
	}
	if failure != nil {
		p.Error = failure.Error()
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), intentTimeout)
	defer cancel()
	if err := s.cfg.Store.WriteIntentProgress(wctx, id, p); err != nil {
		s.lg.Warn("cluster restore: cannot record this member's progress", "intent", id, "phase", string(phase), "err", err)
	}
}

// startIntentRestore hands the cluster restore in to Run's loop (this member serves): the
// backups and etcd stop, the data dir is rebuilt, etcd starts again.
func (s *Supervisor) startIntentRestore(ctx context.Context, in catalog.Intent) {
	if err := s.checkBusy(); err != nil {
		s.lg.Debug("cluster restore: cannot start yet; trying again at the next look", "intent", in.ID, "err", err)
		return
	}
	s.reportIntent(ctx, in.ID, catalog.PhaseSeen, nil)
	if _, err := s.startRestoreJob(in.Target(), TriggerCluster, &in); err != nil {
		s.lg.Warn("cluster restore: cannot start yet; trying again at the next look", "intent", in.ID, "err", err)
	}
}

// restoreForIntent rebuilds the data dir (etcd is stopped) for the cluster restore in:
// in's point, with in's cluster token and the configured membership, its revision raised
// past in.Served and marked compacted (the same on every member). stopped is the old
// etcd's revision when it stopped (0: it did not run). The old data dir is moved aside and
// kept.
func (s *Supervisor) restoreForIntent(ctx context.Context, in catalog.Intent, stopped int64) (RestoreResult, *datadir.RestoredMarker, error) {
	s.mu.Lock()
	s.intentStopped = stopped
	s.mu.Unlock()
	s.reportIntent(ctx, in.ID, catalog.PhaseRestoring, nil)
	cfg := *s.cfg.Etcd
	cfg.InitialClusterToken = in.Token
	cfg.ClusterState = "new"
	marker := &datadir.RestoredMarker{Source: s.cfg.Store.URL(), Trigger: TriggerCluster, ClusterRestore: in.ID}
	opts := rebuild.RestoreOptions{Served: in.Served, Marker: marker}
	s.lg.Warn("cluster restore: rebuilding this member's data dir; the old one is moved aside and kept",
		"intent", in.ID, "target", in.Target().String(), "token", in.Token, "stopped_revision", stopped)
	fail := func(err error) (RestoreResult, *datadir.RestoredMarker, error) {
		s.reportIntent(ctx, in.ID, catalog.PhaseFailed, err)
		return RestoreResult{}, nil, err
	}
	if _, err := rebuild.RecoverInterruptedRestore(cfg.Dir, cfg.WalDir, s.lg); err != nil {
		return fail(fmt.Errorf("finish an interrupted restore of %q: %w", cfg.Dir, err))
	}
	failpoint(FailpointClusterRestoreBeforeRebuild)
	newCluster, err := embedded.ClusterIDFor(&cfg)
	if err != nil {
		return fail(fmt.Errorf("cluster restore %s: the restored cluster's ID: %w", in.ID, err))
	}
	res, err := Restore(ctx, s.cfg.Store, &cfg, in.Target(), opts, s.lg)
	if err != nil {
		return fail(fmt.Errorf("cluster restore %s: %w", in.ID, err))
	}
	if in.OldCluster != "" && in.OldCluster != newCluster {
		s.claim.reclaimAt(in.OldCluster) // the first claim of the restored etcd moves the store's record
	}
	s.mu.Lock()
	s.intentData = intentData{id: in.ID, dataRevision: res.DataRevision, cluster: newCluster, movedAside: res.MovedAside}
	s.mu.Unlock()
	s.reportIntent(ctx, in.ID, catalog.PhaseRestored, nil)
	failpoint(FailpointClusterRestoreAfterRebuild)
	s.lg.Warn("cluster restore: this member's data dir is restored; etcd starts and waits for its peers",
		"intent", in.ID, "revision", res.Revision, "data_revision", res.DataRevision, "bump", res.Bump,
		"cluster", newCluster, "moved_aside", res.MovedAside)
	return res, marker, nil
}

// intentAtStart looks for a cluster restore before etcd starts (at start, or after a wait
// for the peers or for a quorum was cut short by one). handled reports that the data dir is
// the intent's (restored now, or before a restart): etcd starts on it as it is, without
// asking the peers. history is the restore's marker (the history to record, and a full
// snapshot to take at once on the leader). A rebuild that fails is tried again, with
// backoff, for as long as the intent is active; err is only ctx's.
func (s *Supervisor) intentAtStart(ctx context.Context) (history *datadir.RestoredMarker, handled bool, err error) {
	retry := backoff.Backoff{Min: time.Second, Max: 30 * time.Second, Jitter: true}
	for {
		rctx, cancel := context.WithTimeout(ctx, intentTimeout)
		in, ok, err := s.cfg.Store.ActiveIntent(rctx)
		cancel()
		if err != nil {
			s.lg.Warn("cannot read the store for a cluster restore; going on (the store is read again while etcd runs)", "err", err)
			return nil, false, nil
		}
		s.mu.Lock()
		f := clusterrestore.Facts{Now: time.Now(), DataIntent: s.intentData.id, Self: s.cfg.Etcd.Name, Members: s.memberNames()}
		s.mu.Unlock()
		if ok {
			f.Intent = &in
		}
		a := clusterrestore.Decide(f)
		switch {
		case a.Kind == clusterrestore.Restore:
			s.lg.Info("cluster restore", "intent", in.ID, "action", a.Kind.String(), "reason", a.Reason)
			_, marker, err := s.restoreForIntent(ctx, in, 0)
			if err == nil {
				return marker, true, nil
			}
			wait := retry.Next()
			s.lg.Error("cluster restore: this member's rebuild failed; trying again", "intent", in.ID, "err", err, "in", wait)
			if err := backoff.Sleep(ctx, wait); err != nil {
				return nil, true, fmt.Errorf("cluster restore %s: %w", in.ID, err)
			}
			continue
		case a.Kind == clusterrestore.Abandon:
			s.checkIntent(ctx) // records it
		case ok && f.DataIntent == in.ID:
			s.lg.Info("cluster restore: this member's data dir is already the restored one; etcd starts on it", "intent", in.ID)
			if in.OldCluster != "" {
				s.claim.reclaimAt(in.OldCluster) // in case no member moved the store's record yet
			}
			if m, ok, err := datadir.ReadRestoredMarker(s.cfg.Etcd.Dir); err == nil && ok && m.NewHistory() {
				return &m, true, nil // recorded again (idempotent); the leader takes the full snapshot at once
			}
			return nil, true, nil
		}
		return nil, false, nil
	}
}

// leaveReplacedCluster moves the data dir aside (kept) when it holds a member of a cluster
// that a restore replaced (the store's cluster record lists the dir's cluster among the
// previous ones): a member of several that was down while the others restored the cluster
// without it. As a member with no data it then joins the restored cluster through etcd's
// learner path (its entry in the restored membership, which it never started, is joined).
// It returns the new verdict and whether it moved the dir.
func (s *Supervisor) leaveReplacedCluster(ctx context.Context, v datadir.Verdict, members int) (datadir.Verdict, bool) {
	if members < 2 || len(s.cfg.Cluster.Endpoints) == 0 || (v.State != datadir.StateValid && v.State != datadir.StateCorrupt) {
		return v, false
	}
	ids, err := datadir.ReadIDs(s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir)
	if err != nil || ids.ClusterID == "" {
		return v, false
	}
	rctx, cancel := context.WithTimeout(ctx, intentTimeout)
	rec, ok, err := s.cfg.Store.ClusterRecord(rctx)
	cancel()
	if err != nil || !ok || !replacedCluster(ids.ClusterID, rec) {
		return v, false
	}
	aside, err := datadir.MoveAside(s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir, time.Now(), s.lg)
	if err != nil {
		s.lg.Error("the data dir holds a member of a cluster that a restore replaced, and cannot be moved aside", "err", err)
		return v, false
	}
	s.lg.Warn("the data dir holds a member of a cluster that a restore replaced while this member was away: moved aside (kept); "+
		"this member joins the restored cluster as a member with no data", "data_cluster", ids.ClusterID, "store_cluster", rec.ClusterID,
		"moved_aside", aside)
	return datadir.InspectWith(ctx, s.cfg.Etcd.Dir, s.cfg.Etcd.WalDir, datadir.InspectOptions{Depth: s.cfg.Validation}), true
}

// replacedCluster reports whether the store's record says that cluster was replaced by
// another one (a restore created it).
func replacedCluster(cluster string, rec snapstore.ClusterRecord) bool {
	if rec.ClusterID == cluster {
		return false
	}
	for _, p := range rec.Previous {
		if p.ClusterID == cluster {
			return true
		}
	}
	return false
}

// readDataIntent remembers which cluster restore built the data dir (its marker).
func (s *Supervisor) readDataIntent() {
	m, ok, err := datadir.ReadRestoredMarker(s.cfg.Etcd.Dir)
	if err != nil || !ok || m.ClusterRestore == "" {
		return
	}
	s.mu.Lock()
	s.intentData = intentData{id: m.ClusterRestore, dataRevision: m.DataRevision}
	s.mu.Unlock()
}

// setWaiting records how to cut short the wait under way (nil: none).
func (s *Supervisor) setWaiting(cancel context.CancelCauseFunc) {
	s.mu.Lock()
	s.cancelWait = cancel
	s.mu.Unlock()
}
