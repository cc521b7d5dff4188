package main

import (
	"fmt"

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

	var role string
	var createFmt *outputFormat
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|auditor",
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
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.CreateAdminToken(cmd.Context(), args[0], role)
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
			fmt.Fprintf(cmd.ErrOrStderr(), "admin token %q (role %s) created; it is shown only this once\n", out.Name, out.Role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or auditor")
	createFmt = addFormatFlag(create, "text", "text", "json")

	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens (names and roles, never the tokens)",
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
			rows := make([][]string, 0, len(out.Tokens))
			for _, t := range out.Tokens {
				rows = append(rows, []string{t.Name, t.Role, shortTime(&t.CreatedAt), shortTime(t.RevokedAt)})
			}
			return table(cmd.OutOrStdout(), "NAME\tROLE\tCREATED\tREVOKED", rows)
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
