package main

import "syscall"

// killWithParent has CMD killed when exec dies, as it was when it shared
// the group a runner kills. (The kernel follows the thread that started
// CMD: runMasked stays on it.)
func killWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
