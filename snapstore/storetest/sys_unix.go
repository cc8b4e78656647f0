//go:build unix

package storetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive lock on dir, waiting for other holders.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

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
