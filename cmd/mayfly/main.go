// Command mayfly is the one mayfly binary: the server, the admin and job
// CLIs, the scanner, the masker and the demo. This package holds flags,
// output formats and wiring only; the work is done in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes shared by every command (SPEC section 1).
const (
	exitOK       = 0
	exitNegative = 1 // the command's negative answer: findings, failed verify, refused
	exitUsage    = 2 // usage or environment error
)

// exitError carries an exit code and a one-line message to main.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// negative makes the command's negative answer (exit 1).
func negative(format string, args ...any) error {
	return &exitError{code: exitNegative, msg: fmt.Sprintf(format, args...)}
}

// usageErr makes a usage or environment error (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// silentExit ends with code and prints nothing more (the command has
// already said what it had to).
func silentExit(code int) error { return &exitError{code: code} }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mayfly",
		Short:         "Just-in-time CI tokens, a credential-injecting gateway and a tamper-evident audit log",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%s: %v", c.CommandPath(), err)
	})
	root.AddCommand(
		newInitCmd(),
		newServerCmd(),
		newDemoCmd(),
		newScanCmd(),
		newMaskCmd(),
		newAdminCmd(),
		newSecretCmd(),
		newPolicyCmd(),
		newLeasesCmd(),
		newAuditCmd(),
		newLoginCmd(),
		newExecCmd(),
		newDevIssuerCmd(),
		newGatewayCmd(),
	// Commands register here, one line each.
	)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	os.Exit(report(err))
}

// report prints err as one line on stderr and returns the exit code.
func report(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "mayfly: "+ee.msg)
		}
		return ee.code
	}
	// Cobra's own argument and unknown-command errors are usage errors.
	fmt.Fprintln(os.Stderr, "mayfly: "+err.Error())
	return exitUsage
}
