//go:build unix

package rotate

import (
	"os/exec"
	"syscall"
)

// ownGroup runs cmd in a process group of its own, so that on timeout the
// whole group (a script and whatever it started) is killed, not only the
// program itself.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// endGroup kills what a finished rotator left running in its group: a
// rotator leaves nothing behind.
func endGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
