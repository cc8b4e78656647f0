package snapstore

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

func testIntent(id string, created time.Time) catalog.Intent {
	return catalog.Intent{Version: 1, ID: id, Created: created, Deadline: created.Add(time.Hour), Revision: 42, Served: 1000, Token: "t-" + id}
}

// Of intents given at once, exactly one becomes active; the others are refused while it runs,
// and a new one is accepted once it ended.
func TestCreateIntentExclusive(t *testing.T) {
	for name, s := range map[string]*Store{"file": must(openFileStore(t, Options{})), "mem": openMemStore(t, Options{})} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now().UTC()
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() { errs[i] = s.CreateIntent(ctx, testIntent(string(rune('a'+i)), now)) })
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, ErrIntentRunning):
					t.Errorf("refused with %v, want ErrIntentRunning", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d intents were recorded at once, want 1", won)
			}
			if s.localDir != "" {
				filepath.WalkDir(s.localDir, func(path string, d fs.DirEntry, err error) error {
					if err == nil && tempName.MatchString(d.Name()) {
						t.Errorf("temporary file %s left behind", path)
					}
					return nil
				})
			}
			active, ok, err := s.ActiveIntent(ctx)
			if err != nil || !ok {
				t.Fatalf("no active intent (%v)", err)
			}
			if err := s.CreateIntent(ctx, testIntent("late", now.Add(time.Minute))); !errors.Is(err, ErrIntentRunning) {
				t.Fatalf("a second intent while one runs: %v, want ErrIntentRunning", err)
			}
			p := catalog.MemberProgress{Member: "m0", Phase: catalog.PhaseServing, DataRevision: 7}
			if err := s.WriteIntentProgress(ctx, active.ID, p); err != nil {
				t.Fatal(err)
			}
			if err := s.WriteIntentProgress(ctx, active.ID, catalog.MemberProgress{Member: "m1", Phase: catalog.PhaseSeen}); err != nil {
				t.Fatal(err)
			}
			ps, err := s.IntentProgress(ctx, active.ID)
			if err != nil || len(ps) != 2 || ps[0].Member != "m0" || ps[0].DataRevision != 7 || ps[1].Phase != catalog.PhaseSeen {
				t.Fatalf("progress %+v (%v)", ps, err)
			}
			if err := s.EndIntent(ctx, catalog.IntentEnd{ID: active.ID, Outcome: catalog.OutcomeDone, Ended: now}); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.ActiveIntent(ctx); ok || err != nil {
				t.Fatalf("still active after its end (%v)", err)
			}
			if end, ok, err := s.IntentEnd(ctx, active.ID); !ok || err != nil || end.Outcome != catalog.OutcomeDone {
				t.Fatalf("end %+v %v %v", end, ok, err)
			}
			if in, ok, err := s.Intent(ctx, active.ID); !ok || err != nil || in.Token != active.Token {
				t.Fatalf("the ended intent is not kept: %+v %v %v", in, ok, err)
			}
			if err := s.CreateIntent(ctx, testIntent("next", now.Add(time.Minute))); err != nil {
				t.Fatalf("a new intent after the end: %v", err)
			}
		})
	}
}

// An intent past its deadline is recorded as abandoned when a new one is given.
func TestCreateIntentAbandonsExpired(t *testing.T) {
	s, _ := openFileStore(t, Options{})
	ctx := context.Background()
	now := time.Now().UTC()
	old := testIntent("old", now.Add(-2*time.Hour))
	if err := s.CreateIntent(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateIntent(ctx, testIntent("new", now)); err != nil {
		t.Fatalf("a new intent after the old one's deadline: %v", err)
	}
	end, ok, err := s.IntentEnd(ctx, "old")
	if err != nil || !ok || end.Outcome != catalog.OutcomeAbandoned {
		t.Fatalf("the expired intent's end: %+v %v %v", end, ok, err)
	}
	if in, ok, err := s.ActiveIntent(ctx); err != nil || !ok || in.ID != "new" {
		t.Fatalf("active %+v %v %v", in, ok, err)
	}
}

func must(s *Store, _ string) *Store { return s }
