//go:build unix

package main

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// execGroup says which process group CMD of `mayfly exec` runs in, so that
// a signal sent to exec's group reaches CMD once, not also as exec's copy.
//
// In the foreground of a terminal CMD shares exec's group, as any command a
// shell runs, so it can read the terminal and gets Ctrl-C and Ctrl-\ from
// it directly: exec does not pass those on. Elsewhere (a CI job, whose
// runner signals the job's whole group) CMD gets a group of its own, and
// exec signals that group, as timeout(1) does.
type execGroup struct{ own bool }

func newExecGroup() execGroup { return execGroup{own: !terminalForeground()} }

func (g execGroup) attr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: g.own}
	// No longer in the runner's group, CMD must still die with exec.
	killWithParent(a)
	return a
}

// send sends s to CMD: to its whole group when it has one of its own.
func (g execGroup) send(p *os.Process, s os.Signal) error {
	if sig, ok := s.(syscall.Signal); ok && g.own {
		return syscall.Kill(-p.Pid, sig)
	}
	return p.Signal(s)
}

// reachedCMD reports whether CMD, once running, got s as exec did: the
// terminal's Ctrl-C and Ctrl-\ when they share its foreground group.
func (g execGroup) reachedCMD(s os.Signal) bool {
	return !g.own && (s == syscall.SIGINT || s == syscall.SIGQUIT)
}

// terminalForeground reports whether exec runs in the foreground process
// group of its controlling terminal.
func terminalForeground() bool {
	fd, err := unix.Open("/dev/tty", unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // no controlling terminal
	}
	defer unix.Close(fd)
	pg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pg == unix.Getpgrp()
}
