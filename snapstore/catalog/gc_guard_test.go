package catalog

import (
	"errors"
	"testing"
	"time"
)

// The guard refuses a plan that would break the newest point or the window, whichever
// decision went wrong.
func TestGCGuard(t *testing.T) {
	at := func(m int) time.Time { return time.Date(2026, 11, 25, 12, m, 0, 0, time.UTC) }
	fulls := []Snapshot{
		{Kind: KindFull, Revision: 100, Time: at(0)},
		{Kind: KindFull, Revision: 200, Time: at(30)},
	}
	deltas := []Snapshot{
		{Kind: KindDelta, From: 101, Revision: 150, Time: at(10)},
		{Kind: KindDelta, From: 151, Revision: 200, Time: at(29)},
		{Kind: KindDelta, From: 201, Revision: 250, Time: at(40)},
		{Kind: KindDelta, From: 251, Revision: 300, Time: at(50)},
	}
	fulls, deltas = withKeys(fulls), withKeys(deltas)
	policy := Policy{Kind: PolicyLimit, MaxBackups: 1}
	now := at(55) // the window starts at the full snapshot of 12:30
	for _, tc := range []struct {
		name   string
		breaks func(st *gcState)
	}{
		{"the window's base", func(st *gcState) { st.keepF[1] = 0 }},
		{"a delta of the window", func(st *gcState) { st.keepD[2] = 0 }},
		{"the newest delta", func(st *gcState) { st.keepD[3] = 0 }},
	} {
		st := &gcState{retention: policy.retain(fulls, deltas, now)}
		if err := st.guard(); err != nil {
			t.Fatalf("the policy's own plan: %v", err)
		}
		tc.breaks(st)
		if err := st.guard(); !errors.Is(err, ErrUnsafeGC) {
			t.Errorf("a plan that deletes %s: guard says %v", tc.name, err)
		}
	}
}
