//go:build unix

package main

import (
	"os"
	"syscall"
)

// The flooder is paused between phases with job-control signals.
func stopProcess(p *os.Process) error     { return p.Signal(syscall.SIGSTOP) }
func continueProcess(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
