package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// outputFormat is the one machine-output flag of every command that prints
// a result: --format text|json (and any formats of the command's own, such
// as sarif or env), with --json kept as an alias of --format json.
type outputFormat struct {
	value   string
	json    bool
	allowed []string
}

// addFormatFlag adds --format (default def, one of allowed) and --json to c.
func addFormatFlag(c *cobra.Command, def string, allowed ...string) *outputFormat {
	o := &outputFormat{allowed: allowed}
	c.Flags().StringVar(&o.value, "format", def, "print in `FORMAT`: "+strings.Join(allowed, ", "))
	c.Flags().BoolVar(&o.json, "json", false, "the same as --format json")
	return o
}

// resolve returns the format asked for, or a usage error for an unknown one
// or for --json together with another --format.
func (o *outputFormat) resolve(c *cobra.Command) (string, error) {
	f := o.value
	if o.json {
		if c.Flags().Changed("format") && f != "json" {
			return "", usageErr("%s", withCommand(c, "--json and --format "+f+" contradict each other"))
		}
		f = "json"
	}
	if !slices.Contains(o.allowed, f) {
		return "", usageErr("%s", withCommand(c, "unknown --format "+quote(f)+" (want "+strings.Join(o.allowed, ", ")+")"))
	}
	return f, nil
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
