package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/etcdbr/etcdbr/internal/backoff"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TakeFunc takes one full snapshot into the store. It returns an error wrapping ErrSkipped
// when this member should not take backups now (it is not the leader), and one wrapping
// ErrFenced when its fence refused the upload (it stopped leading meanwhile).
type TakeFunc func(ctx context.Context) (catalog.Snapshot, error)

// ErrSkipped marks a snapshot that was deliberately not taken; it is not retried.
var ErrSkipped = errors.New("snapshot skipped")

// Runner takes full snapshots: one at once when the store has none or the newest is older
// than the schedule's period, then on the schedule. A failed snapshot is retried with
// exponential backoff until it succeeds or the next scheduled one is due; failures never stop
// the member.
type Runner struct {
	Store    *snapstore.Store
	Take     TakeFunc
	Schedule Schedule
	Log      *slog.Logger
	// RetryMin and RetryMax bound the backoff between failed attempts (defaults 5s and 5m).
	RetryMin, RetryMax time.Duration
	// TakeAtStart makes Run take a snapshot at once whatever the store holds (after a
	// restore, whose fresh full snapshot failed).
	TakeAtStart bool
	// Observer, when set, is told about every snapshot taken or failed, and about failed
	// listings.
	Observer Observer

	mu sync.Mutex // held while a snapshot is being taken
}

// Run takes snapshots until ctx ends. It returns after any snapshot in flight has committed
// or been abandoned (an abandoned upload leaves nothing in the store).
func (r *Runner) Run(ctx context.Context) error {
	s, err := gocron.NewScheduler(gocron.WithLocation(time.Local))
	if err != nil {
		return fmt.Errorf("full snapshot scheduler: %w", err)
	}
	_, err = s.NewJob(
		gocron.CronJob(r.Schedule.String(), false),
		gocron.NewTask(func() { r.takeWithRetry(ctx, "schedule") }),
		gocron.WithSingletonMode(gocron.LimitModeReschedule),
		gocron.WithName("full-snapshot"),
	)
	if err != nil {
		return fmt.Errorf("full snapshot schedule %q: %w", r.Schedule, err)
	}
	if r.TakeAtStart || r.due(ctx) {
		r.takeWithRetry(ctx, "startup")
	}
	s.Start()
	<-ctx.Done()
	if err := s.Shutdown(); err != nil && !errors.Is(err, gocron.ErrStopJobsTimedOut) {
		return fmt.Errorf("stop full snapshot scheduler: %w", err)
	}
	// A task still in flight holds mu until its upload is committed or abandoned.
	r.mu.Lock()
	defer r.mu.Unlock()
	return nil
}

// due reports whether a full snapshot should be taken at start: the store has none, or the
// newest is older than the schedule's period. If the store cannot be listed, it is due.
func (r *Runner) due(ctx context.Context) bool {
	latest, ok, err := r.Store.Latest(ctx, catalog.KindFull)
	if err != nil {
		if ctx.Err() == nil {
			observerOr(r.Observer).Failed(Failure{Kind: catalog.KindFull, Op: OpList, Reason: ReasonStore, Err: err})
		}
		r.log().Warn("cannot list full snapshots; taking one now", "store", r.Store.URL(), "err", err)
		return true
	}
	if !ok {
		r.log().Info("the store has no full snapshot; taking one now", "store", r.Store.URL())
		return true
	}
	now := time.Now()
	age, period := now.Sub(latest.Time), r.Schedule.Period(now)
	if age > period {
		r.log().Info("the newest full snapshot is older than the schedule's period; taking one now",
			"revision", latest.Revision, "age", age.Round(time.Second), "period", period)
		return true
	}
	return false
}

// TakeNow takes one full snapshot now, waiting for any snapshot in flight first.
func (r *Runner) TakeNow(ctx context.Context) (catalog.Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.take(ctx, "request")
}

func (r *Runner) takeWithRetry(ctx context.Context, trigger string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	retryMin, retryMax := r.RetryMin, r.RetryMax
	if retryMin <= 0 {
		retryMin = 5 * time.Second
	}
	if retryMax <= 0 {
		retryMax = 5 * time.Minute
	}
	next := r.Schedule.Next(time.Now())
	waits := backoff.Backoff{Min: retryMin, Max: retryMax}
	for {
		wait := waits.Next()
		_, err := r.take(ctx, trigger)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrSkipped) || errors.Is(err, ErrFenced) {
			return
		}
		if time.Now().Add(wait).After(next) {
			r.log().Warn("full snapshot failed; the next scheduled one will try again", "next", next)
			return
		}
		r.log().Info("retrying full snapshot", "in", wait)
		if backoff.Sleep(ctx, wait) != nil {
			return
		}
	}
}

func (r *Runner) take(ctx context.Context, trigger string) (catalog.Snapshot, error) {
	start := time.Now()
	r.log().Info("taking full snapshot", "trigger", trigger)
	snap, err := r.Take(ctx)
	if err != nil {
		if errors.Is(err, ErrFenced) {
			observerOr(r.Observer).Fenced(catalog.KindFull, err)
			r.log().Warn("full snapshot fenced: this member no longer leads; nothing of it became visible, and it is not retried",
				"trigger", trigger, "err", err)
			return snap, err
		}
		if errors.Is(err, ErrSkipped) {
			r.log().Debug("full snapshot skipped", "trigger", trigger, "reason", err)
			return snap, err
		}
		if ctx.Err() != nil {
			r.log().Info("full snapshot abandoned: stopping", "trigger", trigger)
			return snap, err
		}
		reason := ReasonOf(err)
		observerOr(r.Observer).Failed(Failure{Kind: catalog.KindFull, Op: OpSnapshot, Reason: reason, Err: err})
		r.log().Error("full snapshot failed", "trigger", trigger, "store", r.Store.URL(), "reason", reason, "err", err)
		return snap, err
	}
	took := time.Since(start)
	observerOr(r.Observer).Taken(Taken{Snapshot: snap, Duration: took, Trigger: trigger})
	r.log().Info("full snapshot taken", "trigger", trigger, "revision", snap.Revision, "object", snap.Key,
		"bytes", snap.Size, "duration", took.Round(time.Millisecond))
	return snap, nil
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.Default()
	}
	return r.Log
}
