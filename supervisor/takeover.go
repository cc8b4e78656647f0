package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdbr/etcdbr/backup"
	"github.com/etcdbr/etcdbr/embedded"
	"github.com/etcdbr/etcdbr/snapstore"
)

// Disaster recovery onto a new machine (docs/validation.md, "A new machine takes the store
// over"): the etcdbr that backs the store's cluster up rewrites the cluster's liveness
// record (snapstore.AliveRecord) every TakeoverRefresh of its bound while it runs
// (heartbeat); a single member with a missing data dir whose configuration creates another
// cluster watches that record (watchOwner) and restores from the store, which then follows
// it, once the record stayed unchanged for the owner's bound (DecideTakeover). An owner that
// is alive rewrites it within one refresh, and the new member is refused as before.

// DefaultTakeoverAfter is the bound of etcdbr run's --store-takeover-after.
const DefaultTakeoverAfter = 10 * time.Minute

// MinTakeoverAfter is the shortest bound accepted (besides 0: never): its refresh, one PUT
// a second, is already ten times the default's cost per delta period.
const MinTakeoverAfter = 10 * time.Second

// takeoverRefreshes is how many times the owner rewrites its liveness record per bound.
const takeoverRefreshes = 10

// TakeoverRefresh is how often the owner rewrites its liveness record for the bound after:
// a tenth of it (one minute for the default bound).
func TakeoverRefresh(after time.Duration) time.Duration {
	return after / takeoverRefreshes
}

// TakeoverFacts are what a new member knows when it decides whether to take the store over
// from the cluster that owns it: the owner's liveness record as read first and as read last,
// each with when it was read by this machine's clock.
type TakeoverFacts struct {
	// Owner is the cluster the store records.
	Owner string
	// First is the owner's liveness record as first read (nil: the store holds none), at
	// FirstAt.
	First   *snapstore.AliveRecord
	FirstAt time.Time
	// Last is the record as read last, at LastAt (LastAt zero: not read again yet; Last nil
	// with LastAt set: it was gone).
	Last   *snapstore.AliveRecord
	LastAt time.Time
}

// Takeover is DecideTakeover's answer: take the store over, read the record again after
// ReadAgainIn, or neither (refused); Reason says why, naming the owner, when it last wrote
// and its bound. LastWritten (the store's modification time of the owner's record, zero:
// none) and After (the owner's bound) are the same facts for the log.
type Takeover struct {
	Take        bool
	ReadAgainIn time.Duration
	Reason      string
	LastWritten time.Time
	After       time.Duration
}

// DecideTakeover decides, from plain facts, whether a new member takes the store over from
// the cluster that owns it. It does no I/O.
//
// The owner's silence is measured on this machine's elapsed time between reads of the
// record, never by comparing clocks: the record must stay unchanged (the same modification
// time in the store and the same content) for the owner's bound, counted from the first
// read. The record's age when first read (this machine's clock against the store's
// modification time) shortens that watch, but never below one refresh and a half: a living
// owner rewrites the record within one refresh whatever the clocks say, so a clock ahead of
// the store's can bring a takeover forward by its difference at most, and never take over an
// owner that is alive. No record (an older etcdbr, the sidecar, an owner that never backed
// up) and a bound of 0 (--store-takeover-after 0) are refused: then nothing tells a dead
// owner from an idle one.
func DecideTakeover(f TakeoverFacts) Takeover {
	d := decideTakeover(f)
	if f.First != nil {
		d.LastWritten, d.After = f.First.ModTime, time.Duration(f.First.TakeoverAfter)
		if f.Last != nil {
			d.LastWritten = f.Last.ModTime
		}
	}
	return d
}

// decideTakeover is DecideTakeover without the facts for the log.
func decideTakeover(f TakeoverFacts) Takeover {
	rec := f.First
	switch {
	case rec == nil:
		return Takeover{Reason: fmt.Sprintf("cluster %s records no liveness in the store (its etcdbr predates the record, is a sidecar, "+
			"or never backed up): whether it still writes to the store cannot be told, so it is not taken over automatically", f.Owner)}
	case rec.TakeoverAfter <= 0:
		return Takeover{Reason: fmt.Sprintf("cluster %s turned automatic takeover of its store off (--store-takeover-after 0; its etcdbr wrote the store last at %s)",
			f.Owner, stamp(rec.ModTime))}
	case !f.LastAt.IsZero() && f.Last == nil:
		return Takeover{Reason: fmt.Sprintf("the liveness record of cluster %s (last written at %s) was removed while this member watched it: "+
			"it is not taken over automatically", f.Owner, stamp(rec.ModTime))}
	case f.Last != nil && !rec.Same(*f.Last):
		return Takeover{Reason: fmt.Sprintf("cluster %s is alive: its etcdbr (member %q) wrote its liveness record at %s, while this member watched it "+
			"(it would be taken over once it wrote nothing to the store for %s)", f.Owner, f.Last.Member, stamp(f.Last.ModTime), time.Duration(rec.TakeoverAfter))}
	}
	after := time.Duration(rec.TakeoverAfter)
	refresh := time.Duration(rec.Refresh)
	if refresh <= 0 || refresh > after {
		refresh = TakeoverRefresh(after)
	}
	age := max(f.FirstAt.Sub(rec.ModTime), 0)
	watch := max(after-age, refresh) + refresh/2
	watched := time.Duration(0)
	if !f.LastAt.IsZero() {
		watched = f.LastAt.Sub(f.FirstAt)
	}
	if watched >= watch {
		return Takeover{Take: true, Reason: fmt.Sprintf("cluster %s has written nothing to the store since %s (its liveness record, by the store's clock; "+
			"member %q), longer than its takeover bound %s, and this member watched the record unchanged for %s",
			f.Owner, stamp(rec.ModTime), rec.Member, after, watched.Round(time.Millisecond))}
	}
	return Takeover{ReadAgainIn: min(refresh, watch-watched), Reason: fmt.Sprintf("cluster %s last wrote its liveness record at %s (by the store's clock; member %q); "+
		"it is taken over once the record stays unchanged for its takeover bound %s: watching it for up to %s more",
		f.Owner, stamp(rec.ModTime), rec.Member, after, (watch - watched).Round(time.Millisecond))}
}

// stamp formats t for messages.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// LookAtOwner is, for etcdbr validate, what start-up would learn of the store's owner at
// its first read of the owner's liveness record: ok is false when start-up would not ask
// (takeoverApplies: not a new machine on the store of another cluster). Start-up itself
// then watches the record (a Takeover with ReadAgainIn); LookAtOwner reads it once.
func LookAtOwner(ctx context.Context, store *snapstore.Store, f StartFacts, now time.Time) (d Takeover, ok bool, err error) {
	if !takeoverApplies(f) {
		return Takeover{}, false, nil
	}
	rec, found, err := store.Alive(ctx, f.StoreCluster)
	if err != nil {
		return Takeover{}, true, fmt.Errorf("read whether cluster %s still writes to the store: %w", f.StoreCluster, err)
	}
	tf := TakeoverFacts{Owner: f.StoreCluster, FirstAt: now}
	if found {
		tf.First = &rec
	}
	return DecideTakeover(tf), true, nil
}

// aliveReader reads a cluster's liveness record: snapstore.Store.Alive.
type aliveReader interface {
	Alive(ctx context.Context, cluster string) (snapstore.AliveRecord, bool, error)
}

// watchOwner reads the liveness record of the store's cluster owner and, while
// DecideTakeover asks, reads it again, until it decides. now is the clock (time.Now).
func watchOwner(ctx context.Context, st aliveReader, owner string, now func() time.Time, lg *slog.Logger) (Takeover, error) {
	f := TakeoverFacts{Owner: owner}
	rec, ok, err := st.Alive(ctx, owner)
	if err != nil {
		return Takeover{}, fmt.Errorf("read whether cluster %s still writes to the store: %w", owner, err)
	}
	f.FirstAt = now()
	if ok {
		f.First = &rec
	}
	said := false
	for {
		d := DecideTakeover(f)
		if d.Take || d.ReadAgainIn <= 0 {
			return d, nil
		}
		if !said {
			lg.Warn("the store belongs to another cluster, and no data dir is here: watching whether that cluster still writes to the store",
				"reason", d.Reason)
			said = true
		}
		select {
		case <-ctx.Done():
			return Takeover{}, context.Cause(ctx)
		case <-time.After(d.ReadAgainIn):
		}
		rec, ok, err := st.Alive(ctx, owner)
		if err != nil {
			return Takeover{}, fmt.Errorf("read whether cluster %s still writes to the store: %w", owner, err)
		}
		f.LastAt, f.Last = now(), nil
		if ok {
			f.Last = &rec
		}
	}
}

// heartbeat rewrites the liveness record of e's cluster every refresh of cfg.TakeoverAfter
// while this member leads and the store is its cluster's (read again each time: a store
// taken over meanwhile stops the backups, as a full snapshot's check does); with a bound of
// 0 it writes the record once per run of etcd (newcomers then never take the store over).
// It returns when ctx ends. stopDeltas stops the delta taker when the store was given away.
func (s *Supervisor) heartbeat(ctx context.Context, e *embedded.Etcd, stopDeltas context.CancelCauseFunc) {
	after := s.cfg.TakeoverAfter
	refresh := TakeoverRefresh(after)
	if after <= 0 {
		refresh = claimRecheck // until the one record is written
	}
	lg := s.lg.With("component", "backup")
	srv := e.Server()
	var failing bool
	for {
		wait := leaderPoll
		if srv.Leader() == srv.MemberID() {
			wait = refresh
			wasClaimed := s.claim.claimed(e)
			err := s.claim.claim(ctx, e, true)
			if err == nil {
				err = s.cfg.Store.WriteAlive(ctx, snapstore.AliveRecord{ClusterID: clusterID(e), Member: s.cfg.Etcd.Name,
					Written: time.Now().UTC(), TakeoverAfter: snapstore.Duration(after), Refresh: snapstore.Duration(TakeoverRefresh(after))})
				if err != nil && ctx.Err() == nil {
					s.metrics.storeErrors.WithLabelValues(storeOpClaim).Inc()
					s.health.storeResult(err)
				}
			}
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, snapstore.ErrClusterMismatch):
				if wasClaimed {
					s.lg.Error("the store's record names another cluster now (it was taken over): no more backups; delta snapshots stay off until etcdbr restarts", "err", err)
					stopDeltas(fmt.Errorf("%w: %w", err, backup.ErrSkipped))
				}
				wait = claimRecheck
			case err != nil:
				if !failing {
					lg.Warn("cannot refresh this cluster's liveness record in the store; retrying", "err", err, "retry_in", min(refresh, claimRetryMax))
				}
				failing = true
				wait = min(refresh, claimRetryMax)
			default:
				if failing {
					lg.Info("this cluster's liveness record is written again")
				}
				failing = false
				if after <= 0 {
					<-ctx.Done()
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-srv.LeaderChangedNotify():
		case <-time.After(wait):
		}
	}
}
