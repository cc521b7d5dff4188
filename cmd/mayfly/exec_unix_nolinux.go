//go:build unix && !linux

package main

import "syscall"

// killWithParent: only Linux can tie CMD's life to exec's.
func killWithParent(*syscall.SysProcAttr) {}
