package snapstore

import (
	"errors"
	"fmt"
	"io"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdbr/etcdbr/snapstore/foreign"
)

// convertEBRDelta returns the etcdbr delta payload (docs/store-format.md, format version 2)
// of an etcd-backup-restore delta snapshot whose decompressed payload is plain: its events
// grouped by revision, each revision observed when etcd-backup-restore received its first
// event, and a lease record before the first revision that attaches a key to each lease,
// with the TTL UnrecordedTTL: etcd-backup-restore does not record lease TTLs. The payload is
// made on a goroutine of its own while it is read, one revision at a time, and ends with
// io.EOF only after the SHA-256 etcd-backup-restore appended matched.
func convertEBRDelta(plain io.ReadCloser, o foreign.EBRObject) io.ReadCloser {
	pr, pw := io.Pipe()
	c := &convertedDelta{pr: pr, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		err := writeConvertedDelta(pw, plain, o)
		_ = plain.Close()
		pw.CloseWithError(err) // nil: io.EOF for the reader
	}()
	return c
}

// convertedDelta is the payload convertEBRDelta makes.
type convertedDelta struct {
	pr   *io.PipeReader
	done chan struct{}
}

func (c *convertedDelta) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Close stops the conversion and waits until it ended, so that the object's body may be
// closed then.
func (c *convertedDelta) Close() error {
	c.pr.Close() // the conversion's next write fails with io.ErrClosedPipe
	<-c.done
	return nil
}

// writeConvertedDelta writes the etcdbr delta payload of the etcd-backup-restore delta o,
// read from plain, to w.
func writeConvertedDelta(w io.Writer, plain io.Reader, o foreign.EBRObject) error {
	enc, err := NewConvertedDeltaEncoder(w, o.Start, o.Last)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformedDelta, o.Key, err)
	}
	dec := foreign.NewEBRDeltaReader(plain)
	announced := map[int64]bool{}
	var cur *Revision
	flush := func() error {
		for _, ev := range cur.Events {
			if ev.Type != mvccpb.PUT || ev.Kv.Lease == 0 || announced[ev.Kv.Lease] {
				continue
			}
			announced[ev.Kv.Lease] = true
			if err := enc.Lease(Lease{ID: ev.Kv.Lease, TTL: UnrecordedTTL}); err != nil {
				return err
			}
		}
		return enc.Revision(*cur)
	}
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, foreign.ErrMalformed) && !errors.Is(err, foreign.ErrChecksum) {
				return fmt.Errorf("%w: %s: %w", ErrMalformedDelta, o.Key, err)
			}
			return err
		}
		rev := ev.Event.Kv.ModRevision
		if cur != nil && rev != cur.Revision {
			if err := flush(); err != nil {
				return converted(o, err)
			}
			cur = nil
		}
		if cur == nil {
			at := ev.Time.UTC()
			if at.IsZero() {
				at = o.Created // the events were received before the object was made
			}
			cur = &Revision{Revision: rev, Time: at}
		}
		cur.Events = append(cur.Events, ev.Event)
	}
	if cur != nil {
		if err := flush(); err != nil {
			return converted(o, err)
		}
	}
	if err := enc.Close(); err != nil {
		return converted(o, err)
	}
	return nil
}

// converted reports events of an etcd-backup-restore delta that do not make the delta its
// name says (revisions missing, out of order, outside its range): a malformed delta, unless
// the error is the pipe's (the reader went away).
func converted(o foreign.EBRObject, err error) error {
	if errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	return fmt.Errorf("%w: %s (revisions %d..%d by its name): %w", ErrMalformedDelta, o.Key, o.Start, o.Last, err)
}

// ebrTimeSlack is how far after its name's second an etcd-backup-restore object may have
// been made (its name truncates the time to the second).
const ebrTimeSlack = time.Second - time.Millisecond
