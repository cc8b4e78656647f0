package snapstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcdbr/etcdbr/internal/progress"
	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// CopySelection is what a copy of one store into another would do: the objects to copy,
// oldest first, and those the destination holds already.
type CopySelection struct {
	ToCopy  []catalog.Snapshot
	Skipped []catalog.Snapshot
}

// SelectBackupCopies lists both stores and chooses what to copy from src to dst so that dst
// can restore to any point from since on (every point, when since is zero), skipping what dst
// holds already (catalog.SelectCopies).
func SelectBackupCopies(ctx context.Context, src, dst *Store, since time.Time) (CopySelection, error) {
	have, err := src.ListBackups(ctx)
	if err != nil {
		return CopySelection{}, fmt.Errorf("list the source store: %w", err)
	}
	there, err := dst.ListBackups(ctx)
	if err != nil {
		return CopySelection{}, fmt.Errorf("list the destination store: %w", err)
	}
	toCopy, skipped := catalog.SelectCopies(have.Fulls, have.Deltas, there.Fulls, there.Deltas, since)
	return CopySelection{ToCopy: toCopy, Skipped: skipped}, nil
}

// CopiedObject is the outcome of copying one object: Err is nil when it was copied and
// verified.
type CopiedObject struct {
	Snapshot catalog.Snapshot
	Result   CopyResult
	Err      error
}

// CopyBackups copies every object of sel.ToCopy from src to dst (Copy: each verified by
// reading it back), counting the bytes read into p (nil: not counted), and calls each, if
// not nil, after every object. An object that fails is reported to each and the copy goes
// on with the next; the error returned joins every failure, or is ctx's when the copy was
// interrupted (then it stops at once). It returns the results in order.
func CopyBackups(ctx context.Context, src, dst *Store, sel CopySelection, p *progress.Progress, each func(CopiedObject)) ([]CopiedObject, error) {
	if p == nil {
		p = progress.New("copy")
	}
	for _, snap := range sel.ToCopy {
		p.AddBytesTotal(snap.Size)
	}
	var done []CopiedObject
	var failed []error
	for _, snap := range sel.ToCopy {
		res, err := CopyWithProgress(ctx, src, dst, snap, p)
		if err != nil && ctx.Err() != nil {
			return done, fmt.Errorf("copy interrupted after %d objects: %w", len(done)-len(failed), ctx.Err())
		}
		obj := CopiedObject{Snapshot: snap, Result: res, Err: err}
		done = append(done, obj)
		if err != nil {
			failed = append(failed, fmt.Errorf("copy %s: %w", snap.Key, err))
		}
		if each != nil {
			each(obj)
		}
	}
	if len(failed) > 0 {
		return done, fmt.Errorf("%d of %d objects were not copied: %w", len(failed), len(sel.ToCopy), errors.Join(failed...))
	}
	return done, nil
}
