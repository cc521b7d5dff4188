package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

func newGatewayCmd() *cobra.Command {
	gw := &cobra.Command{
		Use:   "gateway",
		Short: "Gateway tools",
	}
	var policyPaths []string
	var grant string
	test := &cobra.Command{
		Use:   "test --policy FILE_OR_DIR --grant GRANT METHOD PATH",
		Short: "Dry-run a gateway request against a policy offline: which allow rule lets it through, if any",
		Long: `Checks METHOD on PATH as the gateway would for a token of GRANT: the same path
checks and decoding (encoded slashes and dots, ".." and "." segments, empty
segments, control characters are refused), then the grant's allow rules.
PATH is either the upstream path ("/repos/acme/app/issues") or the gateway
path ("/gw/github-api/repos/acme/app/issues"), percent-encoded as a client
would send it; a query string is ignored. Source address and DPoP checks
need a live token and are not run. Exit 0 when allowed, 1 when denied.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(policyPaths) == 0 {
				return usageErr("gateway test: --policy is required")
			}
			if grant == "" {
				return usageErr("gateway test: --grant is required")
			}
			files, err := policy.ReadPaths(policyPaths...)
			if err != nil {
				return usageErr("gateway test: %v", err)
			}
			p, err := policy.Parse(files, nil)
			if err != nil {
				var es policy.Errors
				if errors.As(err, &es) {
					for _, e := range es {
						fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
					}
					return usageErr("gateway test: the policy is not valid (%d problems)", len(es))
				}
				return usageErr("gateway test: %v", err)
			}
			g := p.Grants[grant]
			if g == nil {
				return usageErr("gateway test: no grant %q in the policy", grant)
			}
			method, raw := args[0], args[1]
			if i := strings.IndexByte(raw, '?'); i >= 0 {
				raw = raw[:i]
			}
			if rest, ok := strings.CutPrefix(raw, "/gw/"); ok {
				up, sub, _ := strings.Cut(rest, "/")
				if up != g.Upstream {
					return negative("denied: grants.%s is for upstream %q, not %q", grant, g.Upstream, up)
				}
				raw = "/" + sub
				if sub == "" && !strings.HasSuffix(rest, "/") {
					raw = ""
				}
			}
			clean, err := policy.CleanPath(raw)
			if err != nil {
				return negative("denied: %v (the gateway answers 400)", err)
			}
			if method != strings.ToUpper(method) {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: methods are compared exactly; %q is not %q\n", method, strings.ToUpper(method))
			}
			rule, ok := g.Allow(method, clean)
			if !ok {
				return negative("denied: no allow rule of grants.%s lets %s %s through (403 insufficient_scope)", grant, method, clean)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "allowed by grants.%s.allow[%d] (upstream %s, forwarded as %s)\n", grant, rule, g.Upstream, policy.EscapePath(clean))
			return nil
		},
	}
	test.Flags().StringSliceVar(&policyPaths, "policy", nil, "policy file or folder (repeatable)")
	test.Flags().StringVar(&grant, "grant", "", "grant name")
	gw.AddCommand(test)
	return gw
}
