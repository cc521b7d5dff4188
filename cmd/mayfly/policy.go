package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

func newPolicyCmd() *cobra.Command {
	pol := &cobra.Command{
		Use:   "policy",
		Short: "Check, plan and apply policy (YAML files or folders)",
	}
	cf := addClientFlags(pol)

	var checkFmt *outputFormat
	check := &cobra.Command{
		Use:   "check FILE_OR_DIR…",
		Short: "Validate policy offline; exit 1 with file:line: reason for each problem",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := checkFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if format == "json" {
				return checkPolicyJSON(cmd.OutOrStdout(), args)
			}
			p, _, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			printWarnings(cmd.OutOrStdout(), p)
			fmt.Fprintf(cmd.OutOrStdout(), "policy ok: %d issuers, %d upstreams, %d grants (hash %.12s)\n",
				len(p.Issuers), len(p.Upstreams), len(p.Grants), p.Hash)
			return nil
		},
	}

	checkFmt = addFormatFlag(check, "text", "text", "json")

	var planFmt *outputFormat
	plan := &cobra.Command{
		Use:   "plan FILE_OR_DIR…",
		Short: "Show what applying the policy would change on the server",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := planFmt.resolve(cmd)
			if err != nil {
				return err
			}
			p, files, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.PlanPolicy(cmd.Context(), p.Source)
			if err != nil {
				return clientErr(userLines(err, files))
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			printPlan(cmd.OutOrStdout(), p, out.Changes, out.Revokes)
			return nil
		},
	}
	planFmt = addFormatFlag(plan, "text", "text", "json")

	var applyFmt *outputFormat
	var allowRevoke bool
	apply := &cobra.Command{
		Use:   "apply FILE_OR_DIR…",
		Short: "Apply the policy on the server (a new version, recorded in the audit log)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := applyFmt.resolve(cmd)
			if err != nil {
				return err
			}
			p, files, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			if !allowRevoke {
				// Show what the apply would revoke, and stop there: the
				// server refuses such an apply unless it is confirmed.
				plan, err := c.PlanApply(cmd.Context(), p.Source)
				if err != nil {
					return clientErr(userLines(err, files))
				}
				if len(plan.Revokes) > 0 {
					printPlan(cmd.ErrOrStderr(), p, plan.Changes, plan.Revokes)
					return negative("policy apply: nothing applied: it would revoke live tokens; run again with --yes to apply it and revoke them")
				}
			}
			apply := c.ApplyPolicy
			if allowRevoke {
				apply = c.ApplyPolicyAllowingRevocations
			}
			out, err := apply(cmd.Context(), p.Source)
			if err != nil {
				return clientErr(userLines(err, files))
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			printWarnings(cmd.OutOrStdout(), p)
			if out.Unchanged {
				fmt.Fprintf(cmd.OutOrStdout(), "policy unchanged (version %d, hash %.12s)\n", out.Version, client.OneLine(out.Hash, 64))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied policy version %d (hash %.12s)\n", out.Version, client.OneLine(out.Hash, 64))
			printChanges(cmd.OutOrStdout(), out.Changes)
			if out.Revoked > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %d lease(s) the new policy no longer allows\n", out.Revoked)
			}
			return nil
		},
	}
	applyFmt = addFormatFlag(apply, "text", "text", "json")
	apply.Flags().BoolVarP(&allowRevoke, "yes", "y", false, "apply even when it revokes live tokens of grants the policy removes")
	apply.Flags().BoolVar(&allowRevoke, "allow-revoke", false, "same as --yes")

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the server's current policy YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			b, v, err := c.Policy(cmd.Context(), policy.MaxTotalSize+(1<<20))
			if err != nil {
				return clientErr(err)
			}
			if (v == "0" || v == "") && len(bytes.TrimSpace(b)) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no policy applied yet: apply one with mayfly policy apply FILE (or start the server with --policy FILE)")
				return nil
			}
			if v != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "policy version %s\n", client.OneLine(v, 32))
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	pol.AddCommand(check, plan, apply, show, newPolicyTestCmd())
	return pol
}

// parsePolicy reads and validates files offline. Problems are printed to w
// as file:line: reason, and give exit 1; unreadable paths give exit 2. The
// files are returned too, to name the server's problems by them.
func parsePolicy(w io.Writer, paths []string) (*policy.Policy, []policy.File, error) {
	files, err := policy.ReadPaths(paths...)
	if err != nil {
		return nil, nil, usageErr("policy: %v", err)
	}
	if len(files) == 0 {
		return nil, nil, usageErr("policy: no *.yaml files in %v", paths)
	}
	p, err := policy.Parse(files, nil)
	if err != nil {
		var pe policy.Errors
		if !errors.As(err, &pe) {
			return nil, nil, negative("policy: %v", err)
		}
		for _, e := range pe {
			fmt.Fprintln(w, e.Error())
		}
		return nil, nil, negative("policy is invalid: %d problem(s)", len(pe))
	}
	return p, files, nil
}

// serverPolicyName is the name the server gives the policy it is sent
// (internal/api readPolicy): one stream, p.Source.
const serverPolicyName = "policy.yaml"

// userLines rewrites each "policy.yaml:N:" in the server's invalid_policy
// error as the user's file and line. The server only sees the joined
// Source, so problems only it can find (an unknown secret) would otherwise
// point at a line of a file the user never wrote (SPEC §3: file and line).
func userLines(err error, files []policy.File) error {
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Code != "invalid_policy" || len(files) == 0 {
		return err
	}
	// Where each file's first line is in Source (policy.source): one file
	// is sent verbatim; several each follow a "---" (but the first) and a
	// "# file: NAME" line, and end in a line break.
	starts := make([]int, len(files))
	line := 1
	for i, f := range files {
		if len(files) > 1 {
			if i > 0 {
				line++
			}
			line++
		}
		starts[i] = line
		d := bytes.TrimPrefix(f.Data, []byte("\ufeff")) // as Parse does
		line += bytes.Count(d, []byte("\n"))
		if len(d) > 0 && d[len(d)-1] != '\n' {
			line++
		}
	}
	locate := func(n int) (string, int) {
		// A "---" or "# file:" line counts as the first line of its file.
		i := len(starts) - 1
		for i > 0 && starts[i]-2 > n {
			i--
		}
		return files[i].Name, max(1, n-starts[i]+1)
	}
	// The description is one line (client.OneLine): problems follow one
	// another after a space.
	var b strings.Builder
	s := ae.Description
	prefix := serverPolicyName + ":"
	for {
		k := strings.Index(s, prefix)
		if k < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:k])
		rest := s[k+len(prefix):]
		digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
		n, cerr := strconv.Atoi(rest[:digits])
		if (k > 0 && s[k-1] != ' ') || digits == 0 || cerr != nil || !strings.HasPrefix(rest[digits:], ":") {
			b.WriteString(prefix)
			s = rest
			continue
		}
		name, l := locate(n)
		fmt.Fprintf(&b, "%s:%d", name, l)
		s = rest[digits:]
	}
	ae.Description = b.String()
	return err
}

// printWarnings prints p's warnings, and what a policy that grants nothing
// does: it is valid (deny everything), but rarely what was meant, e.g. an
// empty or truncated file.
func printWarnings(w io.Writer, p *policy.Policy) {
	for _, e := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", e.Error())
	}
	if len(p.Grants) == 0 {
		fmt.Fprintln(w, "warning: this policy has no grants: every exchange is refused, and applying it revokes every live job token")
	}
}

// printPlan prints what applying p would do: its warnings, the changes
// and the live tokens it would revoke (plan, and an apply that stops).
func printPlan(w io.Writer, p *policy.Policy, changes []string, revs []apitype.PolicyRevocation) {
	printWarnings(w, p)
	printChanges(w, changes)
	for _, r := range revs {
		fmt.Fprintf(w, "will revoke %d live token(s) of grant %s, which this policy removes\n", r.Leases, client.OneLine(r.Grant, 200))
	}
}

func printChanges(w io.Writer, changes []string) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "no changes")
		return
	}
	for _, ch := range changes {
		fmt.Fprintln(w, shown(ch))
	}
}

// policyCheckReport is `policy check --format json`'s answer.
type policyCheckReport struct {
	OK        bool            `json:"ok"`
	Problems  []policyProblem `json:"problems"`
	Warnings  []policyProblem `json:"warnings"`
	Issuers   int             `json:"issuers"`
	Upstreams int             `json:"upstreams"`
	Grants    int             `json:"grants"`
	Hash      string          `json:"hash,omitempty"`
}

type policyProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func problems(es policy.Errors) []policyProblem {
	out := make([]policyProblem, 0, len(es))
	for _, e := range es {
		out = append(out, policyProblem{File: e.File, Line: e.Line, Column: e.Column, Path: e.Path, Message: e.Msg})
	}
	return out
}

// checkPolicyJSON validates offline and prints the report as JSON; exit 1
// when the policy is invalid, as in text.
func checkPolicyJSON(w io.Writer, paths []string) error {
	files, err := policy.ReadPaths(paths...)
	if err != nil {
		return usageErr("policy: %v", err)
	}
	if len(files) == 0 {
		return usageErr("policy: no *.yaml files in %v", paths)
	}
	rep := policyCheckReport{Problems: []policyProblem{}, Warnings: []policyProblem{}}
	p, err := policy.Parse(files, nil)
	var pe policy.Errors
	switch {
	case err == nil:
		rep.OK, rep.Warnings = true, problems(p.Warnings)
		rep.Issuers, rep.Upstreams, rep.Grants, rep.Hash = len(p.Issuers), len(p.Upstreams), len(p.Grants), p.Hash
	case errors.As(err, &pe):
		rep.Problems = problems(pe)
	default:
		return negative("policy: %v", err)
	}
	if err := printJSON(w, rep); err != nil {
		return err
	}
	if !rep.OK {
		return silentExit(exitNegative)
	}
	return nil
}
