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
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Restore locks: a restore announces in the store that it is reading objects, so that
// garbage collection (which may run in another process, on another machine) leaves them
// alone. See docs/retention.md.
//
// A lock is the object locks/restore-<id>.json. Until the restore has planned, the lock
// names no objects and protects all of them: garbage collection deletes nothing while it
// lives. Then it names the objects of the plan, and garbage collection keeps those (and what
// their chains need). The holder rewrites the lock every TTL/5; it stops protecting TTL
// after the store last wrote it, so a restore that died holds nothing for long.
const (
	lockDir    = "locks/"
	lockPrefix = lockDir + "restore-"
	lockSuffix = ".json"
	// lockRecheck is the longest garbage collection goes on deleting after it last read
	// the locks: it reads them again before a deletion that would start later.
	lockRecheck = 2 * time.Second
	// DefaultLockSettle is how long a garbage collection that read the locks just before
	// a lock started protecting everything may go on deleting, with time for deletions in
	// flight to finish (LockHolder.Settle waits it out).
	DefaultLockSettle = lockRecheck + 3*time.Second
	// maxLockSize bounds what is read of a lock object.
	maxLockSize = 64 << 20
)

// lockFile is the stored form: a version, then the lock.
type lockFile struct {
	Version int `json:"version"`
	catalog.RestoreLock
}

// fingerprint identifies what a lock protects, to notice a lock that changed.
func fingerprint(l catalog.RestoreLock) string {
	switch {
	case l.Pending():
		return l.Key + "|pending"
	case len(l.Keys) == 0:
		return l.Key + "|none"
	}
	return fmt.Sprintf("%s|%d|%s|%s", l.Key, len(l.Keys), l.Keys[0], l.Keys[len(l.Keys)-1])
}

// isLockKey reports whether key is the name of a restore lock.
func isLockKey(key string) bool {
	id, ok := strings.CutPrefix(key, lockPrefix)
	if !ok {
		return false
	}
	id, ok = strings.CutSuffix(id, lockSuffix)
	return ok && id != "" && !strings.ContainsAny(id, "/.")
}

// RestoreLocks lists and reads the restore locks in the store (one listing of locks/ and
// one read per lock). A lock whose content cannot be read is returned with Malformed set
// and no keys, so that it protects everything until TTL after it was written.
func (s *Store) RestoreLocks(ctx context.Context) ([]catalog.RestoreLock, error) {
	if s.foreign != nil {
		return nil, nil
	}
	var locks []catalog.RestoreLock
	var readErr error
	err := s.eachObject(ctx, lockDir, func(obj *blob.ListObject) error {
		if !isLockKey(obj.Key) {
			return nil
		}
		l, ok, err := s.readLock(ctx, obj.Key, obj.ModTime)
		if err != nil {
			readErr = err
			return err
		}
		if ok {
			locks = append(locks, l)
		}
		return nil
	})
	switch {
	case readErr != nil:
		return nil, readErr
	case err != nil:
		return nil, fmt.Errorf("list restore locks in %q: %w", s.url, err)
	}
	return locks, nil
}

// readLock reads one lock object; ok is false when it is gone (released meanwhile).
func (s *Store) readLock(ctx context.Context, key string, modTime time.Time) (catalog.RestoreLock, bool, error) {
	l := catalog.RestoreLock{Key: key, ModTime: modTime}
	r, err := s.bucket.NewReader(ctx, key, nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read restore lock %q in %q: %w", key, s.url, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxLockSize+1))
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return l, false, nil
		}
		return l, false, fmt.Errorf("read restore lock %q in %q: %w", key, s.url, err)
	}
	var f lockFile
	switch err := json.Unmarshal(data, &f); {
	case len(data) > maxLockSize:
		l.Malformed = fmt.Sprintf("larger than %d bytes", maxLockSize)
	case err != nil:
		l.Malformed = err.Error()
	case f.Version != 1:
		l.Malformed = fmt.Sprintf("version %d: this etcdbr reads version 1", f.Version)
	default:
		f.RestoreLock.Key, f.RestoreLock.ModTime = key, modTime
		return f.RestoreLock, true, nil
	}
	l.ID = strings.TrimSuffix(strings.TrimPrefix(key, lockPrefix), lockSuffix)
	return l, true, nil
}

// LockOptions configure a restore lock.
type LockOptions struct {
	// Holder and Purpose say who restores what, for garbage collection's messages (default
	// Holder: host name and process id).
	Holder, Purpose string
	// TTL is how long the lock protects after each refresh (default DefaultLockTTL, at
	// most an hour). The holder refreshes it every TTL/5.
	TTL time.Duration
	// Settle is how long after the lock started protecting everything (written first, or
	// by Replan) a garbage collection that read the locks just before may go on deleting:
	// LockHolder.Settle waits until then (0: the default, DefaultLockSettle; negative: no
	// wait).
	Settle time.Duration
	// Log receives warnings about failed refreshes (nil: discarded).
	Log *slog.Logger
}

// LockHolder is a restore's lock, held until Release. Its methods are safe for
// concurrent use, and do nothing on a nil *LockHolder (a restore that could not announce
// itself, e.g. with read-only credentials, goes on without a lock).
type LockHolder struct {
	store  *Store
	log    *slog.Logger
	settle time.Duration
	stop   context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex // serializes writes of the lock
	lock catalog.RestoreLock
	// wroteAll reports that the store holds the lock as protecting everything (pending),
	// since widened: when it was written so after it named keys, or first.
	wroteAll bool
	widened  time.Time
}

// AcquireRestoreLock announces a restore in the store: it writes a lock that protects
// every object and keeps it refreshed in the background until Release (or until ctx
// ends). List and plan after it returns, then call Protect with the plan's objects.
//
// It does not wait: a garbage collection that read the locks just before the lock was
// written may go on deleting for up to opts.Settle, so a listing made at once may still
// name objects that are about to go. That is safe (an object is read whole and verified,
// or reported missing: a restore never uses part of one), and rare, so a restore pays for it
// only when it happens: on a missing object it calls Replan, waits Settle, lists again and
// plans again; that listing is as good as one made after waiting up front.
//
// A store of another tool (Store.ReadOnly) gets no lock: nothing is written into it, and the
// returned holder is nil (its methods do nothing).
//
// A restore that cannot write the lock may go on without it (the returned error says why;
// garbage collection may then delete what it reads, which the restore notices as a missing
// object and plans again). When writing fails, the lock is deleted again in case the
// write landed after all.
func (s *Store) AcquireRestoreLock(ctx context.Context, opts LockOptions) (*LockHolder, error) {
	if s.foreign != nil {
		return nil, nil // another tool's store is only read; etcdbr's garbage collection never runs on it
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("restore lock: %w", err)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = catalog.DefaultLockTTL
	}
	ttl = min(ttl.Round(time.Second), catalog.MaxLockTTL)
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
		settle = DefaultLockSettle
	}
	h := &LockHolder{
		store: s, log: log, settle: max(settle, 0), done: make(chan struct{}),
		lock: catalog.RestoreLock{
			ID: hex.EncodeToString(id[:]), Holder: holder, Purpose: opts.Purpose,
			Created: now.UTC(), TTLSeconds: int64(ttl / time.Second),
		},
	}
	h.lock.Key = lockPrefix + h.lock.ID + lockSuffix
	if err := h.write(ctx); err != nil {
		// A write cut off (a cancelled context, a timeout) may still land: take it back.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockCleanupTimeout)
		_ = s.bucket.Delete(dctx, h.lock.Key)
		cancel()
		return nil, err
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.stop = stop
	go h.refresh(rctx, ctx.Done(), ttl/5)
	return h, nil
}

// lockCleanupTimeout bounds the deletion of a lock whose write failed.
const lockCleanupTimeout = 10 * time.Second

// Held returns the lock as last written.
func (h *LockHolder) Held() catalog.RestoreLock {
	if h == nil {
		return catalog.RestoreLock{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lock
	l.Keys = slices.Clone(l.Keys)
	return l
}

// Protect records the objects the restore reads (catalog.RestorePlan's Full and Deltas:
// see catalog.PlanKeys). From then on the lock protects only those, and garbage collection
// keeps what their chains need. Call it again after planning again.
func (h *LockHolder) Protect(ctx context.Context, keys []string) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.lock.Keys = append(make([]string, 0, len(keys)), keys...)
	h.mu.Unlock()
	return h.write(ctx)
}

// Replan makes the lock protect every object again, as before the first Protect: call it
// before listing the store to plan again (after an object the plan named disappeared), then
// Settle, so that no garbage collection that planned with the old keys still deletes while
// the restore lists. Protect the new plan's objects afterwards.
func (h *LockHolder) Replan(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	h.lock.Keys = nil
	h.mu.Unlock()
	return h.write(ctx)
}

// Settle waits until a garbage collection that read the locks just before the lock last
// started protecting everything (AcquireRestoreLock, Replan) has stopped deleting:
// LockOptions.Settle after that write. When that write has not reached the store yet (it
// failed and the background refresh retries it), it waits Settle from now. It returns at
// once on a nil holder, and ctx's error when ctx ends first.
func (h *LockHolder) Settle(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	until, name := h.widened.Add(h.settle), h.lock.String()
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

// Release stops refreshing the lock and deletes it. Call it when the restore ends, also
// when it failed (with a context that is not cancelled, e.g. context.WithoutCancel).
func (h *LockHolder) Release(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.stop()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.store.bucket.Delete(ctx, h.lock.Key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("release %s in %q: %w (it stops protecting %v after its last refresh)", h.lock, h.store.url, err, h.lock.TTL())
	}
	return nil
}

// refresh rewrites the lock every period until stopped or until parent is done.
func (h *LockHolder) refresh(ctx context.Context, parent <-chan struct{}, period time.Duration) {
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
				h.log.Warn("cannot refresh the restore lock; garbage collection may delete what the restore "+
					"reads once it expires (the restore then plans again); retrying", "lock", h.lock.Key,
					"expires", h.lock.Expires, "err", err)
			}
		}
	}
}

// write (re)writes the lock with a new expiry.
func (h *LockHolder) write(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lock.Expires = time.Now().Add(h.lock.TTL()).UTC()
	data, err := json.MarshalIndent(lockFile{Version: 1, RestoreLock: h.lock}, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", h.lock, err)
	}
	if err := h.store.writeRecord(ctx, h.lock.Key, data, false); err != nil {
		return fmt.Errorf("write %s to %q: %w", h.lock, h.store.url, err)
	}
	switch {
	case h.lock.Keys != nil:
		h.wroteAll = false
	case !h.wroteAll:
		h.wroteAll, h.widened = true, time.Now()
	}
	return nil
}
