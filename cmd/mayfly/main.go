// Command mayfly is the one mayfly binary: the server, the admin and job
// CLIs, the scanner, the masker and the demo. This package holds flags,
// output formats and wiring only; the work is done in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/version"
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
		Version:       version.Get().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%s", withCommand(c, err.Error()))
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
		newAuthCmd(),
		newExecCmd(),
		newDevIssuerCmd(),
		newGatewayCmd(),
		newVersionCmd(),
		newTLSCmd(),
	// Commands register here, one line each.
	)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every group command (one that only holds
// sub-commands) answer an unknown sub-command with a usage error (exit 2)
// instead of printing its help and exiting 0. Without arguments a group
// still prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasParent() || c.Runnable() || !c.HasSubCommands() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q", args[0])
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
		}
		return usageErr("%s", withCommand(cmd, msg+"; see "+cmd.CommandPath()+" --help"))
	}
}

// withCommand prefixes msg with the command's path below the root
// ("policy check: …"), or leaves it alone for the root command.
func withCommand(c *cobra.Command, msg string) string {
	if c == nil || !c.HasParent() {
		return msg
	}
	name := strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
	if strings.HasPrefix(msg, name+":") {
		return msg
	}
	return name + ": " + msg
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, newRootCmd(), os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs the command line, reports an error on stderr as one line
// and returns the exit code.
func execute(ctx context.Context, root *cobra.Command, stderr io.Writer) int {
	cmd, err := root.ExecuteContextC(ctx)
	return report(stderr, cmd, err)
}

// maxErrorLine bounds the one line an error is reported as.
const maxErrorLine = 600

// report prints err on stderr as one line and returns the exit code. cmd
// is the command that failed (it names cobra's own argument errors).
func report(stderr io.Writer, cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "mayfly: "+oneLine(ee.msg))
		}
		return ee.code
	}
	// Cobra's own argument and unknown-command errors are usage errors.
	fmt.Fprintln(stderr, "mayfly: "+oneLine(withCommand(cmd, err.Error())))
	return exitUsage
}

// oneLine folds a message that spans lines (a YAML decoder's list, a
// tool's usage text, cobra's suggestions) into one line of bounded length:
// errors are one line on stderr (SPEC section 1).
func oneLine(msg string) string {
	var b strings.Builder
	for _, l := range strings.Split(msg, "\n") {
		l = strings.Join(strings.Fields(l), " ")
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			if s := b.String(); strings.HasSuffix(s, ":") || strings.HasSuffix(s, "?") {
				b.WriteByte(' ')
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(l)
	}
	out := b.String()
	if r := []rune(out); len(r) > maxErrorLine {
		out = string(r[:maxErrorLine]) + "…"
	}
	return out
}
