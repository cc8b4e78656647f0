//go:build unix

package storetest

import (
	"os/exec"
	"syscall"
)

// detach puts a server in its own process group, so that killing the group
// also kills what it started.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
}

// killGroup sends SIGKILL to the process group of a server started by detach.
func killGroup(cmd *exec.Cmd) error {
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// terminate asks a server to stop. SIGINT, since Azurite closes on SIGTERM but
// then does not exit.
func terminate(cmd *exec.Cmd) error {
	return cmd.Process.Signal(syscall.SIGINT)
}
