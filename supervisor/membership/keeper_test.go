package membership

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The keeper, look by look: a snapshot once per learner, a promotion once it started and
// caught up, a removal after the timeout without progress.
func TestKeeperLooks(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	unstarted := Member{ID: 9, PeerURLs: []string{"http://p9:2380"}, IsLearner: true}
	started := Member{ID: 9, Name: "m9", PeerURLs: unstarted.PeerURLs, ClientURLs: []string{"http://p9:2379"}, IsLearner: true}
	voter := started
	voter.IsLearner = false
	view := func(learner Member, match uint64) View {
		return View{Members: []Member{m1, m2, learner}, Leader: 1, Match: map[uint64]uint64{1: 1000, 2: 1000, 9: match}}
	}
	type look struct {
		at    time.Duration
		view  View
		want  ActionKind
		taken bool // the snapshot asked for is taken
	}
	tests := []struct {
		name  string
		looks []look
	}{
		{"no learner", []look{{0, View{Members: []Member{m1, m2}}, ActionNone, false}}},
		{"caught up: snapshot, then promote", []look{
			{0, view(unstarted, 0), ActionSnapshot, true},
			{time.Second, view(unstarted, 500), ActionNone, false},      // catching up, not started
			{2 * time.Second, view(started, 800), ActionNone, false},    // started, behind
			{3 * time.Second, view(started, 950), ActionPromote, false}, // within 90%
			{4 * time.Second, view(voter, 1000), ActionNone, false},     // promoted
		}},
		{"progress unknown: promote once started (etcd checks)", []look{
			{0, View{Members: []Member{m1, started}, Leader: 1}, ActionSnapshot, true},
			{time.Second, View{Members: []Member{m1, started}, Leader: 1}, ActionPromote, false},
		}},
		{"never starts: removed after the timeout", []look{
			{0, view(unstarted, 0), ActionSnapshot, true},
			{30 * time.Second, view(unstarted, 0), ActionNone, false},
			{61 * time.Second, view(unstarted, 0), ActionRemove, false},
		}},
		{"slow but progressing: kept", []look{
			{0, view(unstarted, 0), ActionSnapshot, true},
			{50 * time.Second, view(unstarted, 100), ActionNone, false},
			{100 * time.Second, view(unstarted, 200), ActionNone, false},
			{150 * time.Second, view(unstarted, 300), ActionNone, false},
		}},
		{"started, then stops: removed", []look{
			{0, view(started, 100), ActionSnapshot, true},
			{10 * time.Second, view(started, 400), ActionNone, false},
			{71 * time.Second, view(started, 400), ActionRemove, false},
		}},
		{"the snapshot comes first, even when already stuck", []look{
			{0, view(unstarted, 0), ActionSnapshot, false}, // not taken yet: asked again
			{61 * time.Second, view(unstarted, 0), ActionSnapshot, true},
			{62 * time.Second, view(unstarted, 0), ActionRemove, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k := &Keeper{Timeout: time.Minute}
			for i, l := range tt.looks {
				got := k.Look(t0.Add(l.at), l.view)
				assert.Equal(t, l.want.String(), got.Kind.String(), "look %d: %s", i, got.Reason)
				if l.taken {
					k.Snapshotted(got.ID)
				}
			}
		})
	}
}

// A learner removed and added again (a new ID) is looked after afresh; one that comes back
// under a forgotten ID too.
func TestKeeperForgets(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	k := &Keeper{Timeout: time.Minute}
	l := Member{ID: 9, PeerURLs: []string{"http://p9:2380"}, IsLearner: true}
	assert.Equal(t, ActionSnapshot, k.Look(t0, View{Members: []Member{m1, l}}).Kind)
	k.Snapshotted(9)
	assert.Equal(t, ActionRemove, k.Look(t0.Add(2*time.Minute), View{Members: []Member{m1, l}}).Kind)
	k.Forget(9)
	assert.Equal(t, ActionNone, k.Look(t0.Add(2*time.Minute), View{Members: []Member{m1}}).Kind)
	l.ID = 10
	assert.Equal(t, ActionSnapshot, k.Look(t0.Add(3*time.Minute), View{Members: []Member{m1, l}}).Kind)
}
