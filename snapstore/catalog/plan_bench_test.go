package catalog

import (
	"testing"
	"time"
)

// benchStore lists hours of backups as etcdbr writes them: a full snapshot 200 ms after
// every hour and a delta every 10 s of 50 revisions, the first delta of each hour starting
// before its full snapshot.
func benchStore(hours int) (fulls, deltas []Snapshot) {
	const perDelta, deltasPerHour = 50, 360
	start := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	rev := int64(1000)
	fulls = append(fulls, fullAt(rev, start))
	for h := range hours {
		for i := range deltasPerHour {
			at := start.Add(time.Duration(h)*time.Hour + time.Duration(i+1)*10*time.Second)
			deltas = append(deltas, deltaAt(rev+1, rev+perDelta, at))
			rev += perDelta
			if i == deltasPerHour-1 {
				fulls = append(fulls, fullAt(rev-perDelta/2, at.Add(200*time.Millisecond)))
			}
		}
	}
	return sortedSnaps(fulls), sortedSnaps(deltas)
}

func fullAt(rev int64, t time.Time) Snapshot {
	return Snapshot{Kind: KindFull, Revision: rev, Time: t, Key: FullName(rev, t, false)}
}

func deltaAt(from, to int64, t time.Time) Snapshot {
	return Snapshot{Kind: KindDelta, From: from, Revision: to, Time: t, Key: DeltaName(from, to, t, false)}
}

func sortedSnaps(s []Snapshot) []Snapshot { return sorted(s...) }

// BenchmarkPlanRestore plans restores over one hour of deltas after a full snapshot (360
// deltas), and over a day of hourly chains, to the latest point, a revision and a time.
//
//	go test -run '^$' -bench PlanRestore -benchmem ./snapstore/
func BenchmarkPlanRestore(b *testing.B) {
	hour := func() ([]Snapshot, []Snapshot) {
		f, d := benchStore(1)
		return f[:1], d // the chain of one hour: its full snapshot and 360 deltas
	}
	day := func() ([]Snapshot, []Snapshot) { return benchStore(24) }
	for _, bc := range []struct {
		name   string
		store  func() ([]Snapshot, []Snapshot)
		target func(fulls, deltas []Snapshot) Target
	}{
		{"hour/latest", hour, func(_, _ []Snapshot) Target { return Target{} }},
		{"hour/revision", hour, func(_, d []Snapshot) Target { return Target{Revision: d[len(d)-1].Revision - 7} }},
		{"hour/time", hour, func(_, d []Snapshot) Target { return Target{Time: d[len(d)-2].Time.Add(time.Second)} }},
		{"day/latest", day, func(_, _ []Snapshot) Target { return Target{} }},
		{"day/revision in the first hour", day, func(_, d []Snapshot) Target { return Target{Revision: d[300].Revision} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fulls, deltas := bc.store()
			target := bc.target(fulls, deltas)
			if _, err := PlanRestore(fulls, deltas, target, nil); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := PlanRestore(fulls, deltas, target, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
