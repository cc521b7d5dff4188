package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newAdminCmd() *cobra.Command {
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Manage admin tokens (admin role)",
	}
	cf := addClientFlags(admin)
	tokens := &cobra.Command{Use: "token", Short: "Create, list and revoke admin tokens"}
	admin.AddCommand(tokens)

	var role, ttlFlag string
	var createFmt *outputFormat
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|auditor [--ttl 90d]",
		Short: "Create an admin token; it is printed once, keep it safe",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := createFmt.resolve(cmd)
			if err != nil {
				return err
			}
			switch role {
			case "admin", "operator", "auditor":
			case "":
				return usageErr("admin token create: --role is required (admin, operator or auditor)")
			default:
				return usageErr("admin token create: unknown role %q (admin, operator or auditor)", role)
			}
			ttl, err := parseTTL(ttlFlag)
			if err != nil {
				return usageErr("admin token create: --ttl: %v", err)
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.CreateAdminToken(cmd.Context(), args[0], role, ttl)
			if err != nil {
				return clientErr(err)
			}
			if out.Name == "" {
				out.Name = args[0]
			}
			if out.Role == "" {
				out.Role = role
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %q (role %s) created, expires %s; it is shown only this once\n", out.Name, out.Role, shortTime(&out.ExpiresAt))
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or auditor")
	create.Flags().StringVar(&ttlFlag, "ttl", "", "how long the token works, e.g. 90d, 12h, 30m (default: the server's, 90d; at most its admin_token_max_ttl)")
	createFmt = addFormatFlag(create, "text", "text", "json")

	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens: name, role, age, expiry, last use (never the tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := listFmt.resolve(cmd)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.ListAdminTokens(cmd.Context())
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			now := time.Now()
			rows := make([][]string, 0, len(out.Tokens))
			for _, t := range out.Tokens {
				expires := "never"
				if t.ExpiresAt != nil {
					expires = shortTime(t.ExpiresAt)
					if !now.Before(*t.ExpiresAt) {
						expires += " (expired)"
					}
				}
				used := "never"
				if t.LastUsedAt != nil {
					used = shortTime(t.LastUsedAt)
				}
				rows = append(rows, []string{t.Name, t.Role, shortTime(&t.CreatedAt), age(now.Sub(t.CreatedAt)), expires, used, shortTime(t.RevokedAt)})
			}
			return table(cmd.OutOrStdout(), "NAME\tROLE\tCREATED\tAGE\tEXPIRES\tLAST USED\tREVOKED", rows)
		},
	}
	listFmt = addFormatFlag(list, "text", "text", "json")

	var revokeFmt *outputFormat
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an admin token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := revokeFmt.resolve(cmd)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.RevokeAdminToken(cmd.Context(), args[0])
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked admin token %q\n", args[0])
			return nil
		},
	}
	revokeFmt = addFormatFlag(revoke, "text", "text", "json")
	tokens.AddCommand(create, list, revoke)
	return admin
}

// parseTTL reads a lifetime: a Go duration (12h, 30m, 90s) or a number of
// days (90d); "" is 0, the server's default.
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil || days <= 0 || days > 100000 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration (e.g. 90d, 12h, 30m)", s)
		}
	}
	if d < time.Second {
		return 0, fmt.Errorf("%q is shorter than a second", s)
	}
	return d, nil
}

// age says how long ago something was, in its largest whole unit.
func age(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d >= time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d >= time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(max(0, int(d/time.Second))) + "s"
}
