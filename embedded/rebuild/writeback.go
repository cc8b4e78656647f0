package rebuild

import "os"

// writeBack writes a file's dirty pages back while it is being written, on a goroutine of
// its own, each time it is poked: the fsync that makes a staged data dir durable then finds
// them on disk instead of writing the whole db at once, while the CPUs that wrote it idle
// (three members restored at once on two cores waited about 2 s for theirs). It is a hint:
// an error only ends it.
//
// Lifecycle: kick may be called until stop, and stop once; stop closes poke, waits for the
// goroutine to end and closes the file.
type writeBack struct {
	f    *os.File
	poke chan struct{} // buffered (1): a poke while one is pending is dropped
	done chan struct{} // closed by the goroutine when it ends
}

// newWriteBack opens path for writing it back; nil when it cannot (then poke and stop do
// nothing).
func newWriteBack(path string) *writeBack {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	w := &writeBack{f: f, poke: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for range w.poke {
			if err := startWriteBack(f); err != nil {
				for range w.poke { // until stop
				}
				return
			}
		}
	}()
	return w
}

// kick asks for the file's dirty pages to be written back, without waiting.
func (w *writeBack) kick() {
	if w == nil {
		return
	}
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// stop ends the writing back and closes the file.
func (w *writeBack) stop() {
	if w == nil {
		return
	}
	close(w.poke)
	<-w.done
	_ = w.f.Close()
}
