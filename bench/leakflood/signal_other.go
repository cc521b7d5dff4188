//go:build !unix

package main

import (
	"errors"
	"os"
)

// Pausing the flooder needs job-control signals: the harness measures on
// Unix only, and says so elsewhere.
var errNoPause = errors.New("pausing the flooder needs SIGSTOP/SIGCONT (Unix only)")

func stopProcess(*os.Process) error     { return errNoPause }
func continueProcess(*os.Process) error { return errNoPause }
