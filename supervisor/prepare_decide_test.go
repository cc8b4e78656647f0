package supervisor

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/etcdbr/etcdbr/embedded/datadir"
	"github.com/etcdbr/etcdbr/snapstore"
)

func TestDecideStart(t *testing.T) {
	t.Parallel()
	valid := func(rev int64) datadir.Verdict { return datadir.Verdict{State: datadir.StateValid, Revision: rev} }
	walBound := func(rev, maxRev int64) datadir.Verdict {
		return datadir.Verdict{State: datadir.StateValid, Revision: rev, MaxRevision: maxRev}
	}
	corrupt := datadir.Verdict{State: datadir.StateCorrupt, Reason: "db file \"x\" is damaged"}
	missing := datadir.Verdict{State: datadir.StateMissing, Reason: "data dir \"x\" does not exist"}
	unknown := datadir.Verdict{State: datadir.StateUnknown, Reason: "db file \"x\" is locked by another process"}
	const a, b, c = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"
	noDir := datadir.Verdict{State: datadir.StateMissing, Reason: "no member dir"}

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
		{"valid, db behind the store, WAL ahead of it", StartFacts{Verdict: walBound(76, 400), StoreNewest: 300}, DecideKeep, []string{"revision 76", "at most 400"}},
		{"valid, db and WAL behind the store", StartFacts{Verdict: walBound(76, 200), StoreNewest: 300}, DecideRestore, []string{"revision 76", "at most 200", "300", "lost locally"}},
		{"valid, db rebuilt from a WAL ahead of the store", StartFacts{Verdict: walBound(0, 410), StoreNewest: 300}, DecideKeep, []string{"at most 410"}},
		{"valid, db rebuilt from a WAL behind the store", StartFacts{Verdict: walBound(0, 410), StoreNewest: 500}, DecideRestore, []string{"at most 410", "500"}},
		{"valid, behind, several members", StartFacts{Verdict: valid(8), StoreNewest: 10, Members: 3}, DecideKeep, []string{"peers"}},
		{"valid, another cluster", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b}, DecideStop, []string{a, b, "--force-restore"}},
		{"valid, another cluster, forced", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b, ForceRestore: true}, DecideRestore, []string{"--force-restore"}},
		{"valid, another cluster, forced, empty store", StartFacts{Verdict: valid(8), StoreCluster: a, DirCluster: b, ForceRestore: true}, DecideStop, []string{"no full snapshot"}},
		{"valid, store records no cluster", StartFacts{Verdict: valid(8), StoreNewest: 5, DirCluster: b}, DecideKeep, nil},
		{"corrupt, store has a backup", StartFacts{Verdict: corrupt, StoreNewest: 10}, DecideRestore, []string{"damaged", "revision 10"}},
		{"corrupt, empty store", StartFacts{Verdict: corrupt}, DecideStop, []string{"damaged", "no full snapshot", "untouched"}},
		{"corrupt, several members", StartFacts{Verdict: corrupt, StoreNewest: 10, Members: 3}, DecideJoin, []string{"peers", "learner", "moved aside"}},
		{"corrupt, another cluster", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, DirCluster: b}, DecideStop, []string{a, b}},
		{"missing, store has a backup", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a}, DecideRestore, []string{"revision 10"}},
		{"missing, empty store", StartFacts{Verdict: missing}, DecideNewMember, nil},
		{"missing, several members", StartFacts{Verdict: missing, StoreNewest: 10, Members: 3}, DecideJoin, []string{"peers", "learner", "founds"}},
		{"missing, store of a cluster without backups", StartFacts{Verdict: missing, StoreCluster: a}, DecideStop, []string{a}},
		{"missing, store of a cluster without backups, forced", StartFacts{Verdict: missing, StoreCluster: a, ForceRestore: true}, DecideNewMember, nil},
		// The cluster a restore creates (NewCluster) against the store's.
		{"restore creates the store's cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: a}, DecideRestore, []string{"revision 10"}},
		{"restore creates another cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b}, DecideStop,
			[]string{a, b, "--initial-cluster-token", "peer URLs", "--force-restore", "its own store", "nothing was changed"}},
		{"restore creates another cluster, forced", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, ForceRestore: true}, DecideRestore,
			[]string{"creates cluster " + b, "instead of " + a}},
		{"restore creates another cluster, store records none", StartFacts{Verdict: noDir, StoreNewest: 10, NewCluster: b}, DecideRestore, nil},
		{"restore creates an unknown cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a}, DecideRestore, nil},
		{"corrupt dir of the store's cluster, restore creates another", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, DirCluster: a, NewCluster: b}, DecideRestore,
			[]string{"damaged", "creates cluster " + b, "instead of " + a}},
		{"corrupt dir of unknown cluster, restore creates another", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, NewCluster: b}, DecideStop,
			[]string{"damaged", a, b, "--force-restore"}},
		{"valid dir behind, of the store's cluster, restore creates another", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: a, NewCluster: b}, DecideRestore,
			[]string{"lost locally", "instead of " + a}},
		{"valid dir of another cluster, forced, restore creates a third", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b, NewCluster: c, ForceRestore: true}, DecideRestore,
			[]string{"--force-restore", "creates cluster " + c}},
		{"valid dir, ahead, restore would create another", StartFacts{Verdict: valid(12), StoreNewest: 10, StoreCluster: a, DirCluster: a, NewCluster: b}, DecideKeep, nil},
		{"missing, store of a cluster without backups, same cluster", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: a}, DecideNewMember, []string{"same cluster ID"}},
		{"missing, store of a cluster without backups, another", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b}, DecideStop, []string{a, "--force-restore"}},
		{"missing, store of a cluster without backups, another, forced", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b, ForceRestore: true}, DecideNewMember,
			[]string{"belongs to its cluster"}},
		{"missing, several members, another cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, Members: 3}, DecideJoin, []string{"peers"}},
		// A new machine on the store of a cluster that stopped writing to it (OwnerGone).
		{"new machine, owner gone", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, OwnerGone: true, Owner: "cluster a has written nothing"},
			DecideRestore, []string{"revision 10", "instead of " + a, "taken over", "cluster a has written nothing"}},
		{"new machine, owner alive", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, Owner: "cluster a is alive"},
			DecideStop, []string{a, b, "--force-restore", "nothing was changed", "cluster a is alive"}},
		{"new machine, owner gone, store without backups", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b, OwnerGone: true, Owner: "gone"},
			DecideNewMember, []string{"taken over", "belongs to its cluster"}},
		{"new machine, owner alive, store without backups", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b, Owner: "cluster a is alive"},
			DecideStop, []string{a, "--force-restore", "cluster a is alive"}},
		{"owner gone, but a data dir of another cluster", StartFacts{Verdict: valid(8), StoreNewest: 10, StoreCluster: a, DirCluster: b, NewCluster: b, OwnerGone: true},
			DecideStop, []string{a, b, "--force-restore"}},
		{"owner gone, but a corrupt data dir of unknown cluster", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, NewCluster: b, OwnerGone: true},
			DecideStop, []string{a, b, "--force-restore"}},
		{"owner gone, several members", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, Members: 3, OwnerGone: true},
			DecideJoin, []string{"peers"}},
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

func TestStoreFollows(t *testing.T) {
	t.Parallel()
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	corrupt := datadir.Verdict{State: datadir.StateCorrupt, Reason: "damaged"}
	missing := datadir.Verdict{State: datadir.StateMissing, Reason: "none"}
	tests := []struct {
		name  string
		facts StartFacts
		want  bool
	}{
		{"same cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: a}, false},
		{"store records none", StartFacts{Verdict: missing, StoreNewest: 10, NewCluster: b}, false},
		{"forced restore of another cluster", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, ForceRestore: true}, true},
		{"the store's member, new URLs", StartFacts{Verdict: corrupt, StoreNewest: 10, StoreCluster: a, DirCluster: a, NewCluster: b}, true},
		{"refused", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b}, false},
		{"forced new member", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b, ForceRestore: true}, true},
		{"forced new member, unknown cluster", StartFacts{Verdict: missing, StoreCluster: a, ForceRestore: true}, true},
		{"new member of the same cluster", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: a}, false},
		{"member of several", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, Members: 3, ForceRestore: true}, false},
		{"new machine, owner gone", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b, OwnerGone: true}, true},
		{"new machine, owner gone, new member", StartFacts{Verdict: missing, StoreCluster: a, NewCluster: b, OwnerGone: true}, true},
		{"new machine, owner alive", StartFacts{Verdict: missing, StoreNewest: 10, StoreCluster: a, NewCluster: b}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, reason := DecideStart(tt.facts)
			assert.Equal(t, tt.want, storeFollows(tt.facts, d), "decision %s: %s", d, reason)
		})
	}
}

func TestCheckRestoreCluster(t *testing.T) {
	t.Parallel()
	const a, b = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	tests := []struct {
		name    string
		rc      RestoreCluster
		follow  bool
		refused bool
	}{
		{"store records none", RestoreCluster{New: b}, false, false},
		{"same cluster", RestoreCluster{Store: a, New: a}, false, false},
		{"unknown new cluster", RestoreCluster{Store: a}, false, false},
		{"another cluster", RestoreCluster{Store: a, New: b}, false, true},
		{"another cluster over a third", RestoreCluster{Store: a, New: b, Replaced: b}, false, true},
		{"the store's member", RestoreCluster{Store: a, New: b, Replaced: a}, true, false},
		{"forced", RestoreCluster{Store: a, New: b, Force: true}, true, false},
		{"kept", RestoreCluster{Store: a, New: b, Keep: true}, false, false},
		{"owner gone", RestoreCluster{Store: a, New: b, OwnerGone: true}, true, false},
		{"owner alive", RestoreCluster{Store: a, New: b, Owner: "cluster a is alive"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			follow, err := CheckRestoreCluster(tt.rc)
			assert.Equal(t, tt.follow, follow)
			if !tt.refused {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, snapstore.ErrClusterMismatch)
			for _, s := range []string{a, b, "--force-restore", "--initial-cluster-token", "own store"} {
				assert.Contains(t, err.Error(), s)
			}
		})
	}
}
