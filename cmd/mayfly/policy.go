package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

func newPolicyCmd() *cobra.Command {
	pol := &cobra.Command{
		Use:   "policy",
		Short: "Check, plan and apply policy (YAML files or folders)",
	}
	cf := addClientFlags(pol)

	check := &cobra.Command{
		Use:   "check FILE_OR_DIR…",
		Short: "Validate policy offline; exit 1 with file:line: reason for each problem",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			printWarnings(cmd.OutOrStdout(), p)
			fmt.Fprintf(cmd.OutOrStdout(), "policy ok: %d issuers, %d upstreams, %d grants (hash %.12s)\n",
				len(p.Issuers), len(p.Upstreams), len(p.Grants), p.Hash)
			return nil
		},
	}

	var planJSON bool
	plan := &cobra.Command{
		Use:   "plan FILE_OR_DIR…",
		Short: "Show what applying the policy would change on the server",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Changes []string `json:"changes"`
			}
			if err := c.sendYAML(cmd, "policy plan", http.MethodPost, "/v1/policy/plan", p.Source, &out); err != nil {
				return err
			}
			if planJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			printWarnings(cmd.OutOrStdout(), p)
			printChanges(cmd.OutOrStdout(), out.Changes)
			return nil
		},
	}
	plan.Flags().BoolVar(&planJSON, "json", false, "print JSON")

	var applyJSON bool
	apply := &cobra.Command{
		Use:   "apply FILE_OR_DIR…",
		Short: "Apply the policy on the server (a new version, recorded in the audit log)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parsePolicy(cmd.OutOrStdout(), args)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Version   int64    `json:"version"`
				Hash      string   `json:"hash"`
				Changes   []string `json:"changes"`
				Unchanged bool     `json:"unchanged,omitempty"`
				Revoked   int64    `json:"revoked,omitempty"`
			}
			if err := c.sendYAML(cmd, "policy apply", http.MethodPut, "/v1/policy", p.Source, &out); err != nil {
				return err
			}
			if applyJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			printWarnings(cmd.OutOrStdout(), p)
			if out.Unchanged {
				fmt.Fprintf(cmd.OutOrStdout(), "policy unchanged (version %d, hash %.12s)\n", out.Version, out.Hash)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied policy version %d (hash %.12s)\n", out.Version, out.Hash)
			printChanges(cmd.OutOrStdout(), out.Changes)
			if out.Revoked > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %d lease(s) the new policy no longer allows\n", out.Revoked)
			}
			return nil
		},
	}
	apply.Flags().BoolVar(&applyJSON, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the server's current policy YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			b, h, err := c.getRaw(cmd.Context(), "policy show", "/v1/policy", policy.MaxTotalSize+(1<<20))
			if err != nil {
				return err
			}
			if v := h.Get("Mayfly-Policy-Version"); v != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "policy version %s\n", v)
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	pol.AddCommand(check, plan, apply, show)
	return pol
}

// parsePolicy reads and validates files offline. Problems are printed to w
// as file:line: reason, and give exit 1; unreadable paths give exit 2.
func parsePolicy(w io.Writer, paths []string) (*policy.Policy, error) {
	files, err := policy.ReadPaths(paths...)
	if err != nil {
		return nil, usageErr("policy: %v", err)
	}
	if len(files) == 0 {
		return nil, usageErr("policy: no *.yaml files in %v", paths)
	}
	p, err := policy.Parse(files, nil)
	if err != nil {
		var pe policy.Errors
		if !errors.As(err, &pe) {
			return nil, negative("policy: %v", err)
		}
		for _, e := range pe {
			fmt.Fprintln(w, e.Error())
		}
		return nil, negative("policy is invalid: %d problem(s)", len(pe))
	}
	return p, nil
}

func printWarnings(w io.Writer, p *policy.Policy) {
	for _, e := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", e.Error())
	}
}

func printChanges(w io.Writer, changes []string) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "no changes")
		return
	}
	for _, ch := range changes {
		fmt.Fprintln(w, ch)
	}
}

// sendYAML sends a policy body.
func (c *apiClient) sendYAML(cmd *cobra.Command, what, method, path string, body []byte, out any) error {
	resp, err := c.do(cmd.Context(), what, method, path, bytes.NewReader(body), "application/yaml")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeJSON(what, resp.Body, out)
}
