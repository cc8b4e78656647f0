package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/internal/backoff"
)

// The bounds of one defragmentation.
const (
	// defragTimeout bounds the Defragment request. etcd does not stop a defrag that began
	// when its caller goes away, so the request is not cancelled when etcdbr stops either:
	// a stop (SIGTERM, a restore) waits for the defrag in flight, and no restore ever
	// overlaps one.
	defragTimeout = 30 * time.Minute
	// defragCatchUpTimeout bounds the wait, after a member's defrag, until it answers again
	// and has applied what the leader had committed by then; the next member waits for it.
	defragCatchUpTimeout = 2 * time.Minute
	// defragPoll is how often that wait asks.
	defragPoll = 100 * time.Millisecond
	// Waits after a failed defrag of a member before it is tried again.
	defragRetryMin = 5 * time.Minute
	defragRetryMax = 2 * time.Hour
)

// defragCluster is the I/O the defragmentation needs: what every member answers now, and
// the defrag of one member. etcdDefrag is the real one; tests give their own.
type defragCluster interface {
	// view asks every member of the membership for its status, and says what this process
	// does meanwhile (defragView).
	view(ctx context.Context) (defragView, error)
	// defragment defragments member id and returns once etcd finished.
	defragment(ctx context.Context, id uint64) error
}

// etcdDefrag is the defragCluster of one serving etcd: the membership is its etcd's, and
// every member (this one too) is asked through its client URLs with etcd's own client TLS
// settings, as the cluster prober asks them.
//
// startDefrag creates it with the defragger; its clients are closed when the defragger
// stops. Its fields are set at creation and read-only after (memberClients guards itself).
type etcdDefrag struct {
	s       *Supervisor
	e       *embedded.Etcd
	clients *memberClients
}

var _ defragCluster = (*etcdDefrag)(nil)

// view implements defragCluster.
func (d *etcdDefrag) view(ctx context.Context) (defragView, error) {
	srv := d.e.Server()
	if srv.Leader() != srv.MemberID() {
		// Only the leader's etcdbr defragments: the others ask no member.
		return defragView{Self: uint64(srv.MemberID()), Leader: uint64(srv.Leader())}, ctx.Err()
	}
	members := srv.Cluster().Members()
	v := defragView{Self: uint64(srv.MemberID()), Restoring: d.s.restoring(), Members: make([]defragMember, len(members))}
	var wg sync.WaitGroup
	for i, m := range members {
		v.Members[i] = defragMember{ID: uint64(m.ID), Name: m.Name, Learner: m.IsLearner}
		if len(m.ClientURLs) == 0 {
			v.Members[i].Err = "it has no client URL: its etcd has not started yet"
			continue
		}
		wg.Go(func() {
			dm := &v.Members[i]
			cli, err := d.clients.client(m)
			if err != nil {
				dm.Err = err.Error()
				return
			}
			sctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
			defer cancel()
			resp, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Status(sctx, &pb.StatusRequest{})
			if err != nil {
				dm.Answered = answeredWithError(err)
				dm.Err = strings.TrimPrefix(err.Error(), "rpc error: ")
				return
			}
			dm.Answered, dm.Leader = true, resp.Leader
			dm.DBSize, dm.DBInUse = resp.DbSize, resp.DbSizeInUse
			dm.Committed, dm.Applied = resp.RaftIndex, resp.RaftAppliedIndex
		})
	}
	wg.Wait()
	d.clients.forget(members)
	// The leader as this member knows it at the end: a member that answered before an
	// election names the old one, and the check waits for the next look.
	v.Leader = uint64(srv.Leader())
	return v, ctx.Err()
}

// defragment implements defragCluster.
func (d *etcdDefrag) defragment(ctx context.Context, id uint64) error {
	m := d.e.Server().Cluster().Member(types.ID(id))
	if m == nil {
		return fmt.Errorf("member %x is no longer in the cluster", id)
	}
	cli, err := d.clients.client(m)
	if err != nil {
		return err
	}
	if _, err := pb.NewMaintenanceClient(cli.ActiveConnection()).Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		return fmt.Errorf("defragment %s (%s): %w", memberName(m), strings.Join(m.ClientURLs, ","), err)
	}
	return nil
}

// restoring reports whether a restore of this member runs (or was asked for).
func (s *Supervisor) restoring() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.job != nil && s.job.running()
}

// startDefrag starts the defragmentation of e's cluster: every period, while this member
// leads (a single member always does), until the returned stop is called. stop waits for a
// defrag in flight to end (etcd does not stop one halfway). Run starts it each time etcd
// serves and stops it before etcd stops, and before a restore.
func (s *Supervisor) startDefrag(ctx context.Context, e *embedded.Etcd) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	clients := newMemberClients(s.clientTLS, s.clientAutoTLS)
	d := newDefragger(*s.cfg.Defrag, &etcdDefrag{s: s, e: e, clients: clients}, &s.backendReads, s.metrics.defrag, s.lg)
	d.failed = func(err error) { s.recordError("defrag", err) }
	var wg sync.WaitGroup
	wg.Go(func() {
		defer clients.close()
		d.run(ctx)
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// defragger defragments the members of one etcd's cluster while this member leads: it
// checks them every period (decideDefrag) and, for each member due, defragments it and
// waits until it caught up before it looks at the next. startDefrag creates and starts it
// (run, on a goroutine of its own) and stops it; every field is that goroutine's alone (the
// metrics and the hold are safe for concurrent use).
type defragger struct {
	// Set by newDefragger, read-only after.
	cfg     DefragConfig
	cluster defragCluster
	// hold is held for reading while a full snapshot reads this member's db; the
	// defragger takes it for writing (TryLock) around a defrag of this member, so that
	// neither waits for the other with writes blocked.
	hold    tryLocker
	metrics *defragMetrics
	log     *slog.Logger
	failed  func(error) // told of each failed defrag (nil: nothing)
	now     func() time.Time
	poll    time.Duration // how often the wait after a defrag asks (defragPoll)

	// mem is what decideDefrag needs of the checks before: the members the current
	// scheduled round has yet to defragment, the members held back after a failure, and
	// every member's bytes in use at the previous check. nextRound is when the schedule
	// fires next (zero: no schedule, or not computed yet); retry are the backoffs of the
	// members whose defrag failed.
	mem       defragMemory
	nextRound time.Time
	retry     map[uint64]*backoff.Backoff
	// skipped is the last skip logged (reason and member), so that a skip repeated every
	// period is logged once.
	skipped string
}

// tryLocker is the part of a sync.RWMutex the defragger takes for writing.
type tryLocker interface {
	TryLock() bool
	Unlock()
}

var _ tryLocker = (*sync.RWMutex)(nil)

// newDefragger returns a defragger of cluster with cfg.
func newDefragger(cfg DefragConfig, cluster defragCluster, hold tryLocker, m *defragMetrics, lg *slog.Logger) *defragger {
	if cfg.Period <= 0 {
		cfg.Period = DefaultDefragPeriod
	}
	return &defragger{cfg: cfg, cluster: cluster, hold: hold, metrics: m, log: lg.With("component", "defrag"), now: time.Now,
		poll: defragPoll, retry: map[uint64]*backoff.Backoff{},
		mem: defragMemory{Round: map[uint64]bool{}, NotBefore: map[uint64]time.Time{}, InUse: map[uint64]int64{}}}
}

// run checks at once and then every period until ctx ends.
func (d *defragger) run(ctx context.Context) {
	sched := ""
	if d.cfg.Schedule != nil {
		sched = d.cfg.Schedule.String()
	}
	d.log.Info("members are defragmented when their free space passes the threshold", "min_free_bytes", d.cfg.MinFree,
		"min_free_ratio", d.cfg.MinFreeRatio, "schedule", sched, "check_period", d.cfg.Period)
	t := time.NewTicker(d.cfg.Period)
	defer t.Stop()
	for {
		d.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check defragments the members that are due, one after the other, while the cluster lets
// it; it returns when none is due, one must wait, or a defrag failed.
func (d *defragger) check(ctx context.Context) {
	fire := false
	if d.cfg.Schedule != nil {
		now := d.now()
		switch {
		case d.nextRound.IsZero():
			d.nextRound = d.cfg.Schedule.Next(now)
		case !now.Before(d.nextRound):
			fire, d.nextRound = true, d.cfg.Schedule.Next(now)
		}
	}
	for ctx.Err() == nil {
		v, err := d.cluster.view(ctx)
		if err != nil {
			return // stopping
		}
		if v.Leader == 0 || v.Leader != v.Self {
			clear(d.mem.Round) // the leader's etcdbr runs its own rounds
			clear(d.mem.InUse)
			d.skipped = ""
			return
		}
		if fire {
			fire = false
			for _, m := range v.Members {
				d.mem.Round[m.ID] = true
			}
			d.log.Info("the defragmentation schedule fired: every member is defragmented, followers first, the leader last",
				"members", len(v.Members))
		}
		step := decideDefrag(v, d.cfg, d.mem, d.now())
		held := false
		if step.Kind == defragRun && step.Member.ID == v.Self {
			if held = d.hold.TryLock(); !held {
				v.Snapshotting = true
				step = decideDefrag(v, d.cfg, d.mem, d.now())
			}
		}
		d.remember(v)
		switch step.Kind {
		case defragNone:
			d.skipped = ""
			return
		case defragSkip:
			d.metrics.skipped.WithLabelValues(step.Skip).Inc()
			if key := fmt.Sprintf("%s/%x", step.Skip, step.Member.ID); key != d.skipped {
				d.skipped = key
				d.log.Info("defragmentation skipped", "reason", step.Skip, "member", step.Member.name(), "why", step.Why)
			}
			return
		}
		d.skipped = ""
		ok := d.defrag(ctx, v, step)
		if held {
			d.hold.Unlock()
		}
		if !ok {
			return
		}
	}
}

// remember keeps every member's bytes in use of v for the next check.
func (d *defragger) remember(v defragView) {
	clear(d.mem.InUse)
	for _, m := range v.Members {
		if m.Answered && m.Err == "" {
			d.mem.InUse[m.ID] = m.DBInUse
		}
	}
}

// defrag defragments the member of step, then waits until it caught up; it reports whether
// the next member may follow at once.
func (d *defragger) defrag(ctx context.Context, v defragView, step defragStep) bool {
	m := step.Member
	role := "follower"
	if step.Leader {
		role = "leader"
	}
	d.log.Info("defragmenting a member", "member", m.name(), "role", role, "db_size", m.DBSize, "db_in_use", m.DBInUse, "why", step.Why)
	// Not cancelled by a stop: etcd finishes a defrag its caller left, and a restore must
	// start only once it ended.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defragTimeout)
	started := d.now()
	err := d.cluster.defragment(dctx, m.ID)
	ended := d.now()
	cancel()
	took := ended.Sub(started)
	if err != nil {
		d.metrics.defrags.WithLabelValues("failed").Inc()
		r := d.retry[m.ID]
		if r == nil {
			r = &backoff.Backoff{Min: defragRetryMin, Max: defragRetryMax}
			d.retry[m.ID] = r
		}
		wait := r.Next()
		d.mem.NotBefore[m.ID] = ended.Add(wait)
		d.log.Error("defragmentation of a member failed", "member", m.name(), "role", role, "err", err, "took", took, "next_try_in", wait)
		if d.failed != nil {
			d.failed(err)
		}
		return false
	}
	delete(d.mem.Round, m.ID)
	delete(d.retry, m.ID)
	delete(d.mem.NotBefore, m.ID)
	after, caught := d.waitCaughtUp(ctx, m.ID)
	if after.Answered {
		d.mem.InUse[m.ID] = after.DBInUse
	}
	reclaimed := max(0, m.DBSize-after.DBSize)
	if !after.Answered {
		reclaimed = 0 // not known
	}
	d.metrics.defrags.WithLabelValues("succeeded").Inc()
	d.metrics.duration.Observe(took.Seconds())
	d.metrics.reclaimed.Add(float64(reclaimed))
	d.log.Info("member defragmented", "member", m.name(), "role", role, "size_before", m.DBSize, "size_after", after.DBSize,
		"in_use_before", m.DBInUse, "in_use_after", after.DBInUse, "reclaimed", reclaimed, "took", took,
		"started", started.UTC().Format(time.RFC3339Nano), "ended", ended.UTC().Format(time.RFC3339Nano), "caught_up", caught)
	return caught
}

// waitCaughtUp waits until member id answers, names the leader and has applied what the
// leader had committed when the wait began, within defragCatchUpTimeout; it returns the
// member's last answer and whether it caught up.
func (d *defragger) waitCaughtUp(ctx context.Context, id uint64) (defragMember, bool) {
	deadline := d.now().Add(defragCatchUpTimeout)
	var target uint64
	var last defragMember
	for {
		v, err := d.cluster.view(ctx)
		if err != nil {
			return last, false
		}
		if m, ok := v.member(id); ok && m.Answered && m.Err == "" {
			last = m
		}
		if leader, ok := v.member(v.Leader); target == 0 && ok && leader.Answered && leader.Err == "" {
			target = leader.Committed
		}
		if target != 0 && caughtUp(v, id, target) {
			return last, true
		}
		if d.now().After(deadline) {
			d.log.Warn("a member did not catch up after its defragmentation in time: the next member waits for the next check",
				"member", last.name(), "applied", last.Applied, "leader_committed", target, "timeout", defragCatchUpTimeout)
			return last, false
		}
		if backoff.Sleep(ctx, d.poll) != nil {
			return last, false
		}
	}
}

// defragMetrics are the defragmentation's metrics (docs/metrics.md), created at 0 with the
// others (newMetrics) and never closed; safe for concurrent use.
type defragMetrics struct {
	defrags   *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	reclaimed prometheus.Counter
	duration  prometheus.Histogram
}

// newDefragMetrics registers the defragmentation's metrics in reg, every series at 0.
func newDefragMetrics(reg prometheus.Registerer) *defragMetrics {
	m := &defragMetrics{
		defrags: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "defrags_total",
			Help: "Defragmentations of a member's db, by result (succeeded, failed); the leader's etcdbr counts its cluster's."}, []string{"result"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "defrags_skipped_total",
			Help: "Checks that found a member due for defragmentation and waited, by reason (restore, membership, unhealthy, snapshot)."}, []string{"reason"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "defrag_reclaimed_bytes_total",
			Help: "Bytes by which defragmentations shrank the members' db files."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "defrag_duration_seconds",
			Help:    "How long defragmentations that succeeded took: the member's reads and writes were blocked meanwhile.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 11)}), // 10ms to 10min
	}
	reg.MustRegister(m.defrags, m.skipped, m.reclaimed, m.duration)
	for _, r := range metricRestoreResult {
		m.defrags.WithLabelValues(r)
	}
	for _, r := range defragSkipReasons {
		m.skipped.WithLabelValues(r)
	}
	return m
}
