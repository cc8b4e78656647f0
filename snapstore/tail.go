package snapstore

import "io"

// TailHolder passes what is written to it on to W, except the last Keep bytes, which it holds
// back: a full snapshot's stream, as etcd sends it, is the db followed by the db's SHA-256.
type TailHolder struct {
	W    io.Writer
	Keep int
	tail []byte
	n    int64
	err  error
}

// Write passes on what is no longer among the last Keep bytes written; the first error of W
// is returned by every later Write.
func (t *TailHolder) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	t.n += int64(len(p))
	over := len(t.tail) + len(p) - t.Keep // what goes out now: the old tail first, then p
	if over <= 0 {
		t.tail = append(t.tail, p...)
		return len(p), nil
	}
	fromTail := min(over, len(t.tail))
	fromP := over - fromTail
	for _, b := range [][]byte{t.tail[:fromTail], p[:fromP]} {
		if len(b) == 0 {
			continue
		}
		if _, err := t.W.Write(b); err != nil {
			t.err = err
			return 0, err
		}
	}
	tail := make([]byte, 0, t.Keep)
	t.tail = append(append(tail, t.tail[fromTail:]...), p[fromP:]...)
	return len(p), nil
}

// Tail returns the bytes held back: the last Keep bytes written (all of them when fewer).
func (t *TailHolder) Tail() []byte { return t.tail }

// Written returns how many bytes were written to it.
func (t *TailHolder) Written() int64 { return t.n }
