package clusterrestore

import (
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &catalog.Intent{Version: 1, ID: "i1", Revision: 10, Token: "t", Created: now.Add(-time.Minute), Deadline: now.Add(time.Hour)}
	expired := *in
	expired.Deadline = now
	members := []string{"a", "b", "c"}
	serving := func(names ...string) []catalog.MemberProgress {
		var ps []catalog.MemberProgress
		for _, n := range names {
			ps = append(ps, catalog.MemberProgress{Member: n, Phase: catalog.PhaseServing, DataRevision: 1000})
		}
		return ps
	}
	for _, tc := range []struct {
		name string
		f    Facts
		want Kind
	}{
		{"no intent", Facts{}, Nothing},
		{"no intent, serving", Facts{Serving: true, DataIntent: "old"}, Nothing},
		{"intent, data of the old cluster, serving", Facts{Intent: in, Serving: true}, Restore},
		{"intent, data of the old cluster, etcd down", Facts{Intent: in}, Restore},
		{"intent, data of an earlier intent", Facts{Intent: in, DataIntent: "i0", Serving: true}, Restore},
		{"intent expired before this member restored", Facts{Intent: &expired, Serving: true}, Abandon},
		{"restored, etcd not serving yet", Facts{Intent: in, DataIntent: "i1"}, Nothing},
		{"restored and serving, not reported", Facts{Intent: in, DataIntent: "i1", Serving: true, Self: "a", Members: members}, ReportServing},
		{"restored and serving, reported as restored only", Facts{Intent: in, DataIntent: "i1", Serving: true, Self: "a", Members: members,
			Progress: []catalog.MemberProgress{{Member: "a", Phase: catalog.PhaseRestored}}}, ReportServing},
		{"others not serving", Facts{Intent: in, DataIntent: "i1", Serving: true, Self: "a", Members: members, Progress: serving("a", "b"), NewestFull: 2000}, Nothing},
		{"others not serving past the deadline", Facts{Intent: &expired, DataIntent: "i1", Serving: true, Self: "a", Members: members, Progress: serving("a", "b")}, Abandon},
		{"all serving, no fresh full", Facts{Intent: in, DataIntent: "i1", Serving: true, Self: "a", Members: members, Progress: serving("a", "b", "c"), NewestFull: 999}, Nothing},
		{"all serving, fresh full", Facts{Intent: in, DataIntent: "i1", Serving: true, Self: "b", Members: members, Progress: serving("a", "b", "c"), NewestFull: 1000}, Finish},
		{"all serving past the deadline, fresh full", Facts{Intent: &expired, DataIntent: "i1", Serving: true, Self: "b", Members: members, Progress: serving("a", "b", "c"), NewestFull: 1000}, Finish},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.Now = now
			got := Decide(tc.f)
			if got.Kind != tc.want {
				t.Errorf("Decide = %v (%s), want %v", got.Kind, got.Reason, tc.want)
			}
			if got.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestDecideAuto(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lost := now.Add(-10 * time.Minute)
	base := AutoFacts{After: 5 * time.Minute, Now: now, Serving: true, LostSince: lost, StoreAtLoss: 100, StoreNow: 100}
	for _, tc := range []struct {
		name string
		edit func(*AutoFacts)
		want bool
	}{
		{"lost longer than the bound, store still", func(*AutoFacts) {}, true},
		{"off by default", func(f *AutoFacts) { f.After = 0 }, false},
		{"quorum", func(f *AutoFacts) { f.Quorum = true }, false},
		{"etcd does not run", func(f *AutoFacts) { f.Serving = false }, false},
		{"never judged", func(f *AutoFacts) { f.LostSince = time.Time{} }, false},
		{"not long enough", func(f *AutoFacts) { f.LostSince = now.Add(-time.Minute) }, false},
		{"exactly the bound", func(f *AutoFacts) { f.LostSince = now.Add(-5 * time.Minute) }, true},
		{"a leader still uploads", func(f *AutoFacts) { f.StoreNow = 101 }, false},
		{"an intent is active", func(f *AutoFacts) { f.Active = true }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := base
			tc.edit(&f)
			got, why := DecideAuto(f)
			if got != tc.want || why == "" {
				t.Errorf("DecideAuto = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

func TestDecideThaw(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &catalog.Intent{Version: 1, ID: "i1", Revision: 10, Token: "t", Created: now.Add(-time.Minute), Deadline: now.Add(time.Hour)}
	notice := &catalog.FreezeNotice{Version: 1, Created: now.Add(-time.Second), Until: now.Add(time.Minute)}
	stale := &catalog.FreezeNotice{Version: 1, Created: now.Add(-time.Hour), Until: now}
	for _, tc := range []struct {
		name string
		f    ThawFacts
		want bool
	}{
		{"not frozen", ThawFacts{Now: now}, false},
		{"not frozen, restored", ThawFacts{Intent: in, DataIntent: "i1", Now: now}, false},
		{"frozen old cluster, intent active", ThawFacts{Frozen: true, Intent: in, DataIntent: "i0", Now: now}, false},
		{"frozen restored cluster", ThawFacts{Frozen: true, Intent: in, DataIntent: "i1", Now: now}, true},
		{"frozen restored cluster, a notice", ThawFacts{Frozen: true, Intent: in, DataIntent: "i1", Notice: notice, Now: now}, true},
		{"frozen, no intent, a command records one", ThawFacts{Frozen: true, Notice: notice, Now: now}, false},
		{"frozen, no intent, the notice ran out", ThawFacts{Frozen: true, Notice: stale, Now: now}, true},
		{"frozen, no intent, no notice", ThawFacts{Frozen: true, Now: now}, true},
	} {
		if got, why := DecideThaw(tc.f); got != tc.want {
			t.Errorf("%s: DecideThaw = %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}
