package snapstore

import (
	"context"
	"maps"
	"slices"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// Window is the restorable window of the listed objects as the store's own records
// qualify it: the objects recorded as damaged left out (and listed in Window.Damaged), the
// ranges between histories told apart (WithHistories). It reads the history and damage
// records (two small listings).
func (s *Store) Window(ctx context.Context, fulls, deltas []catalog.Snapshot) (catalog.Window, error) {
	hs, err := s.Histories(ctx)
	if err != nil {
		return catalog.Window{}, err
	}
	damaged, err := s.DamagedIn(ctx, fulls, deltas)
	if err != nil {
		return catalog.Window{}, err
	}
	w := catalog.RestorableWindow(catalog.WithoutDamaged(fulls, damaged), catalog.WithoutDamaged(deltas, damaged)).WithHistories(hs)
	for _, key := range slices.Sorted(maps.Keys(damaged)) {
		w.Damaged = append(w.Damaged, damaged[key])
	}
	return w, nil
}
