package snapstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/etcdbr/etcdbr/snapstore/catalog"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Fulls and Deltas are the numbers of objects checked.
	Fulls, Deltas int
	// StoredBytes is their size in the store, PayloadBytes decoded.
	StoredBytes, PayloadBytes int64
	// Latest is the chain a restore to the latest point reads, leaving out
	// the objects found bad; its Full.Key is "" when there is none.
	Latest catalog.RestorePlan
	// Problems lists everything found wrong, objects in List's order first.
	Problems []catalog.Problem
	// Gone lists the objects that were listed but deleted before they were read: garbage
	// collection (of a running member, or etcdbr gc) deleted them meanwhile. They are no
	// longer part of the store: not counted, not checked, and left out of the chain checks.
	Gone []string
}

// OK reports whether Verify found nothing wrong.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Checked, when set, is called after each object was read, with the
	// problem found in it (nil if none).
	Checked func(snap catalog.Snapshot, problem error)
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
// made of intact objects). Objects are read one at a time, streaming. An
// object deleted between the listing and its read (garbage collection runs
// beside: a member's, or etcdbr gc) is no problem: it is reported in Gone,
// and the chain is checked without it.
//
// An object that fails its checks is read a second time before it is reported (and
// recorded damaged): damage on the way does not repeat.
//
// Everything wrong is reported in the VerifyReport; the error is only for
// a store that cannot be listed and a cancelled ctx, which leave the
// verification incomplete.
func Verify(ctx context.Context, s *Store, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	l, err := s.ListBackups(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	fulls, deltas := l.Fulls, l.Deltas
	bad, gone := map[string]bool{}, map[string]bool{}
	for _, snap := range catalog.MergeByRevision(fulls, deltas) {
		n, err := s.verifyObjectTwice(ctx, snap)
		if ctx.Err() != nil {
			return rep, fmt.Errorf("verify %s: %w", s.url, ctx.Err())
		}
		if errors.Is(err, ErrNotFound) {
			rep.Gone = append(rep.Gone, snap.Key)
			gone[snap.Key] = true
			continue
		}
		if snap.Kind == catalog.KindFull {
			rep.Fulls++
		} else {
			rep.Deltas++
		}
		rep.StoredBytes += snap.Size
		rep.PayloadBytes += n
		if err != nil {
			bad[snap.Key] = true
			rep.Problems = append(rep.Problems, catalog.Problem{Key: snap.Key, Err: err})
			if opts.RecordDamage && (errors.Is(err, ErrCorrupt) || errors.Is(err, ErrMalformedDelta)) {
				if rerr := s.RecordDamage(ctx, snap, "verify", err); rerr != nil {
					rep.Problems = append(rep.Problems, catalog.Problem{Key: snap.Key, Err: rerr})
				}
			}
		}
		if opts.Checked != nil {
			opts.Checked(snap, err)
		}
	}
	if len(gone) > 0 {
		isGone := func(s catalog.Snapshot) bool { return gone[s.Key] }
		fulls, deltas = slices.DeleteFunc(slices.Clone(fulls), isGone), slices.DeleteFunc(slices.Clone(deltas), isGone)
	}
	rep.Problems = append(rep.Problems, catalog.CheckChain(fulls, deltas)...)
	if len(fulls) > 0 {
		plan, err := catalog.PlanRestore(fulls, deltas, catalog.Target{}, bad)
		if err != nil {
			rep.Problems = append(rep.Problems, catalog.Problem{Err: err})
		} else {
			rep.Latest = plan
		}
	}
	return rep, nil
}

// verifyObjectTwice is verifyObject, reading an object that fails its checks once more: a
// byte damaged on the way (a faulty network card, proxy or load balancer) fails the
// checksum as damage in the store does, but only damage in the store fails again. The
// second read's verdict stands.
func (s *Store) verifyObjectTwice(ctx context.Context, snap catalog.Snapshot) (int64, error) {
	n, err := s.verifyObject(ctx, snap)
	if err == nil || ctx.Err() != nil || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrMalformedDelta)) {
		return n, err
	}
	s.opts.Log.Warn("a backup object failed verification: reading it again", "object", snap.Key, "err", err)
	n, again := s.verifyObject(ctx, snap)
	if again == nil {
		s.opts.Log.Warn("the backup object read back intact: it was damaged on the way, not in the store",
			"object", snap.Key, "first_read", err)
	}
	return n, again
}

// verifyObject reads one object to its end and checks its content; it
// returns the payload's length.
func (s *Store) verifyObject(ctx context.Context, snap catalog.Snapshot) (int64, error) {
	r, err := s.Open(ctx, snap)
	if err != nil {
		if errors.Is(err, ErrNoIdentity) {
			err = fmt.Errorf("%w: give the identity (or passphrase) it was encrypted for", err)
		}
		return 0, err
	}
	defer r.Close()
	counted := &countingReader{r: r}
	if snap.Kind == catalog.KindFull {
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
func checkDeltaPayload(r io.Reader, snap catalog.Snapshot) error {
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
