package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Defaults of DeltaConfig.
const (
	DefaultDeltaPeriod      = 10 * time.Second
	DefaultDeltaMemoryLimit = 64 << 20
)

// Bounds of the taker's own waits.
const (
	// deltaUploadTimeout bounds one upload attempt of one delta.
	deltaUploadTimeout = 2 * time.Minute
	// On stop, deltaDrainTimeout bounds the wait for the events of the writes etcd had
	// applied when the stop began, and then the wait for an upload in flight;
	// deltaFinalTimeout bounds the final upload. Together (25s) they fit in the 30s a
	// container gets by default between SIGTERM and SIGKILL.
	deltaDrainTimeout = 5 * time.Second
	deltaFinalTimeout = 15 * time.Second
	// leaseLookupTimeout bounds one lease TTL lookup.
	leaseLookupTimeout = 10 * time.Second
)

// ErrLeaseNotFound is wrapped by the error a DeltaConfig.LeaseTTL function returns when the
// lease no longer exists.
var ErrLeaseNotFound = errors.New("lease not found")

// DeltaConfig configures the delta taker.
type DeltaConfig struct {
	// Store is where deltas go; the chain continues from the newest revision in it.
	Store *snapstore.Store
	// Client is the member: the in-process client of an embedded member
	// (embedded.Etcd.Client) or a client of an external one. The events are watched through
	// it unless Events is set; lease TTLs and the member's revision are read through it. Its
	// user must be able to read every key (root): a watch that skips revisions cannot make
	// exact deltas.
	Client *clientv3.Client
	// Events, when set, is where the taker reads the events of every key from a revision on
	// instead of a watch through Client, with a watch's responses (embedded.Etcd.Events reads
	// them from the in-process member's backend, at no cost to its writes).
	Events func(ctx context.Context, from int64) clientv3.WatchChan
	// Revision, when set, returns the member's current revision: the in-process member's
	// own, read locally (etcdbr run), which is exactly what Events can deliver and which it
	// answers without its peers. Nil means a linearizable read through Client, which on an
	// external cluster never answers a revision below one the watch delivered.
	Revision func(ctx context.Context) (int64, error)
	// LeaseTTL returns the granted TTL of a lease, or an error wrapping ErrLeaseNotFound when
	// the lease no longer exists. Nil means ClientLeaseTTL(Client).
	LeaseTTL func(ctx context.Context, id int64) (ttl int64, err error)
	// Period is how often the events seen since the last delta are uploaded (default 10s).
	Period time.Duration
	// MemoryLimit bounds the bytes of events held in memory (default 64 MiB). A delta is cut
	// before the period ends once the events not yet being uploaded reach half of it; when
	// the whole limit is held (uploads slower than writes, or failing), the watch pauses and
	// later resumes from the next revision, which etcd keeps until it compacts.
	MemoryLimit int64
	// Full takes a full snapshot, to start a new chain when the watch cannot continue the
	// current one (etcd compacted the revisions it needs, the member went back in history).
	Full TakeFunc
	// Log receives the taker's messages (nil: slog.Default()).
	Log *slog.Logger
	// RetryMin and RetryMax bound the backoff between failed attempts to upload, watch, list
	// the store or take a full snapshot (defaults 1s and 30s).
	RetryMin, RetryMax time.Duration
	// Observer, when set, is told about every delta uploaded or failed and about the
	// taker's position.
	Observer Observer
	// Flusher, when set, lets its owner ask the taker to upload what it holds at once.
	Flusher *Flusher
	// Fence, when set, is checked just before each delta becomes visible in the store, which
	// must then happen within DeltaCommitWindow. When it refuses (an error wrapping
	// ErrFenced), nothing of that delta becomes visible and the taker stops at once without
	// uploading anything more: RunDeltas returns that error. Full snapshots are fenced by
	// Full itself.
	Fence Fence
}

// ClientEvents returns a DeltaConfig.Events that watches every key through cli. The watch
// requires a leader: it ends when the member loses it.
func ClientEvents(cli *clientv3.Client) func(ctx context.Context, from int64) clientv3.WatchChan {
	return func(ctx context.Context, from int64) clientv3.WatchChan {
		return cli.Watch(clientv3.WithRequireLeader(ctx), "", clientv3.WithPrefix(), clientv3.WithRev(from))
	}
}

// ClientLeaseTTL returns a DeltaConfig.LeaseTTL that asks etcd through cli (LeaseTimeToLive)
// for a lease's granted TTL.
func ClientLeaseTTL(cli *clientv3.Client) func(ctx context.Context, id int64) (int64, error) {
	return func(ctx context.Context, id int64) (int64, error) {
		resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, fmt.Errorf("lease %x: %w", id, ErrLeaseNotFound)
		}
		if err != nil {
			return 0, fmt.Errorf("look up lease %x: %w", id, err)
		}
		if resp.TTL == -1 {
			// etcd answers TTL -1 for a lease it does not know.
			return 0, fmt.Errorf("lease %x: %w", id, ErrLeaseNotFound)
		}
		return resp.GrantedTTL, nil
	}
}

// RunDeltas takes deltas until ctx ends; then it uploads the events seen so far as a final
// delta and returns. When ctx was cancelled with a cause wrapping ErrSkipped (this member
// stopped being the leader), the events not yet uploaded are dropped instead: the member
// that takes over continues the chain from the store and reads them from etcd's history.
// When cfg.Fence (or cfg.Full) refuses an upload, RunDeltas drops them likewise and returns
// the error, which wraps ErrFenced.
//
// The chain continues from the newest revision in the store (the newest full snapshot's
// revision or the newest delta's last revision), so that the deltas have no gap and no
// overlap across restarts. An empty store starts the chain at the member's current
// revision: the full snapshot runner beside it anchors it. When the chain cannot continue
// (etcd compacted the next revision, the watch skipped a revision, the member is behind the
// store), RunDeltas takes a full snapshot with cfg.Full and starts a new chain from it, and
// says so in the log.
//
// Failures (store unreachable, etcd unavailable) are logged and retried with backoff; they
// never end RunDeltas. It returns an error only for an unusable configuration and when it
// was fenced.
func RunDeltas(ctx context.Context, cfg DeltaConfig) error {
	switch {
	case cfg.Store == nil:
		return errors.New("delta snapshots: no store")
	case cfg.Client == nil:
		return errors.New("delta snapshots: no etcd client")
	case cfg.Full == nil:
		return errors.New("delta snapshots: no way to take a full snapshot")
	case cfg.Period < 0 || cfg.MemoryLimit < 0:
		return fmt.Errorf("delta snapshots: invalid period %v or memory limit %d", cfg.Period, cfg.MemoryLimit)
	}
	if cfg.Period == 0 {
		cfg.Period = DefaultDeltaPeriod
	}
	if cfg.MemoryLimit == 0 {
		cfg.MemoryLimit = DefaultDeltaMemoryLimit
	}
	if cfg.LeaseTTL == nil {
		cfg.LeaseTTL = ClientLeaseTTL(cfg.Client)
	}
	if cfg.Events == nil {
		cfg.Events = ClientEvents(cfg.Client)
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Observer = observerOr(cfg.Observer)
	t := &deltaTaker{cfg: cfg, log: cfg.Log, leases: newLeaseCache(cfg.LeaseTTL)}
	return t.run(ctx)
}

// deltaTaker is the state of one RunDeltas.
type deltaTaker struct {
	cfg    DeltaConfig
	log    *slog.Logger
	leases *leaseCache

	// stored is the newest revision known to be in the store: deltas must start after it.
	stored int64
	// last is the last revision of the chain: uploaded, being uploaded or buffered. The
	// watch continues from last+1.
	last int64
	// held is the batch being uploaded, or waiting to be uploaded again after a failure
	// (always with the same revision range, so that an upload that failed but landed is
	// only ever duplicated exactly). pending collects the revisions received after it.
	held    *deltaBatch
	pending *deltaBatch
	// fenced is why an upload was fenced (it wraps ErrFenced): then nothing more is uploaded.
	fenced error
}

func (t *deltaTaker) run(ctx context.Context) (err error) {
	t.pending = &deltaBatch{}
	defer func() {
		t.final(ctx)
		if err == nil {
			err = t.fenced // the final delta's fence refused
		}
	}()
	if err := t.begin(ctx); err != nil {
		return t.fenced // only ctx or a fence ends begin
	}
	for {
		err := t.follow(ctx)
		if t.fenced != nil || ctx.Err() != nil {
			return t.fenced
		}
		t.log.Warn("the delta chain cannot continue; taking a full snapshot to start a new chain",
			"reason", err, "chain_ends_at", t.last)
		if err := t.flush(ctx); err != nil {
			return t.fenced // only ctx or a fence ends flush
		}
		if err := t.anchor(ctx); err != nil {
			return t.fenced
		}
	}
}

// fence records err when it wraps ErrFenced, and reports whether it did.
func (t *deltaTaker) fence(err error) bool {
	if !errors.Is(err, ErrFenced) {
		return false
	}
	if t.fenced == nil {
		t.fenced = err
	}
	return true
}

// fencedUpload records and reports a delta upload of from..to that its fence refused.
func (t *deltaTaker) fencedUpload(from, to int64, err error) {
	t.fence(err)
	t.cfg.Observer.Fenced(catalog.KindDelta, err)
	t.log.Warn("delta upload fenced: this member no longer leads in the term its delta snapshots began in; "+
		"nothing of the delta became visible and this taker uploads nothing more: the leader continues the chain from the store",
		"from", from, "to", to, "err", err)
}

// final uploads what is not in the store yet once ctx ended, unless ctx's cause wraps
// ErrSkipped or an upload was fenced.
func (t *deltaTaker) final(ctx context.Context) {
	if t.held.empty() && t.pending.empty() {
		t.log.Info("delta snapshots stopped", "store_revision", t.stored)
		return
	}
	first := t.pending.revs
	if !t.held.empty() {
		first = t.held.revs
	}
	from, to := first[0].Revision, t.last
	if t.fenced != nil {
		t.log.Info("delta snapshots stopped without a final delta: fenced; the leader continues the chain from the store",
			"reason", t.fenced, "dropped_from", from, "dropped_to", to)
		return
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrSkipped) {
		t.log.Info("delta snapshots stopped without a final delta; whoever takes over continues the chain from the store",
			"reason", cause, "dropped_from", from, "dropped_to", to)
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deltaFinalTimeout)
	defer cancel()
	if err := t.flush(fctx); err != nil {
		if t.fenced != nil {
			return // said by fencedUpload
		}
		t.log.Error("the final delta could not be uploaded: these revisions are not in the store; the next start continues "+
			"from the store's newest revision and reads them again from etcd's history, unless etcd compacted them",
			"from", from, "to", to, "err", err)
		return
	}
	t.log.Info("final delta uploaded; delta snapshots stopped", "store_revision", t.stored)
}

// begin finds where the chain continues.
func (t *deltaTaker) begin(ctx context.Context) error {
	var newest, current int64
	err := t.retry(ctx, "find where the delta chain continues", OpList, func() error {
		var err error
		if newest, err = storeNewest(ctx, t.cfg.Store); err != nil {
			return err
		}
		current, err = t.memberRevision(ctx)
		return err
	})
	if err != nil {
		return err
	}
	t.stored = newest
	switch {
	case newest == 0:
		t.last = current
		t.log.Info("the store has no backups: the delta chain starts at the member's current revision; the first full snapshot anchors it",
			"from", current+1)
		t.progress()
	case current >= newest:
		t.last = newest
		t.log.Info("continuing the delta chain from the store's newest revision", "from", newest+1, "member_revision", current)
		t.progress()
	default:
		t.log.Warn("the member's revision is behind the newest revision in the store: its data dir was restored to an older point "+
			"or the store holds another history; deltas from here would overlap the store's, so a full snapshot starts a new chain",
			"member_revision", current, "store_revision", newest)
		return t.anchor(ctx)
	}
	return nil
}

// anchor takes a full snapshot and starts a new chain from it. A snapshot behind the newest
// revision in the store cannot start a chain without overlapping the store's deltas: then
// deltas wait until the member passes that revision, and another full snapshot starts the
// chain.
func (t *deltaTaker) anchor(ctx context.Context) error {
	for {
		var snap catalog.Snapshot
		// The runner reports the full snapshot's failures itself.
		err := t.retry(ctx, "take a full snapshot to start a new delta chain", "", func() error {
			var err error
			snap, err = t.cfg.Full(ctx)
			return err
		})
		if err != nil {
			t.fence(err)
			return err
		}
		if snap.Revision >= t.stored {
			t.last, t.stored = snap.Revision, snap.Revision
			t.log.Info("new delta chain", "full_snapshot", snap.Key, "from", snap.Revision+1)
			t.progress()
			return nil
		}
		t.log.Warn("deltas are suspended until the member's revision passes the store's newest: the full snapshot keeps the "+
			"current data; deltas now would overlap the store's, so another full snapshot will start the chain then",
			"full_snapshot", snap.Key, "revision", snap.Revision, "store_revision", t.stored)
		if err := t.waitPast(ctx, t.stored); err != nil {
			return err
		}
	}
}

// waitPast returns once the member has a revision after rev.
func (t *deltaTaker) waitPast(ctx context.Context, rev int64) error {
	return t.retry(ctx, "wait for the member to pass the store's newest revision", "", func() error {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for resp := range t.cfg.Events(wctx, rev+1) {
			if len(resp.Events) > 0 {
				return nil
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch from revision %d: %w", rev+1, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return classify(ReasonEtcd, fmt.Errorf("watch from revision %d ended", rev+1))
	})
}

// memberRevision returns the member's current revision.
func (t *deltaTaker) memberRevision(ctx context.Context) (int64, error) {
	if t.cfg.Revision != nil {
		rev, err := t.cfg.Revision(ctx)
		if err != nil {
			return 0, classify(ReasonEtcd, fmt.Errorf("read the member's revision: %w", err))
		}
		return rev, nil
	}
	ctx, cancel := context.WithTimeout(ctx, leaseLookupTimeout)
	defer cancel()
	resp, err := t.cfg.Client.Get(ctx, "etcdbr-revision-probe", clientv3.WithCountOnly())
	if err != nil {
		return 0, classify(ReasonEtcd, fmt.Errorf("read the member's revision: %w", err))
	}
	return resp.Header.Revision, nil
}

// storeNewest returns the newest revision in the store: the highest of the newest full
// snapshot's revision and the newest delta's last revision (0 for an empty store).
func storeNewest(ctx context.Context, store *snapstore.Store) (int64, error) {
	newest, err := store.Newest(ctx)
	if err != nil {
		return 0, classify(ReasonStore, err)
	}
	return newest, nil
}

// retry calls fn until it succeeds, with backoff, logging failures and reporting them to the
// observer as op (unless op is ""); it returns ctx's error once ctx ends, and at once an
// error of fn that wraps ErrFenced.
func (t *deltaTaker) retry(ctx context.Context, what string, op Op, fn func() error) error {
	b := backoff.Backoff{Min: t.cfg.RetryMin, Max: t.cfg.RetryMax}
	for {
		err := fn()
		if err == nil || errors.Is(err, ErrFenced) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := b.Next()
		if errors.Is(err, ErrSkipped) {
			t.log.Debug("delta snapshots: cannot "+what+" now", "reason", err, "retry_in", wait)
		} else {
			if op != "" {
				t.cfg.Observer.Failed(Failure{Kind: catalog.KindDelta, Op: op, Reason: ReasonOf(err), Err: err})
			}
			t.log.Error("delta snapshots: cannot "+what, "err", err, "retry_in", wait)
		}
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// progress tells the observer where the taker is.
func (t *deltaTaker) progress() {
	oldest := t.held.observed()
	if oldest.IsZero() {
		oldest = t.pending.observed()
	}
	t.cfg.Observer.DeltaProgress(DeltaProgress{
		Stored:   t.stored,
		Last:     t.last,
		Buffered: t.held.size() + t.pending.size(),
		Oldest:   oldest,
	})
}

// FullFromRunner returns a DeltaConfig.Full that takes the full snapshot through r, so that
// it never runs beside a scheduled one, and that is also abandoned when runnerCtx (the
// context r.Run runs with) ends: stopping the runner abandons every full snapshot in flight.
func FullFromRunner(runnerCtx context.Context, r *Runner) TakeFunc {
	return func(ctx context.Context) (catalog.Snapshot, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(runnerCtx, cancel)
		defer stop()
		return r.TakeNow(ctx)
	}
}
