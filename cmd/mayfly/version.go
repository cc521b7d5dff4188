package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/version"
)

func newVersionCmd() *cobra.Command {
	var outFmt *outputFormat
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the mayfly version, the revision it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outFmt.resolve(cmd)
			if err != nil {
				return err
			}
			v := version.Get()
			if format == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(v)
			}
			fmt.Fprintln(cmd.OutOrStdout(), v.String())
			return nil
		},
	}
	outFmt = addFormatFlag(c, "text", "text", "json")
	return c
}
