package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Problem is something wrong in a store, found by Verify or CheckChain.
type Problem struct {
	// Key is the object concerned, or "" for the store as a whole.
	Key string
	// Err says what is wrong.
	Err error
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Err.Error()
	}
	return p.Key + ": " + p.Err.Error()
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Fulls and Deltas are the numbers of objects checked.
	Fulls, Deltas int
	// StoredBytes is their size in the store, PayloadBytes decoded.
	StoredBytes, PayloadBytes int64
	// Latest is the chain a restore to the latest point reads, leaving out
	// the objects found bad; its Full.Key is "" when there is none.
	Latest RestorePlan
	// Problems lists everything found wrong, objects in List's order first.
	Problems []Problem
}

// OK reports whether Verify found nothing wrong.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Checked, when set, is called after each object was read, with the
	// problem found in it (nil if none).
	Checked func(snap Snapshot, problem error)
	// RecordDamage records each object whose content is damaged (corrupt or malformed)
	// in the store (RecordDamage), so that listings leave it out of the restorable
	// window. A failure to record is reported as a problem.
	RecordDamage bool
}

// Verify checks a whole store: every object reads back intact (its
// decryption, its zstd frames and checksums, its length and SHA-256 against
// its trailer; a full snapshot's db against the SHA-256 etcd appended to it;
// a delta's records against its name's revision range), and the objects
// form a restorable history (CheckChain, and a chain to the latest point
// made of intact objects). Objects are read one at a time, streaming.
//
// Everything wrong is reported in the VerifyReport; the error is only for
// a store that cannot be listed and a cancelled ctx, which leave the
// verification incomplete.
func Verify(ctx context.Context, s *Store, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	fulls, err := s.List(ctx, KindFull)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	deltas, err := s.List(ctx, KindDelta)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	bad := map[string]bool{}
	for _, snap := range MergeByRevision(fulls, deltas) {
		n, err := s.verifyObject(ctx, snap)
		if ctx.Err() != nil {
			return rep, fmt.Errorf("verify %s: %w", s.url, ctx.Err())
		}
		if snap.Kind == KindFull {
			rep.Fulls++
		} else {
			rep.Deltas++
		}
		rep.StoredBytes += snap.Size
		rep.PayloadBytes += n
		if err != nil {
			bad[snap.Key] = true
			rep.Problems = append(rep.Problems, Problem{Key: snap.Key, Err: err})
			if opts.RecordDamage && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrMalformedDelta)) {
				if rerr := s.RecordDamage(ctx, snap, "verify", err); rerr != nil {
					rep.Problems = append(rep.Problems, Problem{Key: snap.Key, Err: rerr})
				}
			}
		}
		if opts.Checked != nil {
			opts.Checked(snap, err)
		}
	}
	rep.Problems = append(rep.Problems, CheckChain(fulls, deltas)...)
	if len(fulls) > 0 {
		plan, err := PlanRestore(fulls, deltas, Target{}, bad)
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Err: err})
		} else {
			rep.Latest = plan
		}
	}
	return rep, nil
}

// verifyObject reads one object to its end and checks its content; it
// returns the payload's length.
func (s *Store) verifyObject(ctx context.Context, snap Snapshot) (int64, error) {
	r, err := s.Open(ctx, snap)
	if err != nil {
		if errors.Is(err, ErrNoIdentity) {
			err = fmt.Errorf("%w: give the identity (or passphrase) it was encrypted for", err)
		}
		return 0, err
	}
	defer r.Close()
	counted := &countingReader{r: r}
	if snap.Kind == KindFull {
		err = checkSnapshotPayload(counted)
	} else {
		err = checkDeltaPayload(counted, snap)
	}
	return counted.n, err
}

// checkSnapshotPayload reads a full snapshot's payload, the db followed by
// its SHA-256 (as etcd's Maintenance API sends it), and checks the hash.
func checkSnapshotPayload(r io.Reader) error {
	h := sha256.New()
	var tail [sha256.Size]byte // the last bytes read, not yet hashed
	have := 0
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		// Keep the last sha256.Size bytes of (tail[:have] + p) back.
		if have+len(p) > len(tail) {
			spill := have + len(p) - len(tail)
			if spill >= have {
				h.Write(tail[:have])
				h.Write(p[:spill-have])
				have = copy(tail[:], p[spill-have:])
			} else {
				h.Write(tail[:spill])
				copy(tail[:], tail[spill:have])
				have -= spill
				have += copy(tail[have:], p)
			}
		} else {
			have += copy(tail[have:], p)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if have < sha256.Size {
		return fmt.Errorf("%w: the snapshot is %d bytes, too short to hold etcd's SHA-256", ErrCorrupt, have)
	}
	if !bytes.Equal(h.Sum(nil), tail[:]) {
		return fmt.Errorf("%w: the db does not match the SHA-256 etcd appended to the snapshot", ErrCorrupt)
	}
	return nil
}

// checkDeltaPayload decodes a delta to its end and checks that it covers the
// revisions its name says.
func checkDeltaPayload(r io.Reader, snap Snapshot) error {
	d, err := NewDeltaDecoder(r)
	if err != nil {
		return err
	}
	if d.From() != snap.From || d.To() != snap.Revision {
		return fmt.Errorf("%w: the delta holds revisions %d..%d, its name says %d..%d", ErrCorrupt, d.From(), d.To(), snap.From, snap.Revision)
	}
	for {
		if _, _, err := d.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// CheckChain checks, from the names alone, that the objects of a store (its
// listings, sorted as List sorts) form a restorable history:
//
//   - there is a full snapshot;
//   - deltas leave no gap: from the oldest full snapshot on, each delta
//     starts right after the revision reached by the full snapshots and
//     deltas before it. A full snapshot may start past that revision (after
//     a restore to a past point the revision is bumped, and the revisions
//     in between never existed);
//   - no two deltas overlap, except copies of the same range (an upload
//     retried under a new time).
//
// A range between two full snapshots that no delta holds is not a gap when no delta lies
// wholly inside it: retention deletes the deltas between full snapshots it keeps, and the
// first delta of the later one usually starts a little before it (RestorableWindow calls
// such a range Pruned).
//
// Deltas older than the oldest full snapshot are ignored: nothing can
// restore them, and retention removes them.
func CheckChain(fulls, deltas []Snapshot) []Problem {
	if len(fulls) == 0 {
		if len(deltas) == 0 {
			return []Problem{{Err: errors.New("the store is empty: there is nothing to restore")}}
		}
		return []Problem{{Err: fmt.Errorf("the store has %d deltas but no full snapshot: nothing can be restored", len(deltas))}}
	}
	var problems []Problem
	reach := fulls[0].Revision // the highest revision restorable so far
	var last *Snapshot         // the delta that reached it, if one did
	for _, item := range MergeByRevision(fulls, deltas) {
		if item.Kind == KindFull {
			reach = max(reach, item.Revision)
			continue
		}
		if item.From > reach+1 && item.Revision > fulls[0].Revision {
			// A delta that starts before a later full snapshot and ends after it continues
			// that snapshot: the hole before it is a range retention pruned, not a break.
			if f, ok := fullWithin(fulls, max(reach, item.From-1), item.Revision); ok {
				reach = f
			}
		}
		switch {
		case item.Revision <= fulls[0].Revision:
			continue
		case item.From > reach+1:
			after := "the full snapshot at revision " + fmt.Sprint(reach)
			if last != nil && last.Revision == reach {
				after = last.Key
			}
			problems = append(problems, Problem{Key: item.Key, Err: fmt.Errorf(
				"gap: no delta covers revisions %d..%d (after %s)", reach+1, item.From-1, after)})
		case last != nil && item.From <= last.Revision && (item.From != last.From || item.Revision != last.Revision):
			problems = append(problems, Problem{Key: item.Key, Err: fmt.Errorf(
				"overlaps %s at revisions %d..%d: they cannot both belong to one history", last.Key, item.From, min(item.Revision, last.Revision))})
		}
		reach = max(reach, item.Revision)
		if last == nil || item.Revision >= last.Revision {
			d := item
			last = &d
		}
	}
	return problems
}

// fullWithin returns the revision of a full snapshot of fulls (sorted by revision) in
// from..to, the lowest one.
func fullWithin(fulls []Snapshot, from, to int64) (int64, bool) {
	i, _ := slices.BinarySearchFunc(fulls, from, func(f Snapshot, rev int64) int { return cmpInt(f.Revision, rev) })
	if i < len(fulls) && fulls[i].Revision <= to {
		return fulls[i].Revision, true
	}
	return 0, false
}

// mergeByRevision merges full snapshots and deltas (each sorted as List
// sorts) into one list ordered by first revision (a full snapshot's is its
// revision), full snapshots first.
func MergeByRevision(fulls, deltas []Snapshot) []Snapshot {
	all := slices.Concat(fulls, deltas)
	start := func(s Snapshot) int64 {
		if s.Kind == KindFull {
			return s.Revision
		}
		return s.From
	}
	slices.SortStableFunc(all, func(a, b Snapshot) int {
		switch {
		case start(a) != start(b):
			return cmpInt(start(a), start(b))
		case a.Kind != b.Kind:
			if a.Kind == KindFull {
				return -1
			}
			return 1
		}
		return CompareSnapshots(a, b)
	})
	return all
}
