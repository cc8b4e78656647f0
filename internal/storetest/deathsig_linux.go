package storetest

import "syscall"

// setDeathSignal makes the kernel kill a server when the process that started
// it dies, so that a killed test run leaves no server behind.
func setDeathSignal(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGKILL
}
