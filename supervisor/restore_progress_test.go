package supervisor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/etcdbr/etcdbr/embedded/rebuild"
	"github.com/etcdbr/etcdbr/internal/embeddedtest"
	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// TestRestoreReportsProgress restores real backups with a Progress watching: it is told
// the revisions to replay (from the plan's deltas, the ones the full snapshot holds left
// out) and the bytes to fetch before the work, and both reach their totals: the revisions
// replayed are the plan's, the bytes every object's size.
func TestRestoreReportsProgress(t *testing.T) {
	t.Parallel()
	f := buildStoreFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		target catalog.Target
		full   catalog.Snapshot
		want   int64 // the revision restored
	}{
		{"latest", catalog.Target{}, f.f2, f.final.Revision},
		{"a revision inside a delta", catalog.Target{Revision: f.mid}, f.f1, f.mid},
		{"a time after every backup", catalog.Target{Time: time.Now().Add(time.Hour)}, f.f2, f.final.Revision},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, _ := f.copyStore(t)
			fulls, deltas, err := listBackups(ctx, store)
			require.NoError(t, err)
			plan, err := catalog.PlanRestore(fulls, deltas, tc.target, nil)
			require.NoError(t, err)
			require.Equal(t, tc.full.Key, plan.Full.Key)
			wantBytes := plan.Full.Size
			for _, d := range plan.Deltas {
				wantBytes += d.Size
			}

			p := progress.New("start")
			cfg := embeddedtest.NewConfig(t)
			res, err := Restore(ctx, store, cfg, tc.target, rebuild.RestoreOptions{Progress: p}, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			require.Equal(t, tc.want, res.Revision)
			got := p.Load()
			assert.Equal(t, progress.Counts{
				Phase: "sync",
				Bytes: wantBytes, BytesTotal: wantBytes,
				Revisions: tc.want - tc.full.Revision, RevisionsTotal: tc.want - tc.full.Revision, Revision: tc.want,
			}, got)
			assert.Equal(t, res.Replay.Revisions, got.Revisions)
			assert.Positive(t, res.Replay.Skipped, "the first delta starts before the full snapshot: its revisions are not counted")
		})
	}
}
