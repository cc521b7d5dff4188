package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/server"
)

func newAdminCmd() *cobra.Command {
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Manage admin tokens and signed-in sessions (admin role)",
	}
	cf := addClientFlags(admin)
	tokens := &cobra.Command{Use: "token", Short: "Create, list and revoke admin tokens"}
	admin.AddCommand(tokens)

	var role, ttlFlag string
	var offline server.OfflineOptions
	var createFmt *outputFormat
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|auditor [--ttl 90d] [--data-dir DIR]",
		Short: "Create an admin token; it is printed once, keep it safe",
		Long: "Create an admin token; it is printed once, keep it safe.\n\n" +
			"With --data-dir the token is made straight in that data directory, without a server or an admin\n" +
			"token: the way back in when every admin token has expired or is lost. Stop the server first\n" +
			"(embedded store); the creation is audited as by \"local\".",
		Args: cobra.ExactArgs(1),
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
			var out *apitype.AdminTokenCreated
			if offline.DataDir != "" {
				tok, expires, err := server.CreateAdminTokenOffline(cmd.Context(), offline, args[0], role, ttl)
				if err != nil {
					return usageErr("admin token create: %v", err)
				}
				out = &apitype.AdminTokenCreated{Name: args[0], Role: role, Token: tok, ExpiresAt: expires}
			} else {
				c, err := newAPIClient(cf, true)
				if err != nil {
					return err
				}
				if out, err = c.CreateAdminToken(cmd.Context(), args[0], role, ttl); err != nil {
					return clientErr(err)
				}
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
			fmt.Fprintln(cmd.OutOrStdout(), client.OneLine(out.Token, 256))
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %q (role %s) created, expires %s; it is shown only this once\n", out.Name, client.OneLine(out.Role, 32), shortTime(&out.ExpiresAt))
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or auditor")
	create.Flags().StringVar(&ttlFlag, "ttl", "", "how long the token works, e.g. 90d, 12h, 30m (default: the server's, 90d; at most its admin_token_max_ttl)")
	create.Flags().StringVar(&offline.DataDir, "data-dir", "", "create in this data directory directly (no server, no admin token; stop the server first)")
	create.Flags().StringVar(&offline.Postgres, "postgres", "", "with --data-dir: the PostgreSQL DSN the data dir uses (or MAYFLY_POSTGRES)")
	createFmt = addFormatFlag(create, "text", "text", "json")

	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens: name, role, age, expiry, last use (never the tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.AdminTokenList, error) {
				return c.ListAdminTokens(ctx)
			}
			return callAPI(cmd, listFmt, cf, call, func(w io.Writer, out *apitype.AdminTokenList) error {
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
				return table(w, "NAME\tROLE\tCREATED\tAGE\tEXPIRES\tLAST USED\tREVOKED", rows)
			})
		},
	}
	listFmt = addFormatFlag(list, "text", "text", "json")

	var revokeFmt *outputFormat
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an admin token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.AdminTokenRevokeResponse, error) {
				return c.RevokeAdminToken(ctx, args[0])
			}
			return callAPI(cmd, revokeFmt, cf, call, func(w io.Writer, _ *apitype.AdminTokenRevokeResponse) error {
				_, err := fmt.Fprintf(w, "revoked admin token %q\n", args[0])
				return err
			})
		},
	}
	revokeFmt = addFormatFlag(revoke, "text", "text", "json")
	tokens.AddCommand(create, list, revoke)
	admin.AddCommand(newSessionCmd(cf))
	return admin
}

// newSessionCmd lists and revokes the sessions of humans signed in with
// the identity provider (admin_oidc).
func newSessionCmd(cf *clientFlags) *cobra.Command {
	sessions := &cobra.Command{Use: "session", Short: "List and revoke signed-in sessions (admin_oidc)"}
	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List sessions not yet expired: id, who, role, how, since, until, last use (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.SessionList, error) { return c.ListSessions(ctx) }
			return callAPI(cmd, listFmt, cf, call, func(w io.Writer, out *apitype.SessionList) error {
				rows := make([][]string, 0, len(out.Sessions))
				for _, s := range out.Sessions {
					used := "never"
					if s.LastUsedAt != nil {
						used = shortTime(s.LastUsedAt)
					}
					rows = append(rows, []string{s.ID, s.Name, s.Role, s.Via, shortTime(&s.CreatedAt), shortTime(&s.ExpiresAt), used, shortTime(s.RevokedAt)})
				}
				return table(w, "ID\tNAME\tROLE\tVIA\tSIGNED IN\tEXPIRES\tLAST USED\tREVOKED", rows)
			})
		},
	}
	listFmt = addFormatFlag(list, "text", "text", "json")
	var revokeFmt *outputFormat
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a session (its holder is signed out at once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.SessionRevokeResponse, error) {
				return c.RevokeSession(ctx, args[0])
			}
			return callAPI(cmd, revokeFmt, cf, call, func(w io.Writer, _ *apitype.SessionRevokeResponse) error {
				_, err := fmt.Fprintf(w, "revoked session %s\n", args[0])
				return err
			})
		},
	}
	revokeFmt = addFormatFlag(revoke, "text", "text", "json")
	sessions.AddCommand(list, revoke)
	return sessions
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
