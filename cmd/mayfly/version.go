package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/version"
)

func newVersionCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the mayfly version, the revision it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := version.Get()
			switch format {
			case "text":
				fmt.Fprintln(cmd.OutOrStdout(), v.String())
				return nil
			case "json":
				return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
			}
			return usageErr("version: --format must be text or json, not %q", format)
		},
	}
	c.Flags().StringVar(&format, "format", "text", "output format: text or json")
	return c
}
