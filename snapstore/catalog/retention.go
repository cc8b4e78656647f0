package catalog

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// PolicyKind names a retention policy.
type PolicyKind string

// The retention policies (docs/retention.md says exactly what each keeps).
const (
	// PolicyExponential keeps every object of the current hour and the point-in-time window
	// from its start, the newest full snapshot of each earlier hour of today, of each of the
	// 7 days before today and of each of the 4 calendar weeks before the current one.
	PolicyExponential PolicyKind = "exponential"
	// PolicyLimit keeps the newest MaxBackups full snapshots and every delta after the
	// oldest of them.
	PolicyLimit PolicyKind = "limit"
)

// Policy says which backups garbage collection keeps. Whatever it says, garbage collection
// never deletes what a kept point needs to be restored (see PlanGC).
type Policy struct {
	Kind PolicyKind
	// MaxBackups is how many full snapshots PolicyLimit keeps, at least 1. It must be 0 for
	// PolicyExponential.
	MaxBackups int
	// KeepWithin, when positive, also keeps everything that restoring to any point of the
	// last KeepWithin needs: the newest full snapshot taken at or before its start, and every
	// object after it.
	KeepWithin time.Duration
	// Location is the time zone in which PolicyExponential counts hours, days and weeks;
	// nil means UTC (the time zone of the objects' names).
	Location *time.Location
}

// Validate checks that the policy can be applied.
func (p Policy) Validate() error {
	switch p.Kind {
	case PolicyExponential:
		if p.MaxBackups != 0 {
			return fmt.Errorf("retention policy %q: a number of full snapshots to keep (%d) applies only to the %q policy",
				p.Kind, p.MaxBackups, PolicyLimit)
		}
	case PolicyLimit:
		if p.MaxBackups < 1 {
			return fmt.Errorf("retention policy %q: keep at least 1 full snapshot (got %d)", p.Kind, p.MaxBackups)
		}
	case "":
		return errors.New("retention policy: no policy given: use " + string(PolicyExponential) + " or " + string(PolicyLimit))
	default:
		return fmt.Errorf("retention policy %q: unknown: use %q or %q", p.Kind, PolicyExponential, PolicyLimit)
	}
	if p.KeepWithin < 0 {
		return fmt.Errorf("retention policy: keep-within %v is negative", p.KeepWithin)
	}
	return nil
}

// String describes the policy in a sentence, for logs and the gc command.
func (p Policy) String() string {
	var s string
	switch p.Kind {
	case PolicyLimit:
		s = "limit: " + newestFulls(p.MaxBackups) + " and the deltas after the oldest of them"
		if p.MaxBackups == 1 {
			s = "limit: the newest full snapshot and the deltas after it"
		}
	case PolicyExponential:
		s = fmt.Sprintf("exponential: the current hour, then the newest full snapshot of each hour of today, "+
			"of each of the 7 days before and of each of the 4 weeks before this one (counted in %s)", p.location())
	default:
		s = string(p.Kind)
	}
	if p.KeepWithin > 0 {
		s += fmt.Sprintf("; and every point of the last %v", p.KeepWithin)
	}
	return s
}

// newestFulls is "the newest n full snapshots", or "the newest full snapshot".
func newestFulls(n int) string {
	if n == 1 {
		return "the newest full snapshot"
	}
	return fmt.Sprintf("the newest %d full snapshots", n)
}

func (p Policy) location() *time.Location {
	if p.Location == nil {
		return time.UTC
	}
	return p.Location
}

// The reasons an object is kept, as bits: an object can be kept for several.
const (
	keepBase   uint8 = 1 << iota // the full snapshot the point-in-time window starts from
	keepWindow                   // in the point-in-time window
	keepBucket                   // the newest full snapshot of an hour, day or week; or one of the newest N
	keepLock                     // a restore in progress reads it
	keepNeeded                   // the chain of a kept delta outside the window needs it
	keepNoFull                   // the store has no full snapshot: nothing is deleted
)

// tier is a range of time in which the exponential policy keeps one full snapshot per bucket.
type tier uint8

const (
	tierOlder       tier = iota // older than the policy keeps
	tierCurrentHour             // the current hour: everything is kept
	tierHour                    // an earlier hour of today
	tierDay                     // one of the 7 days before today
	tierWeek                    // one of the 4 calendar weeks before the current one
)

// bucket is an hour, day or week of a tier. key identifies it: the Unix time of the start
// of the hour (so that the two passes through a repeated hour at the end of summer time are
// two buckets), or of the day or week's civil date at 00:00 UTC.
type bucket struct {
	tier tier
	key  int64
}

// calendar counts the exponential policy's hours, days and weeks around now in a time zone.
type calendar struct {
	loc       *time.Location
	hourStart time.Time // the start of the current hour
	today     int64     // now's civil date, in days since 1970-01-01
	thisWeek  int64     // the civil date of the Monday of now's week
}

func newCalendar(now time.Time, loc *time.Location) calendar {
	hour, day := localUnits(now, loc)
	return calendar{loc: loc, hourStart: time.Unix(hour, 0), today: day, thisWeek: mondayOf(day)}
}

// localUnits returns the start of t's hour in loc, in Unix seconds (the last instant the
// wall clock showed a whole hour: in the hour repeated at the end of summer time, the second
// pass starts its own hour), and t's civil date in loc, in days since 1970-01-01.
func localUnits(t time.Time, loc *time.Location) (hourStart, day int64) {
	_, offset := t.In(loc).Zone()
	wall := t.Unix() + int64(offset) // whole seconds; offsets are whole minutes
	return t.Unix() - floorMod(wall, 3600), floorDiv(wall, 86400)
}

// mondayOf returns the civil date of the Monday of day's week (weeks start on Monday, as in
// ISO 8601; 1970-01-01 was a Thursday).
func mondayOf(day int64) int64 { return day - floorMod(day+3, 7) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }

func dayString(day int64) string {
	return time.Unix(day*86400, 0).UTC().Format("2006-01-02")
}

// classify returns the tier and bucket of an object taken at t.
func (c calendar) classify(t time.Time) bucket {
	if !t.Before(c.hourStart) {
		return bucket{tier: tierCurrentHour}
	}
	hour, day := localUnits(t, c.loc)
	switch {
	case day >= c.today: // an earlier hour of today
		return bucket{tier: tierHour, key: hour}
	case day >= c.today-7:
		return bucket{tier: tierDay, key: day}
	case mondayOf(day) >= c.thisWeek-28:
		return bucket{tier: tierWeek, key: mondayOf(day)}
	}
	return bucket{tier: tierOlder}
}

// describe returns the words for a bucket: "hour 2026-11-25 13:00 UTC", "day 2026-11-24
// (UTC)", "the week from Monday 2026-11-16 (UTC)".
func (c calendar) describe(b bucket) string {
	switch b.tier {
	case tierHour:
		return "hour " + time.Unix(b.key, 0).In(c.loc).Format("2006-01-02 15:04 MST")
	case tierDay:
		return fmt.Sprintf("day %s (%s)", dayString(b.key), c.loc)
	case tierWeek:
		return fmt.Sprintf("the week from Monday %s (%s)", dayString(b.key), c.loc)
	}
	return ""
}

// retention is what a policy keeps of a listing, before restore locks are applied: for
// each full snapshot and delta (in the listing's order), the reasons it is kept (0: it is
// deleted).
type retention struct {
	policy Policy
	cal    calendar
	fulls  []Snapshot
	deltas []Snapshot
	keepF  []uint8
	keepD  []uint8
	bucket []bucket // of each full snapshot (exponential)
	rep    []int    // for each full snapshot, the index of the newest one of its bucket (-1: none)
	// base is the index of the full snapshot the point-in-time window starts from (-1: the
	// store has no full snapshot). Everything after its revision is kept, and so is every
	// object taken at or after from (after from, when fromExclusive).
	base          int
	from          time.Time
	fromExclusive bool
}

// retain decides what policy p keeps of a listing at now. fulls and deltas are sorted as
// snapstore's Store.List sorts them. It is a pure function of its arguments.
func (p Policy) retain(fulls, deltas []Snapshot, now time.Time) retention {
	r := retention{
		policy: p, cal: newCalendar(now, p.location()),
		fulls: fulls, deltas: deltas,
		keepF: make([]uint8, len(fulls)), keepD: make([]uint8, len(deltas)),
		base: -1,
	}
	if len(fulls) == 0 {
		// Nothing can be restored: the deltas may yet meet a full snapshot (one being
		// uploaded, one copied in), so nothing is deleted.
		for i := range r.keepD {
			r.keepD[i] = keepNoFull
		}
		return r
	}
	switch p.Kind {
	case PolicyLimit:
		r.base = max(0, len(fulls)-p.MaxBackups)
		r.from, r.fromExclusive = fulls[r.base].Time, true
		for i := r.base; i < len(fulls); i++ {
			r.keepF[i] |= keepBucket
		}
	case PolicyExponential:
		r.from = r.cal.hourStart
		r.bucketize()
	}
	if p.KeepWithin > 0 {
		if start := now.Add(-p.KeepWithin); start.Before(r.from) {
			r.from, r.fromExclusive = start, false
		}
	}
	if p.Kind != PolicyLimit || r.from.Before(fulls[r.base].Time) {
		// A time window: it starts from the full snapshot a restore to its start would use.
		r.base = baseAt(fulls, r.from, r.base)
	}
	r.window()
	return r
}

// baseAt returns the index of the full snapshot that a restore to time t starts from: the
// newest (highest revision) taken at or before t; when none was, the oldest. A base already
// chosen (other >= 0) wins when it is older.
func baseAt(fulls []Snapshot, t time.Time, other int) int {
	base := 0
	for i := range fulls {
		if !fulls[i].Time.After(t) {
			base = i // the last in List order: the highest revision
		}
	}
	if other >= 0 && other < base {
		return other
	}
	return base
}

// bucketize keeps the newest full snapshot of each hour, day and week bucket.
func (r *retention) bucketize() {
	r.bucket = make([]bucket, len(r.fulls))
	r.rep = make([]int, len(r.fulls))
	// The buckets seen and their newest full snapshot: a few dozen at most (24 hours, 7
	// days, 5 weeks), the latest at the end when the listing is in time order.
	type newest struct {
		b bucket
		i int
	}
	var reps []newest
	find := func(b bucket) int {
		for j := len(reps) - 1; j >= 0; j-- {
			if reps[j].b == b {
				return j
			}
		}
		return -1
	}
	for i, f := range r.fulls {
		b := r.cal.classify(f.Time)
		r.bucket[i] = b
		if b.tier == tierHour || b.tier == tierDay || b.tier == tierWeek {
			if j := find(b); j >= 0 {
				reps[j].i = i // List order: the last one has the highest revision
			} else {
				reps = append(reps, newest{b, i})
			}
		}
	}
	for i, b := range r.bucket {
		r.rep[i] = -1
		if j := find(b); j >= 0 {
			r.rep[i] = reps[j].i
			if reps[j].i == i {
				r.keepF[i] |= keepBucket
			}
		}
	}
}

// window keeps the base and everything after it: every object with a higher revision (a
// suffix of the listing), and every object taken in the window's time.
func (r *retention) window() {
	baseRev := r.fulls[r.base].Revision
	r.keepF[r.base] |= keepBase
	mark := func(snaps []Snapshot, keep []uint8) {
		after, _ := slices.BinarySearchFunc(snaps, baseRev, func(s Snapshot, rev int64) int {
			if s.Revision <= rev {
				return -1
			}
			return 1
		})
		for i := range snaps[:after] {
			if t := snaps[i].Time; t.After(r.from) || (!r.fromExclusive && t.Equal(r.from)) {
				keep[i] |= keepWindow
			}
		}
		for i := after; i < len(snaps); i++ {
			keep[i] |= keepWindow
		}
	}
	mark(r.fulls, r.keepF)
	mark(r.deltas, r.keepD)
}

// windowFrom returns when the point-in-time window starts: its base's time for the limit
// policy without a longer keep-within, the start of the current hour or of keep-within
// otherwise, but not before the base (nothing before the oldest full snapshot restores).
func (r *retention) windowFrom() time.Time {
	if base := r.fulls[r.base].Time; r.fromExclusive || base.After(r.from) {
		return base
	}
	return r.from
}

// sortedListing returns fulls and deltas sorted as snapstore's Store.List sorts them (the
// same slices when they already are).
func sortedListing(fulls, deltas []Snapshot) ([]Snapshot, []Snapshot) {
	sortSnaps := func(s []Snapshot) []Snapshot {
		sorted := true
		for i := 1; i < len(s) && sorted; i++ {
			sorted = s[i-1].Revision < s[i].Revision || CompareSnapshots(s[i-1], s[i]) < 0
		}
		if sorted {
			return s
		}
		s = slices.Clone(s)
		slices.SortFunc(s, CompareSnapshots)
		return s
	}
	return sortSnaps(fulls), sortSnaps(deltas)
}
