package supervisor

// Verification proves that a store's backups restore: Verify checks every object and the
// history they form (snapstore.Verify) and, deep, restores the latest point into a
// temporary directory through the real restore path (Restore), starts etcd on the result
// and compares what it serves with what the backups say. It serves `etcdbr verify` and the
// scheduled verification in `etcdbr run`.

import (
	"context"
	"log/slog"
	"os"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Deep also restores the latest point and checks the restored member (VerifyDeep).
	Deep bool
	// TempDir is where a deep verification restores (os.TempDir() when empty); it needs
	// room for the db and what the deltas add to it.
	TempDir string
	// Log receives progress (nil discards it).
	Log *slog.Logger
	// Checked, when set, is called after each object was read (snapstore.VerifyOptions).
	Checked func(snap catalog.Snapshot, problem error)
	// RecordDamage records the objects found damaged in the store (snapstore.VerifyOptions).
	RecordDamage bool
	// Progress, when set, follows the verification: phase "verify" counts the bytes of the
	// objects read, one object at a time; the deep one's restore reports as a restore does,
	// then phase "check".
	Progress *progress.Progress
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	snapstore.VerifyReport
	// Deep is what the deep verification found; nil when it did not run (not asked for,
	// or the store holds no full snapshot).
	Deep *DeepVerifyReport
}

// OK reports whether nothing is wrong.
func (r VerifyReport) OK() bool { return len(r.AllProblems()) == 0 }

// AllProblems lists the problems of the objects and the chain, then those of the deep
// verification.
func (r VerifyReport) AllProblems() []catalog.Problem {
	all := append([]catalog.Problem(nil), r.Problems...)
	if r.Deep != nil {
		all = append(all, r.Deep.Problems...)
	}
	return all
}

// Verify verifies the store: every object and the chain, then, with opts.Deep, a restore of
// the latest point. Problems go into the report; the error is for a verification that could
// not run to its end (the store cannot be listed, ctx ended, no temporary directory).
func Verify(ctx context.Context, store *snapstore.Store, opts VerifyOptions) (VerifyReport, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	checked := opts.Checked
	if p := opts.Progress; p != nil {
		p.SetPhase("verify")
		checked = func(snap catalog.Snapshot, problem error) {
			p.AddBytes(snap.Size)
			if opts.Checked != nil {
				opts.Checked(snap, problem)
			}
		}
	}
	shallow, err := snapstore.Verify(ctx, store, snapstore.VerifyOptions{Checked: checked, RecordDamage: opts.RecordDamage})
	rep := VerifyReport{VerifyReport: shallow}
	if err != nil || !opts.Deep || shallow.Latest.Full.Key == "" {
		return rep, err
	}
	dir := opts.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	deep, err := VerifyDeep(ctx, store, shallow.Latest, dir, opts.Log, opts.Progress)
	if err != nil {
		return rep, err
	}
	rep.Deep = &deep
	return rep, nil
}
