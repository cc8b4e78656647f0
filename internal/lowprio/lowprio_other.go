//go:build !linux

package lowprio

// Supported reports whether Go lowers the priority of its threads on this platform.
const Supported = false

func lower() {}

func onMainThread() bool { return false }
