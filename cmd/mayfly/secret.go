package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/server"
)

// maxSecretSize bounds a secret value read by `secret put`.
const maxSecretSize = 1 << 20

func newSecretCmd() *cobra.Command {
	sec := &cobra.Command{
		Use:   "secret",
		Short: "Store upstream credentials (values go in, never come out)",
	}
	cf := addClientFlags(sec)

	var valueFile, refusedValue string
	var keepNewline bool
	var putFmt *outputFormat
	var offline server.OfflineOptions
	var rf rotateFlags
	put := &cobra.Command{
		Use:   "put NAME [--value-file F]",
		Short: "Store a new version of a secret, read from --value-file or standard input",
		Long: "Store a new version of a secret. The value is read from --value-file, or from standard input\n" +
			"(e.g. `mayfly secret put gh-token < token.txt`). One trailing newline is dropped unless\n" +
			"--keep-newline. A value is never taken from a flag: it would land in shell history.\n\n" +
			"With --data-dir the secret goes straight into that data directory, without a server: the way\n" +
			"to store the secrets a policy names before the server's first start (refused while a server\n" +
			"runs on an embedded data dir; use the API then).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := putFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("value") {
				return usageErr("secret put: refusing --value: a secret on the command line lands in shell history and process lists; use --value-file F or standard input")
			}
			rot, remove, err := rf.settings(cmd)
			if err != nil {
				return err
			}
			if offline.DataDir != "" && (rot != nil || remove) {
				return usageErr("secret put: rotation settings need the server (the API): put the secret with --data-dir first, then again through the server with --rotate-every")
			}
			value, err := readSecretValue(cmd, valueFile, keepNewline)
			if err != nil {
				return err
			}
			if offline.DataDir != "" {
				v, err := server.PutSecretOffline(cmd.Context(), offline, args[0], value)
				clear(value)
				if err != nil {
					return usageErr("secret put: %v", err)
				}
				if format == "json" {
					return printJSON(cmd.OutOrStdout(), map[string]any{"name": args[0], "version": v})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stored secret %q version %d in %s\n", args[0], v, offline.DataDir)
				return nil
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.PutSecretRotating(cmd.Context(), args[0], value, rot, remove)
			clear(value)
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stored secret %q version %d\n", args[0], out.Version)
			return nil
		},
	}
	put.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (\"-\" for standard input)")
	put.Flags().StringVar(&offline.DataDir, "data-dir", "", "store into this data directory directly (no server; before the first start)")
	put.Flags().StringVar(&offline.Postgres, "postgres", "", "with --data-dir: the PostgreSQL DSN the data dir uses (or MAYFLY_POSTGRES)")
	put.Flags().BoolVar(&keepNewline, "keep-newline", false, "keep a trailing newline of the value")
	put.Flags().StringVar(&refusedValue, "value", "", "refused: use --value-file or standard input")
	rf.add(put)
	_ = put.Flags().MarkHidden("value")
	putFmt = addFormatFlag(put, "text", "text", "json")

	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List stored secrets (metadata only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.SecretList, error) { return c.ListSecrets(ctx) }
			return callAPI(cmd, listFmt, cf, call, func(w io.Writer, out *apitype.SecretList) error {
				rows := make([][]string, 0, len(out.Secrets))
				for _, s := range out.Secrets {
					rows = append(rows, []string{s.Name, fmt.Sprint(s.Version), fmt.Sprint(s.KeyVersion), shortTime(&s.CreatedAt)})
				}
				return table(w, "NAME\tVERSION\tKEY_VERSION\tCREATED", rows)
			})
		},
	}
	listFmt = addFormatFlag(list, "text", "text", "json")

	var showFmt *outputFormat
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a secret's metadata (never its value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.SecretMeta, error) {
				return c.SecretMeta(ctx, args[0])
			}
			return callAPI(cmd, showFmt, cf, call, func(w io.Writer, s *apitype.SecretMeta) error {
				fmt.Fprintf(w, "name:        %s\nversion:     %d\nkey_version: %d\ncreated_at:  %s\n", client.OneLine(s.Name, 200), s.Version, s.KeyVersion, shortTime(&s.CreatedAt))
				printRotation(w, s.Rotation)
				return nil
			})
		},
	}
	showFmt = addFormatFlag(show, "text", "text", "json")

	var rmFmt *outputFormat
	rm := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a secret (every version's value is destroyed)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.SecretDeleteResponse, error) {
				return c.DeleteSecret(ctx, args[0])
			}
			return callAPI(cmd, rmFmt, cf, call, func(w io.Writer, _ *apitype.SecretDeleteResponse) error {
				_, err := fmt.Fprintf(w, "deleted secret %q\n", args[0])
				return err
			})
		},
	}

	rmFmt = addFormatFlag(rm, "text", "text", "json")

	var rotateFmt *outputFormat
	rotate := &cobra.Command{
		Use:   "rotate-master-key",
		Short: "Start a new master-key version and re-wrap stored secrets with it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			call := func(ctx context.Context, c *client.Client) (*apitype.RotateMasterKeyResponse, error) {
				return c.RotateMasterKey(ctx)
			}
			return callAPI(cmd, rotateFmt, cf, call, func(w io.Writer, out *apitype.RotateMasterKeyResponse) error {
				_, err := fmt.Fprintf(w, "master key is now version %d\n", out.Version)
				return err
			})
		},
	}
	rotateFmt = addFormatFlag(rotate, "text", "text", "json")

	var rotFmt *outputFormat
	rotNow := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Rotate a secret now with its rotator (the previous value stays usable for its grace period)",
		Long: "Rotate a secret now: its rotator (set with `secret put --rotate-every … --rotate-command NAME`\n" +
			"or `--rotate-postgres-role`) makes a new value, which becomes the next version; the previous\n" +
			"version stays usable for the grace period. Exit 1 when the rotation fails (the current value\n" +
			"stays in use; `secret show` says why).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := rotFmt.resolve(cmd)
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.RotateSecret(cmd.Context(), args[0])
			var ae *client.Error
			if errors.As(err, &ae) && ae.Code == "rotation_failed" {
				return negative("%v", err)
			}
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rotated secret %q to version %d; the previous version stays usable until %s; next rotation %s\n",
				out.Name, out.Version, shortTime(&out.GraceUntil), shortTime(&out.NextAt))
			return nil
		},
	}
	rotFmt = addFormatFlag(rotNow, "text", "text", "json")
	sec.AddCommand(put, list, show, rm, rotate, rotNow)
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

// rotateFlags are `secret put`'s rotation settings.
type rotateFlags struct {
	every, grace, command, role, adminDSN string
	off                                   bool
}

func (f *rotateFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.every, "rotate-every", "", "rotate the secret this often (e.g. 24h); with --rotate-command or --rotate-postgres-role")
	c.Flags().StringVar(&f.grace, "rotate-grace", "", "how long the replaced value stays usable after a rotation (default 5m)")
	c.Flags().StringVar(&f.command, "rotate-command", "", "rotate with this rotator of the server's config file (rotators: {NAME: [program, args…]})")
	c.Flags().StringVar(&f.role, "rotate-postgres-role", "", "rotate this PostgreSQL role's password (ALTER ROLE); the value is its password or a postgres:// URL")
	c.Flags().StringVar(&f.adminDSN, "rotate-admin-dsn-secret", "", "with --rotate-postgres-role: the stored secret holding the DSN to run ALTER ROLE with (default: this secret; another secret needs the admin role)")
	c.Flags().BoolVar(&f.off, "no-rotate", false, "stop rotating this secret")
}

// settings returns the rotation to send: nil and false leave the
// secret's rotation as it is. The server validates the values.
func (f *rotateFlags) settings(cmd *cobra.Command) (*apitype.SecretRotate, bool, error) {
	set := f.every != "" || f.grace != "" || f.command != "" || f.role != "" || f.adminDSN != ""
	switch {
	case f.off && set:
		return nil, false, usageErr("secret put: --no-rotate with rotation settings")
	case f.off:
		return nil, true, nil
	case !set:
		return nil, false, nil
	case f.every == "":
		return nil, false, usageErr("secret put: --rotate-every is required with rotation settings")
	case (f.command == "") == (f.role == ""):
		return nil, false, usageErr("secret put: name one rotator: --rotate-command NAME or --rotate-postgres-role ROLE")
	case f.adminDSN != "" && f.role == "":
		return nil, false, usageErr("secret put: --rotate-admin-dsn-secret goes with --rotate-postgres-role")
	}
	r := &apitype.SecretRotate{Every: f.every, Grace: f.grace}
	if f.command != "" {
		r.Via.Command = f.command
	} else {
		admin := f.adminDSN
		if admin == "" {
			admin = cmd.Flags().Arg(0)
		}
		r.Via.PostgresPassword = &apitype.RotatePostgres{AdminDSNSecret: admin, Role: f.role}
	}
	return r, false, nil
}

// printRotation writes a secret's rotation state for `secret show`.
func printRotation(w io.Writer, r *apitype.SecretRotation) {
	if r == nil {
		fmt.Fprintln(w, "rotation:    none")
		return
	}
	// Every string is the server's: one line of text each on the terminal.
	via := "command " + r.Via.Command
	if p := r.Via.PostgresPassword; p != nil {
		via = fmt.Sprintf("postgres_password role %q (admin DSN in secret %s)", p.Role, p.AdminDSNSecret)
	}
	fmt.Fprintf(w, "rotation:    every %s, grace %s, via %s\n", client.OneLine(r.Every, 32), client.OneLine(r.Grace, 32), client.OneLine(via, 300))
	last := "never"
	if r.LastAt != nil {
		last = fmt.Sprintf("%s (version %d)", shortTime(r.LastAt), r.LastVersion)
	}
	fmt.Fprintf(w, "last:        %s\nnext:        %s\nfailures:    %d\n", last, shortTime(&r.NextAt), r.Failures)
	if r.LastError != "" {
		fmt.Fprintf(w, "last_error:  %s (%s)\n", client.OneLine(r.LastError, 600), shortTime(r.LastErrorAt))
	}
}
