package supervisor

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/etcdbr/etcdbr/embedded"
)

func TestDecideStart(t *testing.T) {
	t.Parallel()
	valid := func(rev int64) embedded.Verdict { return embedded.Verdict{State: embedded.StateValid, Revision: rev} }
	corrupt := embedded.Verdict{State: embedded.StateCorrupt, Reason: "db file \"x\" is damaged"}
	missing := embedded.Verdict{State: embedded.StateMissing, Reason: "data dir \"x\" does not exist"}
	unknown := embedded.Verdict{State: embedded.StateUnknown, Reason: "db file \"x\" is locked by another process"}
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"

	tests := []struct {
		name   string
		facts  StartFacts
		want   Decision
		reason []string
	}{
		{"valid, empty store", StartFacts{Verdict: valid(10)}, DecideKeep, []string{"revision 10"}},
		{"valid, equal to the store", StartFacts{Verdict: valid(10), StoreNewest: 10, StoreCluster: a, DirCluster: a}, DecideKeep, nil},
		{"valid, ahead of the store", StartFacts{Verdict: valid(12), StoreNewest: 10}, DecideKeep, nil},
		{"valid, behind the store", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: a}, DecideRestore, []string{"revision 8", "10", "lost locally"}},
		{"valid, behind, several members", StartFacts{Verdict: valid(8), StoreNewest: 10, Members: 3}, DecideKeep, []string{"peers"}},
		{"valid, another cluster", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b}, DecideStop, []string{a, b, "--force-restore"}},
		{"valid, another cluster, forced", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b, ForceRestore: true}, DecideRestore, []string{"--force-restore"}},
		{"valid, another cluster, forced, empty store", StartFacts{Verdict: valid(8), StoreCluster: a, DirCluster: b, ForceRestore: true}, DecideStop, []string{"no full snapshot"}},
		{"valid, store records no cluster", StartFacts{Verdict: valid(8), StoreNewest: 5, DirCluster: b}, DecideKeep, nil},
		{"corrupt, store has a backup", StartFacts{Verdict: corrupt, StoreNewest: 10}, DecideRestore, []string{"damaged", "revision 10"}},
		{"corrupt, empty store", StartFacts{Verdict: corrupt}, DecideStop, []string{"damaged", "no full snapshot", "untouched"}},
		{"corrupt, several members", StartFacts{Verdict: corrupt, StoreNewest: 10, Members: 3}, DecideStop, []string{"peers"}},
		{"corrupt, another cluster", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, DirCluster: b}, DecideStop, []string{a, b}},
		{"missing, store has a backup", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a}, DecideRestore, []string{"revision 10"}},
		{"missing, empty store", StartFacts{Verdict: missing}, DecideNewMember, nil},
		{"missing, several members", StartFacts{Verdict: missing, StoreNewest: 10, Members: 3}, DecideNewMember, []string{"peers"}},
		{"missing, store of a cluster without backups", StartFacts{Verdict: missing, StoreCluster: a}, DecideStop, []string{a}},
		{"missing, store of a cluster without backups, forced", StartFacts{Verdict: missing, StoreCluster: a, ForceRestore: true}, DecideNewMember, nil},
		{"unknown", StartFacts{Verdict: unknown, StoreNewest: 10}, DecideStop, []string{"could not tell", "locked"}},
		{"unknown, forced", StartFacts{Verdict: unknown, StoreNewest: 10, ForceRestore: true}, DecideStop, []string{"could not tell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, reason := DecideStart(tt.facts)
			assert.Equal(t, tt.want, got, reason)
			assert.NotEmpty(t, reason)
			for _, want := range tt.reason {
				assert.Contains(t, reason, want)
			}
		})
	}
}
