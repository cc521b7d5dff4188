//go:build !unix

package main

import (
	"os"
	"syscall"
)

// execGroup: without Unix process groups, exec passes every signal on.
type execGroup struct{}

func newExecGroup() execGroup { return execGroup{} }

func (execGroup) attr() *syscall.SysProcAttr { return nil }

func (execGroup) send(p *os.Process, s os.Signal) error { return p.Signal(s) }

func (execGroup) reachedCMD(os.Signal) bool { return false }
