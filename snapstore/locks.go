package snapstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/etcdbr/etcdbr/internal/backoff"
)

// Restore leases: a restore announces in the store that it is reading objects, so that
// garbage collection (which may run in another process, on another machine) leaves them
// alone. See docs/retention.md.
//
// A lease is the object locks/restore-<id>.json. Until the restore has planned, the lease
// names no objects and protects all of them: garbage collection deletes nothing while it
// lives. Then it names the objects of the plan, and garbage collection keeps those (and what
// their chains need). The holder rewrites the lease every TTL/5; it stops protecting TTL
// after the store last wrote it, so a restore that died holds nothing for long.
const (
	leaseDir    = "locks/"
	leasePrefix = leaseDir + "restore-"
	leaseSuffix = ".json"
	// DefaultLeaseTTL is how long a lease protects after its last refresh by default.
	DefaultLeaseTTL = 10 * time.Minute
	// maxLeaseTTL caps what any lease may claim, so that a lease left by a restore that died
	// never pins objects for long, whatever it says.
	maxLeaseTTL = time.Hour
	// leaseRecheck is the longest garbage collection goes on deleting after it last read
	// the leases: it reads them again before a deletion that would start later.
	leaseRecheck = 2 * time.Second
	// DefaultLeaseSettle is how long a garbage collection that read the leases just before
	// a lease started protecting everything may go on deleting, with time for deletions in
	// flight to finish (LeaseHolder.Settle waits it out).
	DefaultLeaseSettle = leaseRecheck + 3*time.Second
	// staleLeaseAge is how long after a lease stopped protecting garbage collection
	// deletes its object.
	staleLeaseAge = time.Hour
	// maxLeaseSize bounds what is read of a lease object.
	maxLeaseSize = 64 << 20
)

// RestoreLease is a restore's announcement in the store, as garbage collection reads it.
type RestoreLease struct {
	// ID is the lease's random identifier; Holder and Purpose say who restores what, for
	// messages.
	ID      string `json:"id"`
	Holder  string `json:"holder"`
	Purpose string `json:"purpose,omitempty"`
	// Created is when the lease was first written and Expires when it ends by the holder's
	// clock, unless refreshed; TTLSeconds is how long each refresh extends it.
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	TTLSeconds int64     `json:"ttl_seconds"`
	// Keys are the objects the restore reads. Nil while it plans: then the lease protects
	// every object.
	Keys []string `json:"keys"`

	// Key is the lease object's key, ModTime when the store last wrote it (from the
	// listing), and Malformed why its content could not be read ("" when it could).
	Key       string    `json:"-"`
	ModTime   time.Time `json:"-"`
	Malformed string    `json:"-"`
}

// leaseFile is the stored form: a version, then the lease.
type leaseFile struct {
	Version int `json:"version"`
	RestoreLease
}

// Pending reports whether the lease names no objects yet: it protects all of them.
func (l RestoreLease) Pending() bool { return l.Keys == nil }

// TTL is how long the lease protects after its last refresh, within (0, 1h].
func (l RestoreLease) TTL() time.Duration {
	ttl := time.Duration(l.TTLSeconds) * time.Second
	if ttl <= 0 {
		return DefaultLeaseTTL
	}
	return min(ttl, maxLeaseTTL)
}

// End is when the lease stops protecting: TTL after the store last wrote it, or the
// holder's own expiry when that is later, but at most 2 TTL after the write (so that neither
// a small clock difference between holder and store nor a holder's clock far ahead matters
// much).
func (l RestoreLease) End() time.Time {
	if l.ModTime.IsZero() {
		return l.Expires
	}
	end := l.ModTime.Add(l.TTL())
	if l.Expires.After(end) {
		end = minTime(l.Expires, l.ModTime.Add(2*l.TTL()))
	}
	return end
}

// Live reports whether the lease still protects at now.
func (l RestoreLease) Live(now time.Time) bool { return now.Before(l.End()) }

// stale reports whether the lease object can be deleted: it stopped protecting long ago.
func (l RestoreLease) stale(now time.Time) bool { return now.Sub(l.End()) > staleLeaseAge }

func (l RestoreLease) String() string {
	s := "restore lease " + l.ID
	if l.Holder != "" {
		s += " of " + l.Holder
	}
	if l.Purpose != "" {
		s += " (" + l.Purpose + ")"
	}
	return s
}

// fingerprint identifies what a lease protects, to notice a lease that changed.
func (l RestoreLease) fingerprint() string {
	switch {
	case l.Pending():
		return l.Key + "|pending"
	case len(l.Keys) == 0:
		return l.Key + "|none"
	}
	return fmt.Sprintf("%s|%d|%s|%s", l.Key, len(l.Keys), l.Keys[0], l.Keys[len(l.Keys)-1])
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// isLeaseKey reports whether key is the name of a restore lease.
func isLeaseKey(key string) bool {
	id, ok := strings.CutPrefix(key, leasePrefix)
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, leaseSuffix)
	return ok && id != "" && !strings.ContainsAny(id, "/.")
}

// RestoreLeases lists and reads the restore leases in the store (one listing of locks/ and
// one read per lease). A lease whose content cannot be read is returned with Malformed set
// and no keys, so that it protects everything until TTL after it was written.
func (s *Store) RestoreLeases(ctx context.Context) ([]RestoreLease, error) {
	var leases []RestoreLease
	var readErr error
	err := s.eachObject(ctx, leaseDir, func(obj *blob.ListObject) error {
		if !isLeaseKey(obj.Key) {
			return nil
		}
		l, ok, err := s.readLease(ctx, obj.Key, obj.ModTime)
		if err != nil {
			readErr = err
			return err
		}
		if ok {
			leases = append(leases, l)
		}
		return nil
	})
	switch {
	case readErr != nil:
		return nil, readErr
	case err != nil:
		return nil, fmt.Errorf("list restore leases in %q: %w", s.url, err)
	}
	return leases, nil
}

// readLease reads one lease object; ok is false when it is gone (released meanwhile).
func (s *Store) readLease(ctx context.Context, key string, modTime time.Time) (RestoreLease, bool, error) {
	l := RestoreLease{Key: key, ModTime: modTime}
	r, err := s.bucket.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read restore lease %q in %q: %w", key, s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxLeaseSize+1))
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return l, false, nil
		}
		return l, false, fmt.Errorf("read restore lease %q in %q: %w", key, s.url, err)
	}
	var f leaseFile
	switch err := json.Unmarshal(data, &f); {
	case len(data) > maxLeaseSize:
		l.Malformed = fmt.Sprintf("larger than %d bytes", maxLeaseSize)
	case err != nil:
		l.Malformed = err.Error()
	case f.Version != 1:
		l.Malformed = fmt.Sprintf("version %d: this etcdbr reads version 1", f.Version)
	default:
		f.RestoreLease.Key, f.RestoreLease.ModTime = key, modTime
		return f.RestoreLease, true, nil
	}
	l.ID = strings.TrimSuffix(strings.TrimPrefix(key, leasePrefix), leaseSuffix)
	return l, true, nil
}

// LeaseOptions configure a restore lease.
type LeaseOptions struct {
	// Holder and Purpose say who restores what, for garbage collection's messages (default
	// Holder: host name and process id).
	Holder, Purpose string
	// TTL is how long the lease protects after each refresh (default DefaultLeaseTTL, at
	// most an hour). The holder refreshes it every TTL/5.
	TTL time.Duration
	// Settle is how long after the lease started protecting everything (written first, or
	// by Replan) a garbage collection that read the leases just before may go on deleting:
	// LeaseHolder.Settle waits until then (0: the default, DefaultLeaseSettle; negative: no
	// wait).
	Settle time.Duration
	// Log receives warnings about failed refreshes (nil: discarded).
	Log *slog.Logger
}

// LeaseHolder is a restore's lease, held until Release. Its methods are safe for
// concurrent use, and do nothing on a nil *LeaseHolder (a restore that could not announce
// itself, e.g. with read-only credentials, goes on without a lease).
type LeaseHolder struct {
	store  *Store
	log    *slog.Logger
	settle time.Duration
	stop   context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex // serializes writes of the lease
	lease RestoreLease
	// wroteAll reports that the store holds the lease as protecting everything (pending),
	// since widened: when it was written so after it named keys, or first.
	wroteAll bool
	widened  time.Time
}

// AcquireRestoreLease announces a restore in the store: it writes a lease that protects
// every object and keeps it refreshed in the background until Release (or until ctx
// ends). List and plan after it returns, then call Protect with the plan's objects.
//
// It does not wait: a garbage collection that read the leases just before the lease was
// written may go on deleting for up to opts.Settle, so a listing made at once may still
// name objects that are about to go. That is safe (an object is read whole and verified,
// or reported missing: a restore never uses part of one), and rare, so a restore pays for it
// only when it happens: on a missing object it calls Replan, waits Settle, lists again and
// plans again; that listing is as good as one made after waiting up front.
//
// A restore that cannot write the lease may go on without it (the returned error says why;
// garbage collection may then delete what it reads, which the restore notices as a missing
// object and plans again). When writing fails, the lease is deleted again in case the
// write landed after all.
func (s *Store) AcquireRestoreLease(ctx context.Context, opts LeaseOptions) (*LeaseHolder, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("restore lease: %w", err)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	ttl = min(ttl.Round(time.Second), maxLeaseTTL)
	holder := opts.Holder
	if holder == "" {
		host, _ := os.Hostname()
		holder = fmt.Sprintf("%s pid %d", host, os.Getpid())
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	settle := opts.Settle
	if settle == 0 {
		settle = DefaultLeaseSettle
	}
	h := &LeaseHolder{
		store: s, log: log, settle: max(settle, 0), done: make(chan struct{}),
		lease: RestoreLease{
			ID: hex.EncodeToString(id[:]), Holder: holder, Purpose: opts.Purpose,
			Created: now.UTC(), TTLSeconds: int64(ttl / time.Second),
		},
	}
	h.lease.Key = leasePrefix + h.lease.ID + leaseSuffix
	if err := h.write(ctx); err != nil {
		// A write cut off (a cancelled context, a timeout) may still land: take it back.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseCleanupTimeout)
		_ = s.bucket.Delete(dctx, h.lease.Key)
		cancel()
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.stop = stop
	go h.refresh(rctx, ctx.Done(), ttl/5)
	return h, nil
}

// leaseCleanupTimeout bounds the deletion of a lease whose write failed.
const leaseCleanupTimeout = 10 * time.Second

// Lease returns the lease as last written.
func (h *LeaseHolder) Lease() RestoreLease {
	if h == nil {
		return RestoreLease{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lease
	l.Keys = slices.Clone(l.Keys)
	return l
}

// Protect records the objects the restore reads (Plan.Full and Plan.Deltas: see PlanKeys).
// From then on the lease protects only those, and garbage collection keeps what their
// chains need. Call it again after planning again.
func (h *LeaseHolder) Protect(ctx context.Context, keys []string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.lease.Keys = append(make([]string, 0, len(keys)), keys...)
	h.mu.Unlock()
	return h.write(ctx)
}

// Replan makes the lease protect every object again, as before the first Protect: call it
// before listing the store to plan again (after an object the plan named disappeared), then
// Settle, so that no garbage collection that planned with the old keys still deletes while
// the restore lists. Protect the new plan's objects afterwards.
func (h *LeaseHolder) Replan(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.lease.Keys = nil
	h.mu.Unlock()
	return h.write(ctx)
}

// Settle waits until a garbage collection that read the leases just before the lease last
// started protecting everything (AcquireRestoreLease, Replan) has stopped deleting:
// LeaseOptions.Settle after that write. When that write has not reached the store yet (it
// failed and the background refresh retries it), it waits Settle from now. It returns at
// once on a nil holder, and ctx's error when ctx ends first.
func (h *LeaseHolder) Settle(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	until, name := h.widened.Add(h.settle), h.lease.String()
	if !h.wroteAll {
		until = time.Now().Add(h.settle)
	}
	h.mu.Unlock()
	if d := time.Until(until); d > 0 {
		if err := backoff.Sleep(ctx, d); err != nil {
			return fmt.Errorf("wait for garbage collection to notice %s: %w", name, err)
		}
	}
	return nil
}

// Release stops refreshing the lease and deletes it. Call it when the restore ends, also
// when it failed (with a context that is not cancelled, e.g. context.WithoutCancel).
func (h *LeaseHolder) Release(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.stop()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.store.bucket.Delete(ctx, h.lease.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("release %s in %q: %w (it stops protecting %v after its last refresh)", h.lease, h.store.url, err, h.lease.TTL())
	}
	return nil
}

// refresh rewrites the lease every period until stopped or until parent is done.
func (h *LeaseHolder) refresh(ctx context.Context, parent <-chan struct{}, period time.Duration) {
	defer close(h.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-parent:
			return
		case <-t.C:
			if err := h.write(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("cannot refresh the restore lease; garbage collection may delete what the restore "+
					"reads once it expires (the restore then plans again); retrying", "lease", h.lease.Key,
					"expires", h.lease.Expires, "err", err)
			}
		}
	}
}

// write (re)writes the lease with a new expiry.
func (h *LeaseHolder) write(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lease.Expires = time.Now().Add(h.lease.TTL()).UTC()
	data, err := json.MarshalIndent(leaseFile{Version: 1, RestoreLease: h.lease}, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", h.lease, err)
	}
	if err := h.store.writeRecord(ctx, h.lease.Key, data, false); err != nil {
		return fmt.Errorf("write %s to %q: %w", h.lease, h.store.url, err)
	}
	switch {
	case h.lease.Keys != nil:
		h.wroteAll = false
	case !h.wroteAll:
		h.wroteAll, h.widened = true, time.Now()
	}
	return nil
}

// PlanKeys returns the keys of the objects a restore plan reads, for LeaseHolder.Protect.
func PlanKeys(p Plan) []string {
	keys := make([]string, 0, 1+len(p.Deltas))
	keys = append(keys, p.Full.Key)
	for _, d := range p.Deltas {
		keys = append(keys, d.Key)
	}
	return keys
}
