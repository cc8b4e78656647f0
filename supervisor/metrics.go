package supervisor

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// metricsNamespace prefixes every metric of etcdbr's own.
const metricsNamespace = "etcdbr"

// The label values of etcdbr's metrics: every label has a small fixed set of values, and
// every series is created at start (at 0), so that each documented series exists from the
// first scrape. docs/metrics.md documents them.
var (
	metricKinds         = []catalog.Kind{catalog.KindFull, catalog.KindDelta}
	metricStoreOps      = []string{storeOpUpload, storeOpList, storeOpCheck, storeOpClaim}
	metricRestoreResult = []string{"succeeded", "failed"}
	metricTriggers      = []string{TriggerRequest, TriggerCorrupt, TriggerCluster}
	metricValidations   = []string{datadir.StateValid.String(), datadir.StateMissing.String(), datadir.StateCorrupt.String()}
	metricAlarms        = []string{"corrupt", "nospace"}
	metricReadyChecks   = []string{checkEtcd, checkVoter, checkBackup}
	metricRoles         = []string{RoleVoter, RoleLearner}
)

// The store operations etcdbr_store_errors_total counts.
const (
	storeOpUpload = "upload" // a full snapshot or a delta
	storeOpList   = "list"   // a listing of full snapshots or deltas
	storeOpCheck  = "check"  // the periodic reachability check
	storeOpClaim  = "claim"  // reading or writing the store's cluster record (cluster.json) or the cluster's liveness record
)

// metrics are etcdbr's own metrics, in a registry of their own (etcd's are in the
// prometheus default registry; /metrics serves both). docs/metrics.md documents them.
//
// New creates them, every series at 0 (newMetrics); they live as long as the Supervisor and
// are never closed. The collectors are safe for concurrent use, so no mutex guards them:
// the lifecycle (state, restores, validation), health (revision, alarms, newest objects,
// the store's reachability, the unbacked age), the claim (cluster mismatch, claim errors),
// the observer (snapshots taken and failed) and the retention's runs write them; the API's
// /metrics reads reg.
type metrics struct {
	reg *prometheus.Registry

	snapshots        *prometheus.CounterVec
	snapshotDuration *prometheus.HistogramVec
	snapshotSize     *prometheus.GaugeVec
	snapshotBytes    *prometheus.CounterVec
	snapshotFailures *prometheus.CounterVec
	snapshotsFenced  *prometheus.CounterVec
	newestRevision   *prometheus.GaugeVec
	newestTime       *prometheus.GaugeVec

	deltaEvents    prometheus.Counter
	deltaRevisions prometheus.Counter
	deltaLag       prometheus.Gauge
	deltaBuffered  prometheus.Gauge
	unbackedAge    prometheus.Gauge

	restores        *prometheus.CounterVec
	restoreDuration prometheus.Histogram
	restorePhase    *prometheus.GaugeVec

	validations        *prometheus.CounterVec
	validationDuration prometheus.Gauge
	lostRevisions      prometheus.Gauge
	storeDamaged       prometheus.Gauge

	gcDeleted *prometheus.CounterVec

	compactions        *prometheus.CounterVec
	compactionDuration prometheus.Histogram
	chainRevisions     prometheus.Gauge
	chainBytes         prometheus.Gauge

	defrag *defragMetrics

	storeErrors     *prometheus.CounterVec
	storeReachable  prometheus.Gauge
	clusterMismatch prometheus.Gauge

	state        *prometheus.GaugeVec
	etcdRevision prometheus.Gauge
	alarm        *prometheus.GaugeVec
	ready        *prometheus.GaugeVec

	etcdLearner      prometheus.Gauge
	etcdLag          prometheus.Gauge
	clusterMembers   *prometheus.GaugeVec
	clusterAnswering prometheus.Gauge
	clusterQuorum    prometheus.Gauge
	// restoreActive and restoreMembers follow a whole-cluster restore (cluster_restore.go).
	restoreActive  prometheus.Gauge
	restoreMembers *prometheus.GaugeVec
	learnerAge     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	gaugeVec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
		m.reg.MustRegister(g)
		return g
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: name, Help: help})
		m.reg.MustRegister(g)
		return g
	}

	m.snapshots = counterVec("snapshots_total", "Snapshots that reached the store, by kind (full, delta).", "kind")
	m.snapshotDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "snapshot_duration_seconds",
		Help:    "How long taking and uploading a snapshot took, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 9), // 10ms to 11min
	}, []string{"kind"})
	m.reg.MustRegister(m.snapshotDuration)
	m.snapshotSize = gaugeVec("snapshot_last_size_bytes", "Size in the store of the newest snapshot taken, by kind.", "kind")
	m.snapshotBytes = counterVec("snapshot_uploaded_bytes_total", "Bytes of snapshots that reached the store, by kind.", "kind")
	m.snapshotFailures = counterVec("snapshot_failures_total",
		"Failed attempts to take a snapshot, by kind and reason (store, etcd, other); each is retried.", "kind", "reason")
	m.snapshotsFenced = counterVec("snapshots_fenced_total",
		"Uploads refused by the leadership fence, by kind: this member had stopped leading; nothing of them became visible, and they are not retried.", "kind")
	m.newestRevision = gaugeVec("newest_snapshot_revision", "Revision of the newest snapshot in the store, by kind (a delta's last revision).", "kind")
	m.newestTime = gaugeVec("newest_snapshot_timestamp_seconds", "Unix time the newest snapshot in the store was taken, by kind.", "kind")

	m.deltaEvents = counter("delta_events_total", "etcd events (puts and deletes) uploaded in deltas.")
	m.deltaRevisions = counter("delta_revisions_total", "etcd revisions uploaded in deltas.")
	m.deltaLag = gauge("delta_lag_revisions", "etcd's current revision minus the newest revision in the store.")
	m.deltaBuffered = gauge("delta_buffered_bytes", "Memory held by revisions received from the watch and not yet in the store.")
	m.unbackedAge = gauge("backup_unbacked_age_seconds",
		"How long the oldest write that is not in the store has waited (0 when the store holds etcd's current revision).")

	m.restores = counterVec("restores_total", "Restores while running, by trigger (request, corrupt) and result (succeeded, failed).", "trigger", "result")
	m.restoreDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "restore_duration_seconds",
		Help:    "How long restores while running took, from stopping the backups to etcd serving again with a fresh full snapshot.",
		Buckets: prometheus.ExponentialBuckets(1, 3, 9), // 1s to 1.8h
	})
	m.reg.MustRegister(m.restoreDuration)
	m.restorePhase = gaugeVec("restore_phase", "1 for the phase the running restore is in, 0 for the others (all 0 when none runs).", "phase")

	m.validations = counterVec("validations_total", "Data dir validations at start, by result (valid, missing, corrupt).", "result")
	m.validationDuration = gauge("validation_duration_seconds", "How long the last data dir validation took.")
	m.lostRevisions = gauge("restore_lost_revisions", "Revisions the restore at start could not reach because backup objects failed verification "+
		"(it restored the newest revision the rest of the store proves); 0 when it reached the newest.")
	m.storeDamaged = gauge("store_damaged_objects", "Backup objects the store records as damaged (a restore, etcdbr verify or a compaction "+
		"found them so, and they are still there with that size): every restore leaves them out and garbage collection keeps them, "+
		"until a person replaces them or removes their records; read about once a minute.")

	m.gcDeleted = counterVec("gc_deleted_objects_total", "Backup objects deleted by the retention policy, by kind.", "kind")

	m.compactions = counterVec("compactions_total", "Compactions of the backup chain into a full snapshot, by result (succeeded, failed).", "result")
	m.compactionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "compaction_duration_seconds",
		Help:    "How long compactions of the backup chain that succeeded took, from the restore lock to the full snapshot read back.",
		Buckets: prometheus.ExponentialBuckets(1, 3, 9), // 1s to 1.8h
	})
	m.reg.MustRegister(m.compactionDuration)
	m.chainRevisions = gauge("backup_chain_revisions", "Revisions after the newest full snapshot that a restore of the newest point replays, "+
		"as the compaction's last check found them.")
	m.chainBytes = gauge("backup_chain_bytes", "Stored bytes of the deltas after the newest full snapshot that a restore of the newest point "+
		"reads, as the compaction's last check found them.")

	m.defrag = newDefragMetrics(m.reg)

	m.storeErrors = counterVec("store_errors_total", "Failed store operations, by operation (upload, list, check, claim).", "op")
	m.storeReachable = gauge("store_reachable", "1 when the last store operation succeeded, 0 when it failed.")
	m.clusterMismatch = gauge("store_cluster_mismatch",
		"1 while the store belongs to another etcd cluster than this member's: no backups are taken into it.")

	m.state = gaugeVec("state", "1 for the supervisor's current state, 0 for the others.", "state")
	m.etcdRevision = gauge("etcd_revision", "etcd's current revision (the last known while etcd is stopped).")
	m.alarm = gaugeVec("etcd_alarm", "1 while etcd has raised the alarm (corrupt, nospace).", "alarm")
	m.ready = gaugeVec("ready", "1 when the readiness check passes (etcd, voter, backup), 0 when it fails.", "check")

	m.etcdLearner = gauge("etcd_learner", "1 while this member is a learner (0: a voter, or etcd is not running).")
	m.etcdLag = gauge("etcd_lag_entries",
		"Raft entries this member's applied index trailed the leader's committed index by at the last cluster probe (0 when unknown).")
	m.clusterMembers = gaugeVec("cluster_members", "Members of etcd's membership by role (voter, learner), as this member last knew it.", "role")
	m.clusterAnswering = gauge("cluster_members_answering", "Members that answered the last cluster probe, this member included (0 while etcd does not serve).")
	m.clusterQuorum = gauge("cluster_quorum",
		"1 when the cluster has quorum as this member sees it (it knows a leader, and a linearizable read through it completed or a majority of voters answer with a leader); 0 otherwise, and while etcd does not serve.")
	m.restoreActive = gauge("cluster_restore_active",
		"1 while the store holds an active whole-cluster restore (etcdbr cluster restore), as this member last read it; 0 otherwise.")
	m.restoreMembers = gaugeVec("cluster_restore_members",
		"Members of the active whole-cluster restore by the phase they reported (seen, restoring, restored, serving, failed), as this member last read the store.", "phase")
	for _, p := range []catalog.MemberPhase{catalog.PhaseSeen, catalog.PhaseRestoring, catalog.PhaseRestored, catalog.PhaseServing, catalog.PhaseFailed} {
		m.restoreMembers.WithLabelValues(string(p))
	}
	m.learnerAge = gauge("cluster_learner_age_seconds",
		"How long the member that has been a learner longest has been one, as this member saw it (0: no learner).")

	for _, k := range metricKinds {
		kind := string(k)
		m.snapshots.WithLabelValues(kind)
		m.snapshotDuration.WithLabelValues(kind)
		m.snapshotSize.WithLabelValues(kind)
		m.snapshotBytes.WithLabelValues(kind)
		m.newestRevision.WithLabelValues(kind)
		m.newestTime.WithLabelValues(kind)
		m.gcDeleted.WithLabelValues(kind)
		m.snapshotsFenced.WithLabelValues(kind)
		for _, r := range backup.Reasons {
			m.snapshotFailures.WithLabelValues(kind, string(r))
		}
	}
	for _, r := range metricRestoreResult {
		m.compactions.WithLabelValues(r)
	}
	for _, tr := range metricTriggers {
		for _, r := range metricRestoreResult {
			m.restores.WithLabelValues(tr, r)
		}
	}
	for _, p := range restorePhases {
		m.restorePhase.WithLabelValues(string(p))
	}
	for _, v := range metricValidations {
		m.validations.WithLabelValues(v)
	}
	for _, op := range metricStoreOps {
		m.storeErrors.WithLabelValues(op)
	}
	for _, st := range States {
		m.state.WithLabelValues(string(st))
	}
	for _, a := range metricAlarms {
		m.alarm.WithLabelValues(a)
	}
	for _, c := range metricReadyChecks {
		m.ready.WithLabelValues(c)
	}
	for _, r := range metricRoles {
		m.clusterMembers.WithLabelValues(r)
	}
	return m
}

// setState sets the state gauge.
func (m *metrics) setState(s State) {
	for _, st := range States {
		v := 0.0
		if st == s {
			v = 1
		}
		m.state.WithLabelValues(string(st)).Set(v)
	}
}

// setRestorePhase sets the restore phase gauge; a phase that is not in progress (done,
// failed, "") zeroes them all.
func (m *metrics) setRestorePhase(p RestorePhase) {
	for _, ph := range restorePhases {
		v := 0.0
		if ph == p {
			v = 1
		}
		m.restorePhase.WithLabelValues(string(ph)).Set(v)
	}
}

// cluster sets the cluster's gauges from v (of a serving etcd when serving) at now.
func (m *metrics) cluster(v clusterView, serving bool, now time.Time) {
	p := v.probe
	if !serving || p == nil {
		m.clusterQuorum.Set(0)
		m.clusterAnswering.Set(0)
		m.etcdLag.Set(0)
		if !serving {
			m.etcdLearner.Set(0)
		}
		return
	}
	voters := len(p.voters())
	m.clusterMembers.WithLabelValues(RoleVoter).Set(float64(voters))
	m.clusterMembers.WithLabelValues(RoleLearner).Set(float64(len(p.members) - voters))
	m.clusterAnswering.Set(float64(len(p.answering())))
	m.clusterQuorum.Set(boolGauge(v.quorum))
	m.etcdLearner.Set(boolGauge(p.learner()))
	lag, _ := p.lag(p.self)
	m.etcdLag.Set(float64(lag))
	oldest := time.Time{}
	for _, since := range v.learners {
		if oldest.IsZero() || since.Before(oldest) {
			oldest = since
		}
	}
	age := 0.0
	if !oldest.IsZero() {
		age = now.Sub(oldest).Seconds()
	}
	m.learnerAge.Set(age)
}

// taken records a snapshot that reached the store.
func (m *metrics) taken(t backup.Taken) {
	kind := string(t.Snapshot.Kind)
	m.snapshots.WithLabelValues(kind).Inc()
	m.snapshotDuration.WithLabelValues(kind).Observe(t.Duration.Seconds())
	m.snapshotSize.WithLabelValues(kind).Set(float64(t.Snapshot.Size))
	m.snapshotBytes.WithLabelValues(kind).Add(float64(t.Snapshot.Size))
	if t.Snapshot.Kind == catalog.KindDelta {
		m.deltaEvents.Add(float64(t.Events))
		m.deltaRevisions.Add(float64(t.Revisions))
	}
}

// newest records the newest snapshot of its kind in the store.
func (m *metrics) newest(s catalog.Snapshot) {
	m.newestRevision.WithLabelValues(string(s.Kind)).Set(float64(s.Revision))
	m.newestTime.WithLabelValues(string(s.Kind)).Set(float64(s.Time.UnixMilli()) / 1000)
}

// fenced records an upload its fence refused.
func (m *metrics) fenced(kind catalog.Kind) {
	m.snapshotsFenced.WithLabelValues(string(kind)).Inc()
}

// failed records a failed step of a taker.
func (m *metrics) failed(f backup.Failure) {
	if f.Op == backup.OpList {
		m.storeErrors.WithLabelValues(storeOpList).Inc()
		return
	}
	m.snapshotFailures.WithLabelValues(string(f.Kind), string(f.Reason)).Inc()
	if f.Reason == backup.ReasonStore {
		m.storeErrors.WithLabelValues(storeOpUpload).Inc()
	}
}

// compacted records a compaction of the backup chain that uploaded a full snapshot (err nil)
// or failed.
func (m *metrics) compacted(res CompactResult, err error) {
	if err != nil {
		m.compactions.WithLabelValues("failed").Inc()
		return
	}
	m.compactions.WithLabelValues("succeeded").Inc()
	m.compactionDuration.Observe(res.Duration.Seconds())
}

// chain records the chain after the newest full snapshot, as the compaction found it.
func (m *metrics) chain(c catalog.Chain) {
	m.chainRevisions.Set(float64(c.Revisions))
	m.chainBytes.Set(float64(c.Bytes))
}

// setClusterRestore records whether a whole-cluster restore is active, and its members'
// phases.
func (m *metrics) setClusterRestore(active bool, progress []catalog.MemberProgress) {
	m.restoreActive.Set(0)
	m.restoreMembers.Reset()
	for _, p := range []catalog.MemberPhase{catalog.PhaseSeen, catalog.PhaseRestoring, catalog.PhaseRestored, catalog.PhaseServing, catalog.PhaseFailed} {
		m.restoreMembers.WithLabelValues(string(p))
	}
	if !active {
		return
	}
	m.restoreActive.Set(1)
	for _, p := range progress {
		switch p.Phase {
		case catalog.PhaseSeen, catalog.PhaseRestoring, catalog.PhaseRestored, catalog.PhaseServing, catalog.PhaseFailed:
			m.restoreMembers.WithLabelValues(string(p.Phase)).Inc()
		}
	}
}
