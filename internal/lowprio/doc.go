// Package lowprio runs work on OS threads of the lowest CPU priority, so that a background
// job inside the process that runs etcd (the compaction of the backup chain in etcdbr run)
// gets the CPU that etcd and the other processes of the machine leave idle.
//
// Go gives goroutines no priority, but Linux schedules threads, each with a nice value of
// its own (setpriority(2) with a thread ID). Go runs fn on a goroutine locked to an OS
// thread, sets that thread's nice value to 19 (the lowest priority) and never unlocks it, so
// that the thread ends with the goroutine and no other goroutine ever runs on it: an
// unprivileged process cannot raise a priority again, so a lowered thread must not go back
// to Go's pool. The process's main thread is never lowered (it cannot end: Go parks it
// forever instead, and tools such as ps show its nice value as the process's). Only fn's own
// code runs at the low priority: goroutines it starts run on the ordinary threads, unless
// they are started with Go as well, and the threads Go's runtime creates meanwhile keep the
// ordinary priority (a locked goroutine has them created by the runtime's template thread).
// Elsewhere than Linux, fn runs at the ordinary priority.
package lowprio

import "runtime"

// Nice is the nice value of the threads Go runs work on: the lowest priority.
const Nice = 19

// Go runs fn on a new goroutine, on an OS thread of its own at the lowest CPU priority
// (where the platform allows: Supported), and returns at once.
func Go(fn func()) {
	if !Supported {
		go fn()
		return
	}
	start(fn, nil)
}

// start runs fn on a goroutine locked to a thread that is not the main thread; locked, when
// not nil, is closed once that goroutine holds its thread.
func start(fn func(), locked chan<- struct{}) {
	go func() {
		// Never unlocked once lowered: the thread exits with this goroutine.
		runtime.LockOSThread()
		if locked != nil {
			close(locked)
		}
		if onMainThread() {
			// Hold the main thread while another goroutine takes a thread of its own (it
			// cannot be this one), then give it back to the pool at its priority.
			l := make(chan struct{})
			start(fn, l)
			<-l
			runtime.UnlockOSThread()
			return
		}
		lower()
		fn()
	}()
}

// Run runs fn as Go does and waits for it to return.
func Run(fn func()) {
	done := make(chan struct{})
	Go(func() {
		defer close(done)
		fn()
	})
	<-done
}
