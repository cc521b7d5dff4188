package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/client"
)

// Environment variables the API clients read (SPEC section 1).
const (
	envAddr   = client.EnvAddr
	envCACert = client.EnvCACert
	envToken  = client.EnvToken
)

// clientFlags are the connection flags of every command that talks to a
// server; empty ones fall back to the environment (internal/client).
type clientFlags struct {
	addr       string
	cacert     string
	clientCert string
	clientKey  string
}

// addClientFlags adds --addr, --cacert, --client-cert and --client-key to c
// and its sub-commands.
func addClientFlags(c *cobra.Command) *clientFlags {
	f := &clientFlags{}
	f.register(c, true)
	return f
}

// register adds the flags to c alone, or (persistent) to c and its
// sub-commands.
func (f *clientFlags) register(c *cobra.Command, persistent bool) {
	fl := c.Flags()
	if persistent {
		fl = c.PersistentFlags()
	}
	fl.StringVar(&f.addr, "addr", "", "the server's `URL`, e.g. https://127.0.0.1:8443 (default $"+envAddr+")")
	fl.StringVar(&f.cacert, "cacert", "", "trust the CA certificate(s) in PEM `FILE` for the server (default $"+envCACert+")")
	fl.StringVar(&f.clientCert, "client-cert", "", "present the client certificate in PEM `FILE`, for servers with admin_client_ca (default $"+client.EnvClientCert+")")
	fl.StringVar(&f.clientKey, "client-key", "", "the private key of --client-cert, PEM `FILE` (default $"+client.EnvClientKey+")")
}

// newAPIClient builds a client from the flags and the environment. With
// needAdmin, MAYFLY_TOKEN must hold an admin token.
func newAPIClient(f *clientFlags, needAdmin bool) (*client.Client, error) {
	cfg := client.Config{Addr: f.addr, CACertFile: f.cacert, ClientCertFile: f.clientCert, ClientKeyFile: f.clientKey,
		AdminToken: needAdmin}
	c, err := client.New(cfg)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if needAdmin && strings.TrimSpace(os.Getenv(envToken)) == "" {
		// No admin token given: the session of mayfly auth login for this
		// server, if there is one.
		s, err := sessionFor(c.Addr())
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if s != "" {
			cfg.Token = s
			if c, err = client.New(cfg); err != nil {
				return nil, usageErr("%v", err)
			}
		}
	}
	if needAdmin {
		if err := c.RequireAdmin(); err != nil {
			return nil, usageErr("%v", err)
		}
	}
	return c, nil
}

// clientErr maps a client failure to an exit code: a refusal (4xx) is the
// command's negative answer (exit 1); 429, 5xx, an unreachable or
// untrusted server and anything else are environment problems (exit 2).
func clientErr(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	var ae *client.Error
	if errors.As(err, &ae) && ae.Refused() {
		return negative("%v", err)
	}
	if errors.Is(err, context.Canceled) {
		op, _, _ := strings.Cut(err.Error(), ":")
		return usageErr("%s: interrupted", op)
	}
	return usageErr("%v", err)
}

// callAPI is the body of a command that makes one admin API call: it
// resolves --format, calls, and prints the answer as JSON or with text.
func callAPI[T any](cmd *cobra.Command, f *outputFormat, cf *clientFlags, call func(context.Context, *client.Client) (T, error), text func(io.Writer, T) error) error {
	format, err := f.resolve(cmd)
	if err != nil {
		return err
	}
	c, err := newAPIClient(cf, true)
	if err != nil {
		return err
	}
	out, err := call(cmd.Context(), c)
	if err != nil {
		return clientErr(err)
	}
	if format == "json" {
		return printJSON(cmd.OutOrStdout(), out)
	}
	return text(cmd.OutOrStdout(), out)
}

// printJSON writes v indented, for --json.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		for i := range r {
			r[i] = client.OneLine(r[i], 200)
			if r[i] == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// shown is a line of a server's text as printed whole (a policy change
// names values that may hold runs of spaces): each control character (C0,
// DEL, C1: escape sequences, line breaks) and format character (bidi
// overrides reorder the rest of the line) becomes a space, so the terminal
// or CI log gets one line of plain text; nothing else changes.
func shown(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return ' '
		}
		return r
	}, s)
}

// shortTime renders a time from the API compactly; nil or zero is "".
func shortTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
