package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Why a restore while running is refused.
var (
	// ErrRestoreRunning: a restore runs already.
	ErrRestoreRunning = errors.New("a restore is already running")
	// ErrNotServing: etcd does not serve (it is starting, stopping, or being restored).
	ErrNotServing = errors.New("etcd is not serving")
	// ErrClusterMember: the member belongs to a cluster of several members, which must be
	// repaired from its peers, not from a backup.
	ErrClusterMember = errors.New("the member belongs to a cluster of several members")
)

// restoreJob is one restore while running. Its fields after done are guarded by the
// supervisor's mutex.
type restoreJob struct {
	id      int64
	trigger string
	target  catalog.Target
	done    chan struct{} // closed when it ended

	phase          RestorePhase
	started, ended time.Time
	err            error
	bump           uint64
	result         *RestoreResult
	fresh          catalog.Snapshot // the full snapshot taken after it
	warning        string
	storeRevision  int64                   // the newest revision in the store before the restore
	memberRevision int64                   // etcd's revision when it stopped
	cluster        string                  // the cluster ID of the member restored (etcd's when the restore was asked for)
	marker         *datadir.RestoredMarker // what the restore recorded in the new data dir
	intent         *catalog.Intent         // the cluster restore carried out (TriggerCluster), nil otherwise
	frozen         int64                   // etcd's revision when it was frozen before the final delta (0: it was not)
}

func (j *restoreJob) running() bool { return j.phase != PhaseSucceeded && j.phase != PhaseFailed }

// RestoreStatus describes a restore while running.
type RestoreStatus struct {
	ID      int64  `json:"id"`
	Trigger string `json:"trigger"` // request, corrupt
	// Target says what was asked for: "revision N", "time T" or "the latest point".
	Target         string     `json:"target"`
	TargetRevision int64      `json:"target_revision,omitempty"`
	TargetTime     *time.Time `json:"target_time,omitempty"`
	Phase          string     `json:"phase"`
	Running        bool       `json:"running"`
	Started        time.Time  `json:"started"`
	Ended          *time.Time `json:"ended,omitempty"`
	Error          string     `json:"error,omitempty"`
	Warning        string     `json:"warning,omitempty"`
	// MemberRevision is etcd's revision when it stopped, StoreRevision the newest revision
	// in the store then.
	MemberRevision int64 `json:"member_revision,omitempty"`
	StoreRevision  int64 `json:"store_revision,omitempty"`
	// Revision is the revision restored, RevisionTime when it was observed; DataRevision the
	// new data dir's revision after RevisionBump (marked compacted when not 0).
	Revision     int64      `json:"revision,omitempty"`
	RevisionTime *time.Time `json:"revision_time,omitempty"`
	DataRevision int64      `json:"data_revision,omitempty"`
	RevisionBump uint64     `json:"revision_bump,omitempty"`
	// Full is the full snapshot restored, Deltas how many deltas were replayed after it.
	Full   string `json:"full,omitempty"`
	Deltas int    `json:"deltas,omitempty"`
	// Excluded are objects that failed verification and were left out.
	Excluded []string `json:"excluded,omitempty"`
	// MovedAside is where the replaced data dir was moved (kept: delete it when no longer
	// needed).
	MovedAside string `json:"moved_aside,omitempty"`
	// FreshFull is the full snapshot taken after etcd started again.
	FreshFull string `json:"fresh_full,omitempty"`
}

func (j *restoreJob) statusLocked() RestoreStatus {
	r := RestoreStatus{
		ID: j.id, Trigger: j.trigger, Target: j.target.String(), TargetRevision: j.target.Revision,
		Phase: string(j.phase), Running: j.running(), Started: j.started.UTC(), Warning: j.warning,
		MemberRevision: j.memberRevision, StoreRevision: j.storeRevision, RevisionBump: j.bump, FreshFull: j.fresh.Key,
	}
	if !j.target.Time.IsZero() {
		t := j.target.Time.UTC()
		r.TargetTime = &t
	}
	if !j.ended.IsZero() {
		e := j.ended.UTC()
		r.Ended = &e
	}
	if j.err != nil {
		r.Error = j.err.Error()
	}
	if res := j.result; res != nil {
		t := res.Time.UTC()
		r.Revision, r.RevisionTime, r.DataRevision = res.Revision, &t, res.DataRevision
		r.Full, r.Deltas, r.MovedAside = res.Snapshot.Key, len(res.Deltas), res.MovedAside
		for _, x := range res.Excluded {
			r.Excluded = append(r.Excluded, x.Key)
		}
	}
	return r
}

// RequestRestore asks the running supervisor to restore the data dir to target (the zero
// Target: the newest point in the store) without the process exiting: it stops the backups
// (the final delta is uploaded) and etcd, restores (crash-safe; the old data dir is moved
// aside), starts etcd again, takes a fresh full snapshot and resumes the backups. A restore
// to a point before the newest revision in the store (or etcd's, if higher) bumps the
// revision past it and marks it compacted, so that revisions never repeat across histories.
//
// It checks first, from a listing of the store, that the target can be restored; then it
// returns at once with the restore's status, and the restore runs in Run's goroutine (see
// Status, WaitRestore). It refuses with ErrRestoreRunning, ErrNotServing or
// ErrClusterMember, or with the planner's error (wrapping catalog.ErrNoChain or
// ErrNoBackup) when the target cannot be restored.
func (s *Supervisor) RequestRestore(ctx context.Context, target catalog.Target) (RestoreStatus, error) {
	job, err := s.requestRestore(ctx, target, TriggerRequest)
	if err != nil {
		return RestoreStatus{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return job.statusLocked(), nil
}

// WaitRestore waits until the restore with the given ID ended (or ctx ends) and returns its
// status.
func (s *Supervisor) WaitRestore(ctx context.Context, id int64) (RestoreStatus, error) {
	s.mu.Lock()
	job := s.job
	s.mu.Unlock()
	if job == nil || job.id != id {
		return RestoreStatus{}, fmt.Errorf("no restore with id %d: only the last one is kept", id)
	}
	select {
	case <-job.done:
	case <-ctx.Done():
		return RestoreStatus{}, fmt.Errorf("wait for restore %d: %w", id, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return job.statusLocked(), nil
}

func (s *Supervisor) requestRestore(ctx context.Context, target catalog.Target, trigger string) (*restoreJob, error) {
	if err := target.Validate(); err != nil {
		return nil, err
	}
	if n := s.clusterMembers(); n > 1 {
		return nil, fmt.Errorf("%w (%d): a member is repaired from its peers, not from a backup: restart it with its data dir moved away "+
			"(or corrupt) and etcdbr rejoins it through etcd's learner path; restoring the whole cluster from a backup is etcdbr cluster restore (POST /v1/cluster-restore), "+
			"which every member carries out", ErrClusterMember, n)
	}
	if err := s.checkBusy(); err != nil {
		return nil, err
	}
	if err := s.checkRestorable(ctx, target); err != nil {
		return nil, err
	}
	s.mu.Lock()
	running := ""
	if s.etcd != nil {
		running = clusterID(s.etcd)
	}
	s.mu.Unlock()
	if _, err := s.claim.checkRestore(ctx, running); err != nil {
		return nil, err
	}
	return s.startRestore(target, trigger)
}

// startRestore hands a restore to Run, unless one runs or etcd does not serve.
func (s *Supervisor) startRestore(target catalog.Target, trigger string) (*restoreJob, error) {
	return s.startRestoreJob(target, trigger, nil)
}

// startRestoreJob is startRestore, for the cluster restore intent when not nil.
func (s *Supervisor) startRestoreJob(target catalog.Target, trigger string, intent *catalog.Intent) (*restoreJob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkBusyLocked(); err != nil {
		return nil, err
	}
	s.jobs++
	job := &restoreJob{id: s.jobs, trigger: trigger, target: target, done: make(chan struct{}),
		phase: PhaseStoppingBackups, started: time.Now(), intent: intent}
	if s.etcd != nil { // serving: checked above
		job.cluster = clusterID(s.etcd)
	}
	s.job = job
	s.restores <- job // never blocks: one job at a time, and Run takes it
	s.metrics.setRestorePhase(job.phase)
	s.lg.Warn("restore requested: stopping backups and etcd", "id", job.id, "trigger", trigger, "target", target.String())
	return job, nil
}

func (s *Supervisor) checkBusy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.checkBusyLocked()
}

func (s *Supervisor) checkBusyLocked() error {
	if s.job != nil && s.job.running() {
		return fmt.Errorf("%w (id %d, phase %s): wait for it to end (GET /v1/status)", ErrRestoreRunning, s.job.id, s.job.phase)
	}
	if s.state != StateServing {
		return fmt.Errorf("%w (state %s): try again once it serves", ErrNotServing, s.state)
	}
	return nil
}

// checkRestorable plans the restore from a listing of the store.
func (s *Supervisor) checkRestorable(ctx context.Context, target catalog.Target) error {
	fulls, deltas, err := s.listStore(ctx)
	if err != nil {
		return err
	}
	if len(fulls) == 0 {
		return fmt.Errorf("restore from %s: %w", s.cfg.Store.URL(), ErrNoBackup)
	}
	if _, err := catalog.PlanRestore(fulls, deltas, target, nil); err != nil {
		return fmt.Errorf("restore from %s: %w", s.cfg.Store.URL(), betweenHistories(ctx, s.cfg.Store, fulls, deltas, target, err))
	}
	return nil
}

// listStore lists the store's full snapshots and deltas.
func (s *Supervisor) listStore(ctx context.Context) (fulls, deltas []catalog.Snapshot, err error) {
	l, err := s.cfg.Store.ListBackups(ctx)
	if err != nil {
		s.metrics.storeErrors.WithLabelValues(storeOpList).Inc()
		s.health.storeResult(err)
		return nil, nil, err
	}
	s.health.storeResult(nil)
	return l.Fulls, l.Deltas, nil
}

// setPhase moves job to phase p.
func (s *Supervisor) setPhase(job *restoreJob, p RestorePhase) {
	s.mu.Lock()
	job.phase = p
	s.mu.Unlock()
	s.metrics.setRestorePhase(p)
	s.lg.Info("restore", "id", job.id, "phase", string(p))
}

// restoreWhileRunning stops the backups and etcd and rebuilds the data dir for job. etcd is
// to be started again by the caller, on the new data dir, or on the old one (left as it
// was) when the restore failed: job.err says which.
func (s *Supervisor) restoreWhileRunning(ctx context.Context, e *embedded.Etcd, b *backups, job *restoreJob) {
	s.setState(StateRestoring)
	var cause error
	switch {
	case job.intent != nil:
		// A cluster restore's point was fixed when it was recorded: the final delta would hold
		// only what it takes back, and waiting for it would keep etcd serving clients longer.
		cause = fmt.Errorf("cluster restore %s: no final delta: %w", job.intent.ID, backup.ErrSkipped)
	case job.trigger != TriggerCorrupt: // a CORRUPT alarm refuses writes already
		// Frozen (freeze.go) before the final delta, etcd acknowledges no write that the
		// final delta would miss: a restore of the newest point holds every acknowledged write.
		rev, err := freezeServer(ctx, e.Server())
		if err != nil {
			s.lg.Warn("restore: cannot make etcd refuse writes before the final delta; writes acknowledged while it is taken may be left in the old data dir only",
				"id", job.id, "err", err)
			break
		}
		s.mu.Lock()
		job.frozen = rev
		s.mu.Unlock()
		s.lg.Info("restore: etcd refuses writes from now on (frozen), so that the final delta holds every acknowledged write",
			"id", job.id, "revision", rev)
	}
	if err := b.stop(cause); err != nil {
		s.lg.Error("backups ended with an error", "err", err)
	}
	s.setPhase(job, PhaseStoppingEtcd)
	s.clearEtcd()
	e.Close()
	memberRev := e.Server().KV().Rev() // final: etcd is stopped

	s.setPhase(job, PhaseRestoring)
	var res RestoreResult
	var err error
	if job.intent != nil {
		var marker *datadir.RestoredMarker
		res, marker, err = s.restoreForIntent(ctx, *job.intent, memberRev)
		s.mu.Lock()
		job.memberRevision, job.bump, job.marker = memberRev, res.Bump, marker
		s.mu.Unlock()
	} else {
		res, err = s.restoreData(ctx, job, memberRev)
	}
	s.mu.Lock()
	if err != nil {
		job.err = err
	} else {
		job.result = &res
	}
	s.mu.Unlock()
	if err != nil {
		s.lg.Error("restore failed: etcd starts again on its data dir, which was left as it was", "id", job.id, "err", err)
	} else if res.MovedAside != "" {
		s.lg.Warn("the replaced data dir was moved aside and kept: it holds the data before the restore; delete it once you no longer need it",
			"path", res.MovedAside)
	}
	s.setPhase(job, PhaseStartingEtcd)
}

// restoreData restores job's target, bumping the revision past the newest one the store or
// etcd (at memberRev) ever held when the target is before it.
func (s *Supervisor) restoreData(ctx context.Context, job *restoreJob, memberRev int64) (RestoreResult, error) {
	fulls, deltas, err := s.listStore(ctx)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if len(fulls) == 0 {
		return RestoreResult{}, fmt.Errorf("restore from %s: %w", s.cfg.Store.URL(), ErrNoBackup)
	}
	follow, err := s.claim.checkRestore(ctx, job.cluster)
	if err != nil {
		return RestoreResult{}, err
	}
	plan, err := catalog.PlanRestore(fulls, deltas, job.target, nil)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore from %s: %w", s.cfg.Store.URL(), err)
	}
	storeRev := newestRevision(fulls, deltas)
	// etcd stopped: memberRev is the newest revision any client was served (the store's
	// newest cannot be higher, unless the store holds what another member served).
	served := max(storeRev, memberRev)
	s.mu.Lock()
	job.storeRevision, job.memberRevision = storeRev, memberRev
	s.mu.Unlock()
	if plan.MinRevision < served {
		s.lg.Info("restoring to a point before the newest revision clients were served: the restored data starts a new history, "+
			"its revision raised past that one and marked compacted, so that revisions never repeat and every watcher lists again",
			"target", job.target.String(), "store_revision", storeRev, "member_revision", memberRev)
	}
	opts := rebuild.RestoreOptions{
		Served: served,
		Marker: &datadir.RestoredMarker{Source: s.cfg.Store.URL(), Trigger: job.trigger},
	}
	// The restore plans from this listing: the store is listed once.
	res, err := restore(ctx, s.cfg.Store, s.cfg.Etcd, job.target, opts, s.lg, false, &catalog.Listing{Fulls: fulls, Deltas: deltas})
	s.learnDamage(ctx) // the restore may have found objects damaged, and recorded them
	if err != nil {
		return RestoreResult{}, err
	}
	s.mu.Lock()
	job.bump, job.marker = res.Bump, opts.Marker
	s.mu.Unlock()
	if follow != "" {
		s.claim.follow(ctx, follow)
	}
	return res, nil
}

// afterRestore finishes job once etcd serves again: after a successful restore it takes a
// fresh full snapshot of the restored member. It reports whether the full snapshot runner
// must take one at once (the fresh one failed).
func (s *Supervisor) afterRestore(ctx context.Context, e *embedded.Etcd, job *restoreJob) (takeFull bool) {
	s.mu.Lock()
	err, frozen := job.err, job.frozen
	s.mu.Unlock()
	if err != nil {
		if frozen > 0 {
			// etcd serves its old data dir again, frozen before the final delta: it takes writes again.
			if terr := thawServer(ctx, e.Server()); terr != nil {
				s.lg.Error("the restore failed and etcd serves its old data, but the freeze before the final delta cannot be lifted: "+
					"it refuses writes until etcdctl alarm disarm, or until etcdbr's next look for a cluster restore lifts it", "id", job.id, "err", terr)
			} else {
				s.lg.Info("the restore failed: etcd serves its old data and takes writes again (the freeze is lifted)", "id", job.id)
			}
		}
		s.finishRestore(job, err)
		return false
	}
	s.setPhase(job, PhaseFullSnapshot)
	start := time.Now()
	err = s.claim.claim(ctx, e, false) // before the first upload of the restored member
	s.mu.Lock()
	marker := job.marker
	s.mu.Unlock()
	if job.intent != nil {
		// A member of the restored cluster: its leader's full snapshot runner takes the fresh
		// full snapshot (fenced by its leadership, like every upload in a cluster).
		if err == nil && marker != nil && marker.NewHistory() {
			s.recordHistory(ctx, *marker)
		} else if err != nil {
			s.lg.Warn("the store is not claimed for the restored cluster yet; the full snapshot runner claims it again", "err", err)
		}
		s.finishRestore(job, nil)
		return true
	}
	if err == nil && marker != nil && marker.NewHistory() {
		s.recordHistory(ctx, *marker)
	}
	var snap catalog.Snapshot
	if err == nil {
		snap, err = backup.FullFromBackend(ctx, e.Server().Backend(), s.cfg.Store)
	}
	if err != nil {
		if ctx.Err() == nil {
			observer{s}.Failed(backup.Failure{Kind: catalog.KindFull, Op: backup.OpSnapshot, Reason: backup.ReasonOf(err), Err: err})
		}
		s.mu.Lock()
		job.warning = "the fresh full snapshot failed (the full snapshot runner retries it): " + err.Error()
		s.mu.Unlock()
		s.lg.Error("the full snapshot after the restore failed; the full snapshot runner retries it", "err", err)
		takeFull = true
	} else {
		observer{s}.Taken(backup.Taken{Snapshot: snap, Duration: time.Since(start), Trigger: "restore"})
		s.mu.Lock()
		job.fresh = snap
		s.mu.Unlock()
		s.lg.Info("full snapshot of the restored member taken", "object", snap.Key, "revision", snap.Revision)
	}
	s.finishRestore(job, nil)
	return takeFull
}

// finishRestore ends job with err (nil: it succeeded).
func (s *Supervisor) finishRestore(job *restoreJob, err error) {
	s.mu.Lock()
	if job.err == nil {
		job.err = err
	}
	job.ended = time.Now()
	result := "succeeded"
	job.phase = PhaseSucceeded
	if job.err != nil {
		job.phase, result = PhaseFailed, "failed"
		s.lastErr = &ErrorStatus{Component: "restore", Message: job.err.Error(), Time: job.ended.UTC()}
	}
	took := job.ended.Sub(job.started)
	s.mu.Unlock()
	s.metrics.setRestorePhase(job.phase)
	s.metrics.restores.WithLabelValues(job.trigger, result).Inc()
	s.metrics.restoreDuration.Observe(took.Seconds())
	close(job.done)
	if result == "succeeded" {
		s.lg.Info("restore done: etcd serves the restored data", "id", job.id, "duration", took.Round(time.Millisecond))
	} else {
		s.lg.Error("restore failed", "id", job.id, "err", job.err, "duration", took.Round(time.Millisecond))
	}
}
