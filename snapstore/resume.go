package snapstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"gocloud.dev/blob"

	"github.com/etcdbr/etcdbr/internal/backoff"
)

// rangeBody is an open byte range of an object: *blob.Reader.
type rangeBody interface {
	io.ReadCloser
	Size() int64        // the size of the whole object
	ModTime() time.Time // when the object was written
}

// rangeOpener opens the object from offset to its end.
type rangeOpener func(ctx context.Context, offset int64) (rangeBody, error)

// bucketRange opens ranges of key in bucket.
func bucketRange(bucket *blob.Bucket, key string) rangeOpener {
	return func(ctx context.Context, offset int64) (rangeBody, error) {
		return bucket.NewRangeReader(ctx, key, offset, -1, nil)
	}
}

// resumingReader reads an object to its end through stream breaks: when a
// read fails (a reset connection, a server restarting, a stream that ends
// before the object's size) it opens the object again from the offset it
// reached, with backoff, so that a long download does not start over. It
// gives up after policy.Attempts tries in a row without a byte of
// progress, when ctx is done, on a permanent error (see permanent), and
// when the object changed (size or time) since the first open. It reads on
// the caller's goroutine; it is not safe for concurrent use.
type resumingReader struct {
	ctx      context.Context
	open     rangeOpener
	key, url string
	policy   RetryPolicy
	log      *slog.Logger

	body    rangeBody // nil between a break and the next open
	offset  int64
	size    int64
	modTime time.Time
	tries   int             // failed tries since the last progress
	wait    backoff.Backoff // the waits between them
	last    error           // the last failure
	err     error           // sticky: the reader gave up
	resumes int             // how many times the stream was opened again
}

// openResuming opens key from its start, retrying transient failures, and
// returns a reader that resumes after breaks.
func openResuming(ctx context.Context, open rangeOpener, key, url string, policy RetryPolicy, log *slog.Logger) (*resumingReader, error) {
	policy = policy.orDefault()
	r := &resumingReader{ctx: ctx, open: open, key: key, url: url, policy: policy, wait: policy.backoff(), log: log, size: -1}
	if err := r.reopen(); err != nil {
		return nil, err
	}
	return r, nil
}

// Read reads from the current stream, resuming it when it breaks.
func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.body == nil {
			if err := r.reopen(); err != nil {
				r.err = err
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.offset += int64(n)
		if n > 0 {
			r.tries = 0
			r.wait.Reset()
		}
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.EOF) && r.offset >= r.size:
			return n, io.EOF
		case errors.Is(err, io.EOF):
			err = fmt.Errorf("the stream ended at byte %d of %d: %w", r.offset, r.size, io.ErrUnexpectedEOF)
		case r.offset >= r.size:
			// Broken after the last byte: there is nothing left to read
			// (and a range starting at the end is not satisfiable).
			return n, io.EOF
		}
		if r.ctx.Err() != nil {
			r.err = err
			return n, err
		}
		r.log.Warn("reading from the store broke off; resuming", "object", r.key, "store", r.url,
			"offset", r.offset, "size", r.size, "err", err)
		_ = r.body.Close()
		r.body, r.last = nil, err
		if n > 0 {
			return n, nil
		}
	}
}

// reopen opens the object at r.offset. After a failure (r.last) it waits
// first, with backoff, and counts the try.
func (r *resumingReader) reopen() error {
	for {
		if r.last != nil {
			r.tries++
			if r.tries >= r.policy.Attempts {
				return fmt.Errorf("read %q from %q: gave up after %d tries without progress at byte %d: %w",
					r.key, r.url, r.tries, r.offset, r.last)
			}
			if err := backoff.Sleep(r.ctx, r.wait.Next()); err != nil {
				return fmt.Errorf("read %q from %q: %w (while retrying after: %w)", r.key, r.url, err, r.last)
			}
		}
		body, err := r.open(r.ctx, r.offset)
		if err != nil {
			if permanent(err) || r.ctx.Err() != nil {
				return err
			}
			r.log.Warn("opening an object in the store failed; retrying", "object", r.key, "store", r.url,
				"offset", r.offset, "err", err)
			r.last = err
			continue
		}
		if r.size < 0 {
			r.size, r.modTime = body.Size(), body.ModTime()
		} else if body.Size() != r.size || !body.ModTime().Equal(r.modTime) {
			_ = body.Close()
			return fmt.Errorf("read %q from %q: the object was replaced while it was read (size %d, then %d; time %s, then %s): read it again",
				r.key, r.url, r.size, body.Size(), r.modTime, body.ModTime())
		}
		if r.last != nil {
			r.resumes++
		}
		r.body, r.last = body, nil
		return nil
	}
}

// Close closes the current stream.
func (r *resumingReader) Close() error {
	r.err = errors.New("reader is closed")
	if r.body == nil {
		return nil
	}
	body := r.body
	r.body = nil
	return body.Close()
}
