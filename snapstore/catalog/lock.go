package catalog

import "time"

const (
	// DefaultLockTTL is how long a lock protects after its last refresh by default.
	DefaultLockTTL = 10 * time.Minute
	// MaxLockTTL caps what any lock may claim, so that a lock left by a restore that died
	// never pins objects for long, whatever it says.
	MaxLockTTL = time.Hour
	// StaleLockAge is how long after a lock stopped protecting garbage collection
	// deletes its object.
	StaleLockAge = time.Hour
)

// RestoreLock is a restore's announcement in the store, as garbage collection reads it
// (docs/retention.md). Its JSON fields are the stored format that snapstore writes under
// locks/; earlier versions called it a restore lease, and the format did not change with
// the name.
type RestoreLock struct {
	// ID is the lock's random identifier; Holder and Purpose say who restores what, for
	// messages.
	ID      string `json:"id"`
	Holder  string `json:"holder"`
	Purpose string `json:"purpose,omitempty"`
	// Created is when the lock was first written and Expires when it ends by the holder's
	// clock, unless refreshed; TTLSeconds is how long each refresh extends it.
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	TTLSeconds int64     `json:"ttl_seconds"`
	// Keys are the objects the restore reads. Nil while it plans: then the lock protects
	// every object.
	Keys []string `json:"keys"`

	// Key is the lock object's key, ModTime when the store last wrote it (from the
	// listing), and Malformed why its content could not be read ("" when it could).
	Key       string    `json:"-"`
	ModTime   time.Time `json:"-"`
	Malformed string    `json:"-"`
}

// Pending reports whether the lock names no objects yet: it protects all of them.
func (l RestoreLock) Pending() bool { return l.Keys == nil }

// TTL is how long the lock protects after its last refresh, within (0, 1h].
func (l RestoreLock) TTL() time.Duration {
	ttl := time.Duration(l.TTLSeconds) * time.Second
	if ttl <= 0 {
		return DefaultLockTTL
	}
	return min(ttl, MaxLockTTL)
}

// End is when the lock stops protecting: TTL after the store last wrote it, or the
// holder's own expiry when that is later, but at most 2 TTL after the write (so that neither
// a small clock difference between holder and store nor a holder's clock far ahead matters
// much).
func (l RestoreLock) End() time.Time {
	if l.ModTime.IsZero() {
		return l.Expires
	}
	end := l.ModTime.Add(l.TTL())
	if l.Expires.After(end) {
		end = minTime(l.Expires, l.ModTime.Add(2*l.TTL()))
	}
	return end
}

// Live reports whether the lock still protects at now.
func (l RestoreLock) Live(now time.Time) bool { return now.Before(l.End()) }

// stale reports whether the lock object can be deleted: it stopped protecting long ago.
func (l RestoreLock) stale(now time.Time) bool { return now.Sub(l.End()) > StaleLockAge }

func (l RestoreLock) String() string {
	s := "restore lock " + l.ID
	if l.Holder != "" {
		s += " of " + l.Holder
	}
	if l.Purpose != "" {
		s += " (" + l.Purpose + ")"
	}
	return s
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
