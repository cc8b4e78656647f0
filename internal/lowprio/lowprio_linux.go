package lowprio

import "syscall"

// Supported reports whether Go lowers the priority of its threads on this platform.
const Supported = true

// lower sets the nice value of the calling thread (Linux: setpriority with a thread ID
// changes that thread alone). Failing is harmless: the work runs at the ordinary priority.
func lower() {
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), Nice)
}

// onMainThread reports whether the calling goroutine runs on the process's main thread.
func onMainThread() bool { return syscall.Gettid() == syscall.Getpid() }
