package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

type adminToken struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	Token     string `json:"token,omitempty"`
	CreatedAt string `json:"created_at,omitempty"`
	RevokedAt string `json:"revoked_at,omitempty"`
}

func newAdminCmd() *cobra.Command {
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Manage admin tokens (admin role)",
	}
	cf := addClientFlags(admin)
	tokens := &cobra.Command{Use: "token", Short: "Create, list and revoke admin tokens"}
	admin.AddCommand(tokens)

	var role string
	var asJSON bool
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|auditor",
		Short: "Create an admin token; it is printed once, keep it safe",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case "admin", "operator", "auditor":
			case "":
				return usageErr("admin token create: --role is required (admin, operator or auditor)")
			default:
				return usageErr("admin token create: unknown role %q (admin, operator or auditor)", role)
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out adminToken
			if err := c.sendJSON(cmd.Context(), "admin token create", http.MethodPost, "/v1/admin/tokens",
				map[string]string{"name": args[0], "role": role}, &out); err != nil {
				return err
			}
			if out.Name == "" {
				out.Name = args[0]
			}
			if out.Role == "" {
				out.Role = role
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %q (role %s) created; it is shown only this once\n", out.Name, out.Role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or auditor")
	create.Flags().BoolVar(&asJSON, "json", false, "print {\"name\",\"role\",\"token\"} as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (names and roles, never the tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Tokens []adminToken `json:"tokens"`
			}
			if err := c.getJSON(cmd.Context(), "admin token list", "/v1/admin/tokens", &out); err != nil {
				return err
			}
			if listJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			rows := make([][]string, 0, len(out.Tokens))
			for _, t := range out.Tokens {
				rows = append(rows, []string{t.Name, t.Role, shortTime(t.CreatedAt), shortTime(t.RevokedAt)})
			}
			return table(cmd.OutOrStdout(), "NAME\tROLE\tCREATED\tREVOKED", rows)
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an admin token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			if err := c.sendJSON(cmd.Context(), "admin token revoke", http.MethodDelete, "/v1/admin/tokens/"+pathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked admin token %q\n", args[0])
			return nil
		},
	}
	tokens.AddCommand(create, list, revoke)
	return admin
}
