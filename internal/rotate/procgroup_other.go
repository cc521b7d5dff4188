//go:build !unix

package rotate

import "os/exec"

// ownGroup: without process groups, the timeout kills the program itself.
func ownGroup(*exec.Cmd) {}

func endGroup(*exec.Cmd) {}
