package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

// maxSecretSize bounds a secret value read by `secret put`.
const maxSecretSize = 1 << 20

type secretMeta struct {
	Name       string `json:"name"`
	Version    int    `json:"version"`
	KeyVersion int    `json:"key_version,omitempty"`
	CreatedAt  string `json:"created_at,omitempty"`
}

func newSecretCmd() *cobra.Command {
	sec := &cobra.Command{
		Use:   "secret",
		Short: "Store upstream credentials (values go in, never come out)",
	}
	cf := addClientFlags(sec)

	var valueFile, refusedValue string
	var keepNewline bool
	put := &cobra.Command{
		Use:   "put NAME [--value-file F]",
		Short: "Store a new version of a secret, read from --value-file or standard input",
		Long: "Store a new version of a secret. The value is read from --value-file, or from standard input\n" +
			"(e.g. `mayfly secret put gh-token < token.txt`). One trailing newline is dropped unless\n" +
			"--keep-newline. A value is never taken from a flag: it would land in shell history.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("value") {
				return usageErr("secret put: refusing --value: a secret on the command line lands in shell history and process lists; use --value-file F or standard input")
			}
			value, err := readSecretValue(cmd, valueFile, keepNewline)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out secretMeta
			err = c.sendJSON(cmd.Context(), "secret put", http.MethodPut, "/v1/secrets/"+pathEscape(args[0]),
				map[string]string{"value": string(value)}, &out)
			clear(value)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored secret %q version %d\n", args[0], out.Version)
			return nil
		},
	}
	put.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (\"-\" for standard input)")
	put.Flags().BoolVar(&keepNewline, "keep-newline", false, "keep a trailing newline of the value")
	put.Flags().StringVar(&refusedValue, "value", "", "refused: use --value-file or standard input")
	_ = put.Flags().MarkHidden("value")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List stored secrets (metadata only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Secrets []secretMeta `json:"secrets"`
			}
			if err := c.getJSON(cmd.Context(), "secret list", "/v1/secrets", &out); err != nil {
				return err
			}
			if listJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			rows := make([][]string, 0, len(out.Secrets))
			for _, s := range out.Secrets {
				rows = append(rows, []string{s.Name, fmt.Sprint(s.Version), fmt.Sprint(s.KeyVersion), shortTime(s.CreatedAt)})
			}
			return table(cmd.OutOrStdout(), "NAME\tVERSION\tKEY_VERSION\tCREATED", rows)
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	var showJSON bool
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a secret's metadata (never its value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var s secretMeta
			if err := c.getJSON(cmd.Context(), "secret show", "/v1/secrets/"+pathEscape(args[0]), &s); err != nil {
				return err
			}
			if showJSON {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "name:        %s\nversion:     %d\nkey_version: %d\ncreated_at:  %s\n", s.Name, s.Version, s.KeyVersion, s.CreatedAt)
			return nil
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")

	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a secret (every version's value is destroyed)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			if err := c.sendJSON(cmd.Context(), "secret rm", http.MethodDelete, "/v1/secrets/"+pathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted secret %q\n", args[0])
			return nil
		},
	}

	rotate := &cobra.Command{
		Use:   "rotate-master-key",
		Short: "Start a new master-key version and re-wrap stored secrets with it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Version int `json:"version"`
			}
			if err := c.sendJSON(cmd.Context(), "secret rotate-master-key", http.MethodPost, "/v1/sys/rotate-master-key", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "master key is now version %d\n", out.Version)
			return nil
		},
	}
	sec.AddCommand(put, list, show, rm, rotate)
	return sec
}

// readSecretValue reads the value from file ("" or "-": standard input),
// bounded, dropping one trailing newline unless keep.
func readSecretValue(cmd *cobra.Command, file string, keep bool) ([]byte, error) {
	var r io.Reader
	if file == "" || file == "-" {
		in := cmd.InOrStdin()
		if f, ok := in.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "reading the secret value from standard input; end with Ctrl-D")
			}
		}
		r = in
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, usageErr("secret put: %v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretSize+1))
	if err != nil {
		return nil, usageErr("secret put: reading the value: %v", err)
	}
	if len(b) > maxSecretSize {
		return nil, usageErr("secret put: value larger than %d bytes", maxSecretSize)
	}
	if !keep {
		if bytes.HasSuffix(b, []byte("\r\n")) {
			b = b[:len(b)-2]
		} else if bytes.HasSuffix(b, []byte("\n")) {
			b = b[:len(b)-1]
		}
	}
	if len(b) == 0 {
		return nil, usageErr("secret put: the value is empty")
	}
	return b, nil
}
