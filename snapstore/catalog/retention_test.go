package catalog_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// ts parses a time in RFC 3339 (UTC unless it says otherwise).
func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func fullAt(rev int64, at string) catalog.Snapshot {
	t := ts(at)
	return catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: t, Key: catalog.FullName(rev, t, false)}
}

func deltaAt(from, to int64, at string) catalog.Snapshot {
	t := ts(at)
	return catalog.Snapshot{Kind: catalog.KindDelta, From: from, Revision: to, Time: t, Key: catalog.DeltaName(from, to, t, false)}
}

func zone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// obj is an object of a listing and whether garbage collection must keep it.
type obj struct {
	snap catalog.Snapshot
	keep bool
}

const keep, drop = true, false

// listing splits objects into a listing, sorted as Store.List sorts.
func listing(objs []obj) catalog.Listing {
	var l catalog.Listing
	for _, o := range objs {
		if o.snap.Kind == catalog.KindFull {
			l.Fulls = append(l.Fulls, o.snap)
		} else {
			l.Deltas = append(l.Deltas, o.snap)
		}
	}
	return l
}

// checkDecisions checks that the plan keeps and deletes exactly what objs say, each object
// once, with a reason.
func checkDecisions(t *testing.T, plan catalog.GCPlan, objs []obj) {
	t.Helper()
	verdicts := map[string][]catalog.Decision{}
	for _, d := range slices.Concat(plan.Kept(), plan.Delete) {
		verdicts[d.Snapshot.Key] = append(verdicts[d.Snapshot.Key], d)
	}
	if len(verdicts) != len(objs) {
		t.Errorf("%d objects decided, %d listed", len(verdicts), len(objs))
	}
	for _, o := range objs {
		ds := verdicts[o.snap.Key]
		if len(ds) != 1 {
			t.Errorf("%s: decided %d times: %v", o.snap.Key, len(ds), ds)
			continue
		}
		if ds[0].Reason == "" {
			t.Errorf("%s: no reason", o.snap.Key)
		}
		if ds[0].Keep != o.keep {
			want := map[bool]string{true: "keep", false: "delete"}[o.keep]
			t.Errorf("%s: want %s, got %s: %s", o.snap.Key, want, map[bool]string{true: "kept", false: "deleted"}[ds[0].Keep], ds[0].Reason)
		}
	}
}

// fourHours is a store of the morning of Wednesday 2026-11-25 (UTC): a full snapshot just
// after each hour from 11:00 to 14:00, and deltas every few minutes; the first delta after
// each full snapshot starts at or before its revision, as the deltas of a running member do.
func fourHours(keeps ...bool) []obj {
	snaps := []catalog.Snapshot{
		fullAt(1100, "2026-11-25T11:00:00.200Z"),
		deltaAt(1090, 1150, "2026-11-25T11:00:10Z"),
		deltaAt(1151, 1199, "2026-11-25T11:59:50Z"),
		fullAt(1200, "2026-11-25T12:00:00.200Z"),
		deltaAt(1200, 1250, "2026-11-25T12:00:10Z"),
		deltaAt(1251, 1299, "2026-11-25T12:59:50Z"),
		fullAt(1300, "2026-11-25T13:00:00.200Z"),
		deltaAt(1300, 1350, "2026-11-25T13:00:10Z"),
		deltaAt(1351, 1399, "2026-11-25T13:59:50Z"),
		fullAt(1400, "2026-11-25T14:00:00.200Z"),
		deltaAt(1400, 1450, "2026-11-25T14:00:10Z"),
		deltaAt(1451, 1460, "2026-11-25T14:29:50Z"),
	}
	if len(keeps) != len(snaps) {
		panic(fmt.Sprintf("fourHours: %d verdicts for %d objects", len(keeps), len(snaps)))
	}
	objs := make([]obj, len(snaps))
	for i := range snaps {
		objs[i] = obj{snaps[i], keeps[i]}
	}
	return objs
}

// daily is a store of full snapshots at 10:00 and 20:00 (UTC) of every day from first to
// last (inclusive), the ones at the times in kept kept.
func daily(first, last string, extra []catalog.Snapshot, kept ...string) []obj {
	want := map[time.Time]bool{}
	for _, k := range kept {
		want[ts(k)] = true
	}
	var objs []obj
	rev := int64(1000)
	for day := ts(first + "T00:00:00Z"); !day.After(ts(last + "T00:00:00Z")); day = day.AddDate(0, 0, 1) {
		for _, h := range []int{10, 20} {
			at := day.Add(time.Duration(h) * time.Hour)
			f := catalog.Snapshot{Kind: catalog.KindFull, Revision: rev, Time: at, Key: catalog.FullName(rev, at, false)}
			objs = append(objs, obj{f, want[at]})
			delete(want, at)
			rev += 100
		}
	}
	for _, s := range extra {
		objs = append(objs, obj{s, want[s.Time]})
		delete(want, s.Time)
	}
	if len(want) > 0 {
		panic(fmt.Sprintf("daily: kept times not in the store: %v", want))
	}
	return objs
}

var exponential = catalog.Policy{Kind: catalog.PolicyExponential}

func exponentialIn(loc string) catalog.Policy {
	return catalog.Policy{Kind: catalog.PolicyExponential, Location: zone(loc)}
}

func TestRetentionPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy catalog.Policy
		now    string
		objs   []obj
	}{
		// The exponential policy, in UTC (the default).
		{
			name: "exponential: the current hour and the chain from the previous hour's full snapshot; one full snapshot per earlier hour",
			// 14:30: the window starts at 14:00, restored from the 13:00 full snapshot; the
			// deltas before it go, the full snapshots of 11:00 and 12:00 stay as points.
			policy: exponential, now: "2026-11-25T14:30:00Z",
			objs: fourHours(keep, drop, drop, keep, drop, drop, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "exponential: two full snapshots in an hour, the newer stays",
			policy: exponential, now: "2026-11-25T14:30:00Z",
			objs: []obj{
				{fullAt(1100, "2026-11-25T11:00:00Z"), drop},
				{deltaAt(1101, 1129, "2026-11-25T11:29:00Z"), drop},
				{fullAt(1130, "2026-11-25T11:30:00Z"), keep},
				{deltaAt(1131, 1159, "2026-11-25T11:59:00Z"), drop},
				{fullAt(1160, "2026-11-25T13:40:00Z"), keep},
				{deltaAt(1161, 1170, "2026-11-25T14:10:00Z"), keep},
			},
		},
		{
			name:   "exponential: at the hour exactly, the window starts now and a full snapshot taken at the hour starts it",
			policy: exponential, now: "2026-11-25T13:00:00Z",
			objs: []obj{
				{fullAt(1100, "2026-11-25T11:00:00Z"), keep},
				{deltaAt(1101, 1199, "2026-11-25T11:59:00Z"), drop},
				{fullAt(1200, "2026-11-25T12:00:00Z"), keep},
				{deltaAt(1201, 1299, "2026-11-25T12:59:59.999Z"), drop},
				{fullAt(1300, "2026-11-25T13:00:00Z"), keep},
			},
		},
		{
			name:   "exponential: a millisecond before the hour, the hour is still the current one",
			policy: exponential, now: "2026-11-25T12:59:59.999Z",
			objs: []obj{
				{fullAt(1100, "2026-11-25T11:00:00Z"), keep},
				{deltaAt(1101, 1199, "2026-11-25T11:59:00Z"), drop},
				{fullAt(1200, "2026-11-25T12:00:00Z"), keep},
				{deltaAt(1201, 1299, "2026-11-25T12:59:59.999Z"), keep},
			},
		},
		{
			name:   "exponential: before the hour's full snapshot, the previous hour's chain holds the current hour",
			policy: exponential, now: "2026-11-25T14:00:00Z",
			objs: fourHours(keep, drop, drop, keep, drop, drop, keep, keep, keep, keep, keep, keep)[:9],
		},
		{
			name:   "exponential: at midnight yesterday's hours fold into one full snapshot for the day",
			policy: exponential, now: "2026-11-26T00:30:00Z",
			objs: []obj{
				{fullAt(2100, "2026-11-25T21:00:00.100Z"), drop},
				{deltaAt(2100, 2199, "2026-11-25T21:59:50Z"), drop},
				{fullAt(2200, "2026-11-25T22:00:00.100Z"), drop},
				{deltaAt(2200, 2299, "2026-11-25T22:59:50Z"), drop},
				{fullAt(2300, "2026-11-25T23:00:00.100Z"), keep},
				{deltaAt(2300, 2399, "2026-11-25T23:59:50Z"), keep},
				{fullAt(2400, "2026-11-26T00:00:00.100Z"), keep},
				{deltaAt(2400, 2410, "2026-11-26T00:29:50Z"), keep},
			},
		},
		{
			name:   "exponential: a millisecond before midnight, every hour of the day is kept",
			policy: exponential, now: "2026-11-25T23:59:59.999Z",
			objs: []obj{
				{fullAt(2100, "2026-11-25T21:00:00.100Z"), keep},
				{deltaAt(2100, 2199, "2026-11-25T21:59:50Z"), drop},
				{fullAt(2200, "2026-11-25T22:00:00.100Z"), keep},
				{deltaAt(2200, 2299, "2026-11-25T22:59:50Z"), keep},
				{fullAt(2300, "2026-11-25T23:00:00.100Z"), keep},
				{deltaAt(2300, 2399, "2026-11-25T23:59:50Z"), keep},
			},
		},
		{
			// Wednesday 2026-11-25 12:00. Days: the 18th to the 24th. Weeks (from Monday):
			// 2026-10-26, 11-02, 11-09, and 11-16 up to the 17th (the days after are days).
			name:   "exponential: 7 days, then the 4 calendar weeks before this one; older ones go",
			policy: exponential, now: "2026-11-25T12:00:00Z",
			objs: daily("2026-10-24", "2026-11-24", []catalog.Snapshot{fullAt(1000000, "2026-11-25T10:00:00Z")},
				"2026-11-25T10:00:00Z", // an earlier hour of today, and the window's base
				"2026-11-24T20:00:00Z", "2026-11-23T20:00:00Z", "2026-11-22T20:00:00Z", "2026-11-21T20:00:00Z",
				"2026-11-20T20:00:00Z", "2026-11-19T20:00:00Z", "2026-11-18T20:00:00Z",
				"2026-11-17T20:00:00Z", "2026-11-15T20:00:00Z", "2026-11-08T20:00:00Z", "2026-11-01T20:00:00Z"),
		},
		{
			// Monday 2026-11-23 00:30: the days are the 16th to the 22nd, the whole of last
			// week, so three weeks are left: from 10-26, 11-02 and 11-09.
			name:   "exponential: on Monday the week before is all days, three weeks remain",
			policy: exponential, now: "2026-11-23T00:30:00Z",
			objs: daily("2026-10-20", "2026-11-22", []catalog.Snapshot{fullAt(1000000, "2026-11-23T00:00:00.100Z")},
				"2026-11-23T00:00:00.100Z",
				"2026-11-22T20:00:00Z", "2026-11-21T20:00:00Z", "2026-11-20T20:00:00Z", "2026-11-19T20:00:00Z",
				"2026-11-18T20:00:00Z", "2026-11-17T20:00:00Z", "2026-11-16T20:00:00Z",
				"2026-11-15T20:00:00Z", "2026-11-08T20:00:00Z", "2026-11-01T20:00:00Z"),
		},
		{
			// Sunday 2026-11-22 23:30: days 15th-21st; weeks from 10-19, 10-26, 11-02 and
			// 11-09 (up to the 14th).
			name:   "exponential: on Sunday the fourth week is the one that ends before the days",
			policy: exponential, now: "2026-11-22T23:30:00Z",
			objs: daily("2026-10-17", "2026-11-22", nil,
				"2026-11-22T10:00:00Z", "2026-11-22T20:00:00Z",
				"2026-11-21T20:00:00Z", "2026-11-20T20:00:00Z", "2026-11-19T20:00:00Z", "2026-11-18T20:00:00Z",
				"2026-11-17T20:00:00Z", "2026-11-16T20:00:00Z", "2026-11-15T20:00:00Z",
				"2026-11-14T20:00:00Z", "2026-11-08T20:00:00Z", "2026-11-01T20:00:00Z", "2026-10-25T20:00:00Z"),
		},

		// Time zones.
		{
			// 23:30 UTC is 00:30 on the 26th in Berlin: the 25th is yesterday there, one full
			// snapshot for the day; in UTC it is today, one per hour.
			name:   "time zone Europe/Berlin: the day starts an hour before UTC's",
			policy: exponentialIn("Europe/Berlin"), now: "2026-11-25T23:30:00Z",
			objs: []obj{
				{fullAt(2000, "2026-11-25T20:00:00.100Z"), drop},
				{fullAt(2100, "2026-11-25T21:00:00.100Z"), drop},
				{fullAt(2200, "2026-11-25T22:00:00.100Z"), keep},
				{deltaAt(2200, 2299, "2026-11-25T22:59:50Z"), keep},
				{fullAt(2300, "2026-11-25T23:00:00.100Z"), keep},
			},
		},
		{
			name:   "time zone UTC: the same store and clock keep every hour",
			policy: exponential, now: "2026-11-25T23:30:00Z",
			objs: []obj{
				{fullAt(2000, "2026-11-25T20:00:00.100Z"), keep},
				{fullAt(2100, "2026-11-25T21:00:00.100Z"), keep},
				{fullAt(2200, "2026-11-25T22:00:00.100Z"), keep},
				{deltaAt(2200, 2299, "2026-11-25T22:59:50Z"), keep},
				{fullAt(2300, "2026-11-25T23:00:00.100Z"), keep},
			},
		},
		{
			// India is UTC+5:30: its hours start at half past the UTC hour.
			name:   "time zone Asia/Kolkata: hours start at half past in UTC",
			policy: exponentialIn("Asia/Kolkata"), now: "2026-11-25T15:00:00Z",
			objs: []obj{
				{fullAt(1310, "2026-11-25T13:10:00Z"), keep}, // 18:40 IST
				{fullAt(1340, "2026-11-25T13:40:00Z"), drop}, // 19:10 IST
				{fullAt(1420, "2026-11-25T14:20:00Z"), keep}, // 19:50 IST
			},
		},
		{
			name:   "time zone UTC: the same store and clock, other hours",
			policy: exponential, now: "2026-11-25T15:00:00Z",
			objs: []obj{
				{fullAt(1310, "2026-11-25T13:10:00Z"), drop},
				{fullAt(1340, "2026-11-25T13:40:00Z"), keep},
				{fullAt(1420, "2026-11-25T14:20:00Z"), keep},
			},
		},
		{
			// On 2026-11-01 New York's clocks go from 01:59:59 EDT back to 01:00 EST: the
			// hour 01:00-02:00 happens twice, as two hours.
			name:   "time zone America/New_York: the repeated hour at the end of summer time counts twice",
			policy: exponentialIn("America/New_York"), now: "2026-11-01T09:30:00Z", // 04:30 EST
			objs: []obj{
				{fullAt(510, "2026-11-01T05:10:00Z"), drop}, // 01:10 EDT
				{fullAt(540, "2026-11-01T05:40:00Z"), keep}, // 01:40 EDT
				{fullAt(610, "2026-11-01T06:10:00Z"), drop}, // 01:10 EST
				{fullAt(640, "2026-11-01T06:40:00Z"), keep}, // 01:40 EST
				{fullAt(810, "2026-11-01T08:10:00Z"), keep}, // 03:10 EST
			},
		},
		{
			// On 2026-03-08 New York's clocks go from 01:59:59 EST to 03:00 EDT: the day has
			// 23 hours, and its end (04:00 UTC on the 9th) is midnight EDT.
			name:   "time zone America/New_York: the short day at the start of summer time",
			policy: exponentialIn("America/New_York"), now: "2026-03-09T04:30:00Z", // 00:30 EDT on the 9th
			objs: []obj{
				{fullAt(630, "2026-03-08T06:30:00Z"), drop},  // 01:30 EST on the 8th
				{fullAt(730, "2026-03-08T07:30:00Z"), drop},  // 03:30 EDT
				{fullAt(2730, "2026-03-09T03:30:00Z"), keep}, // 23:30 EDT on the 8th: the day's newest
				{fullAt(2800, "2026-03-09T04:10:00Z"), keep}, // 00:10 EDT on the 9th: the current hour
			},
		},

		// --keep-within.
		{
			name:   "keep-within longer than the hour: the window starts from the full snapshot before it",
			policy: catalog.Policy{Kind: catalog.PolicyExponential, KeepWithin: 2 * time.Hour}, now: "2026-11-25T14:30:00Z",
			// From 12:30: restored from the 12:00 full snapshot.
			objs: fourHours(keep, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "keep-within back to a full snapshot's exact time: it starts the window",
			policy: catalog.Policy{Kind: catalog.PolicyExponential, KeepWithin: 150*time.Minute - 200*time.Millisecond}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(keep, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "keep-within longer than the store keeps everything",
			policy: catalog.Policy{Kind: catalog.PolicyExponential, KeepWithin: 30 * 24 * time.Hour}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "keep-within shorter than the current hour changes nothing",
			policy: catalog.Policy{Kind: catalog.PolicyExponential, KeepWithin: 10 * time.Minute}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(keep, drop, drop, keep, drop, drop, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "keep-within with the limit policy: from 13:00, restored from the 12:00 full snapshot",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1, KeepWithin: 90 * time.Minute}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(drop, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "keep-within shorter than the limit policy's window changes nothing",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 2, KeepWithin: time.Minute}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(drop, drop, drop, drop, drop, drop, keep, keep, keep, keep, keep, keep),
		},

		// The limit policy.
		{
			name:   "limit 2: the newest two full snapshots and the deltas after the older",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 2}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(drop, drop, drop, drop, drop, drop, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "limit 1: the newest full snapshot and its deltas, also the one that starts before it",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(drop, drop, drop, drop, drop, drop, drop, drop, drop, keep, keep, keep),
		},
		{
			name:   "limit 10 with four full snapshots deletes nothing",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 10}, now: "2026-11-25T14:30:00Z",
			objs: fourHours(keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			name:   "limit 1: a delta ending at the full snapshot's revision in the same millisecond goes",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}, now: "2026-11-25T14:30:00Z",
			objs: []obj{
				{fullAt(100, "2026-11-25T13:00:00Z"), drop},
				{deltaAt(101, 200, "2026-11-25T14:00:00Z"), drop},
				{fullAt(200, "2026-11-25T14:00:00Z"), keep},
				{deltaAt(201, 210, "2026-11-25T14:00:00Z"), keep},
			},
		},
		{
			// The limit counts full snapshots by revision; after a restore to an older point
			// (without a revision bump) newer full snapshots have lower revisions: what was
			// taken after the oldest kept one stays too.
			name:   "limit 1 in a store whose history went back: what was taken since stays",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}, now: "2026-11-25T14:30:00Z",
			objs: []obj{
				{fullAt(100, "2026-11-25T12:00:00Z"), drop},
				{deltaAt(101, 300, "2026-11-25T12:30:00Z"), drop},
				{fullAt(300, "2026-11-25T13:00:00Z"), keep},
				{deltaAt(301, 310, "2026-11-25T13:10:00Z"), keep},
				{fullAt(150, "2026-11-25T14:00:00Z"), keep},
			},
		},

		// Edges.
		{
			name:   "no full snapshot: nothing is deleted",
			policy: exponential, now: "2026-12-25T14:30:00Z",
			objs: []obj{
				{deltaAt(1, 10, "2026-11-25T11:00:00Z"), keep},
				{deltaAt(11, 20, "2026-11-25T12:00:00Z"), keep},
			},
		},
		{
			name:   "no backup since long ago: the newest full snapshot and its deltas stay",
			policy: exponential, now: "2027-03-01T00:00:00Z",
			objs: fourHours(drop, drop, drop, drop, drop, drop, drop, drop, drop, keep, keep, keep),
		},
		{
			name:   "a clock behind the store's: objects from its future are in the current hour",
			policy: exponential, now: "2026-11-25T13:30:00Z",
			objs: fourHours(keep, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
		},
		{
			// A delta upload retried long after its first copy landed: the late copy is in
			// the window's time, so it stays, and so does the chain it needs.
			name:   "a late copy of an old delta keeps its chain until the window passes it",
			policy: exponential, now: "2026-11-25T14:30:00Z",
			objs: append(fourHours(keep, drop, drop, keep, keep, keep, keep, keep, keep, keep, keep, keep),
				obj{deltaAt(1251, 1299, "2026-11-25T14:05:00Z"), keep}),
		},
		{
			name:   "deltas before the oldest full snapshot go",
			policy: catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 5}, now: "2026-11-25T14:30:00Z",
			objs: []obj{
				{deltaAt(1, 99, "2026-11-25T10:00:00Z"), drop},
				{fullAt(100, "2026-11-25T11:00:00Z"), keep},
				{deltaAt(100, 120, "2026-11-25T11:10:00Z"), keep},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := catalog.PlanGC(listing(tc.objs), tc.policy, ts(tc.now))
			if err != nil {
				t.Fatal(err)
			}
			checkDecisions(t, plan, tc.objs)
		})
	}
}

// The same clock given in any time zone decides the same: only the policy's Location counts.
func TestRetentionClockZoneIrrelevant(t *testing.T) {
	t.Parallel()
	objs := daily("2026-10-20", "2026-11-25", nil)
	for _, p := range []catalog.Policy{exponential, exponentialIn("Asia/Kolkata"), exponentialIn("America/New_York")} {
		now := ts("2026-11-25T15:00:00Z")
		want, err := catalog.PlanGC(listing(objs), p, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, z := range []string{"Asia/Tokyo", "America/Los_Angeles", "Australia/Lord_Howe"} {
			got, err := catalog.PlanGC(listing(objs), p, now.In(zone(z)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(want.Delete, got.Delete, func(a, b catalog.Decision) bool { return a.Snapshot.Key == b.Snapshot.Key }) {
				t.Errorf("policy in %s: the clock in %s deletes %d objects, in UTC %d", p.Location, z, len(got.Delete), len(want.Delete))
			}
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy catalog.Policy
		err    string
	}{
		{exponential, ""},
		{catalog.Policy{Kind: catalog.PolicyLimit, MaxBackups: 1}, ""},
		{catalog.Policy{Kind: catalog.PolicyLimit}, "keep at least 1 full snapshot"},
		{catalog.Policy{Kind: catalog.PolicyExponential, MaxBackups: 3}, "applies only to the \"limit\" policy"},
		{catalog.Policy{Kind: "forever"}, "unknown"},
		{catalog.Policy{}, "no policy given"},
		{catalog.Policy{Kind: catalog.PolicyExponential, KeepWithin: -time.Hour}, "negative"},
	} {
		err := tc.policy.Validate()
		if tc.err == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.policy, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%+v: error %v, want one with %q", tc.policy, err, tc.err)
		}
		if _, perr := catalog.PlanGC(catalog.Listing{}, tc.policy, time.Now()); perr == nil {
			t.Errorf("%+v: PlanGC accepted an invalid policy", tc.policy)
		}
	}
}
