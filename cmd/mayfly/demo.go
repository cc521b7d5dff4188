package main

import (
	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var keep string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole story on this machine: exchange, gateway, leak, revocation, verified audit log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := demo.Run(cmd.Context(), cmd.OutOrStdout(), keep); err != nil {
				return negative("%v", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&keep, "keep", "", "keep the demo's data directory in this folder instead of a temporary one")
	return c
}
