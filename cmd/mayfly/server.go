package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/server"
)

func newInitCmd() *cobra.Command {
	var o server.InitOptions
	var join bool
	var j server.JoinOptions
	var initFmt *outputFormat
	c := &cobra.Command{
		Use:   "init --data-dir DIR [--join --postgres DSN]",
		Short: "Create a data directory: master key, TLS CA and certificate, audit key, first admin token",
		Long: `Create a data directory: master key, TLS CA and certificate, audit key, first admin token.

With --join, make the data directory of one more node of a cluster whose
PostgreSQL database another node initialised: the cluster's master key
(--master-key-file or MAYFLY_MASTER_KEY) and audit key (--audit-key-file or
MAYFLY_AUDIT_KEY) must open that database, or nothing is written; this node
gets a server certificate of its own signed by the cluster's CA (--ca-cert,
--ca-key). No admin token is made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := initFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if o.DataDir == "" {
				return usageErr("init: --data-dir is required")
			}
			pgFrom := "--postgres"
			if o.Postgres == "" {
				o.Postgres, pgFrom = os.Getenv("MAYFLY_POSTGRES"), "MAYFLY_POSTGRES"
			}
			if join {
				j.DataDir, j.Postgres, j.SANs = o.DataDir, o.Postgres, o.SANs
				res, err := server.Join(cmd.Context(), j)
				if errors.Is(err, server.ErrInitialised) {
					return negative("init --join: %v: nothing changed", err)
				}
				if errors.Is(err, server.ErrKeyMismatch) {
					return negative("init --join: %v: nothing written", err)
				}
				if err != nil {
					return usageErr("init --join: %v", err)
				}
				if format == "json" {
					return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Joined: %s is a node of the cluster on this database. Start it with mayfly server --data-dir %s --postgres DSN.\n", o.DataDir, o.DataDir)
				return nil
			}
			for _, f := range []string{"master-key-file", "audit-key-file", "ca-cert", "ca-key"} {
				if cmd.Flags().Changed(f) {
					return usageErr("init: --%s is for --join", f)
				}
			}
			res, err := server.Init(cmd.Context(), o)
			if errors.Is(err, server.ErrInitialised) {
				return negative("init: %v: nothing changed", err)
			}
			if err != nil {
				return usageErr("init: %v", err)
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				return json.NewEncoder(out).Encode(res)
			}
			fmt.Fprintf(out, "Initialised %s.\n", o.DataDir)
			if o.Postgres != "" {
				// Say it: a MAYFLY_POSTGRES left in the environment makes
				// init use PostgreSQL without a flag in sight.
				fmt.Fprintf(out, "Its store is the PostgreSQL database of %s: start the server with the same DSN (--postgres or MAYFLY_POSTGRES).\n", pgFrom)
			}
			fmt.Fprintf(out, "\nFirst admin token (shown once, keep it safe):\n\n  %s\n\n", res.AdminToken)
			if !res.AdminExpires.IsZero() {
				fmt.Fprintf(out, "It expires %s: before then, make named tokens (mayfly admin token create NAME --role ROLE)\nand revoke this one (mayfly admin token revoke %s).\n\n", res.AdminExpires.UTC().Format("2006-01-02 15:04:05Z"), res.AdminName)
			}
			// The line is pasted into another shell, maybe in another
			// directory: an absolute path, one sh word.
			ca := res.CAFile
			if abs, err := filepath.Abs(ca); err == nil {
				ca = abs
			}
			fmt.Fprintf(out, "Clients trust the CA in %s:\n\n  export MAYFLY_ADDR=https://127.0.0.1:8443 MAYFLY_CACERT=%s\n", ca, shWord(ca))
			return nil
		},
	}
	c.Flags().StringVar(&o.DataDir, "data-dir", "", "data directory to create")
	c.Flags().StringSliceVar(&o.SANs, "tls-san", nil, "extra DNS names or IPs for the server certificate")
	// The environment is read when the command runs, never as the flag's
	// default: --help would print the DSN, password and all.
	c.Flags().StringVar(&o.Postgres, "postgres", "", "PostgreSQL DSN instead of embedded SQLite (or MAYFLY_POSTGRES)")
	initFmt = addFormatFlag(c, "text", "text", "json")
	c.Flags().BoolVar(&join, "join", false, "add a node to the cluster on --postgres (keys from files or environment)")
	c.Flags().StringVar(&j.MasterKeyFile, "master-key-file", "", "with --join: the cluster's master.key (default: MAYFLY_MASTER_KEY)")
	c.Flags().StringVar(&j.AuditKeyFile, "audit-key-file", "", "with --join: the cluster's audit.key (default: MAYFLY_AUDIT_KEY)")
	c.Flags().StringVar(&j.CACert, "ca-cert", "", "with --join: the cluster's CA certificate (ca.pem)")
	c.Flags().StringVar(&j.CAKey, "ca-key", "", "with --join: the cluster's CA key (ca-key.pem), to sign this node's certificate")
	return c
}

func newServerCmd() *cobra.Command {
	var cfg server.Config
	var configFile string
	c := &cobra.Command{
		Use:   "server --data-dir DIR",
		Short: "Run a mayfly node: token exchange, gateway, admin API, audit log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile != "" {
				fileCfg, err := server.LoadConfigFile(configFile)
				if err != nil {
					return usageErr("%v", err)
				}
				cfg = mergeConfig(fileCfg, cfg, cmd)
			}
			if cfg.DataDir == "" {
				return usageErr("server: --data-dir is required")
			}
			if cfg.Listen == "" {
				cfg.Listen = server.DefaultListen
			}
			if err := server.CheckListen(cfg.Listen, cfg.InsecureHTTP); err != nil {
				return usageErr("server: %v", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			logger := server.NewLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
			s, err := server.New(ctx, cfg, logger)
			if err != nil {
				return usageErr("server: %v", err)
			}
			defer s.Close(context.Background())
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						if err := s.ReloadPolicy(ctx); err != nil {
							logger.Error("policy reload refused; the policy in force is unchanged", "err", err)
						}
						if err := s.ReloadTLS(); err != nil {
							logger.Error("TLS certificate reload failed; the certificate in use is unchanged", "err", err)
						}
					}
				}
			}()
			if err := s.Serve(ctx); err != nil {
				return usageErr("server: %v", err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file (flags win over it)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "data directory made by mayfly init")
	f.StringVar(&cfg.Listen, "listen", server.DefaultListen, "address to listen on")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", server.DefaultMetricsListen, "address of the unauthenticated /metrics listener (plain HTTP on loopback), or off")
	f.StringSliceVar(&cfg.Policy, "policy", nil, "policy file or folder, applied at start and on SIGHUP")
	f.StringVar(&cfg.Postgres, "postgres", "", "PostgreSQL DSN (or MAYFLY_POSTGRES); default embedded SQLite")
	f.IntVar(&cfg.PostgresMaxConns, "postgres-max-conns", 0, "PostgreSQL connections this node may hold, audit writer, lease listener and notifier included (default 10)")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "plain HTTP (loopback addresses only)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (default: the data dir's)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key")
	f.StringSliceVar(&cfg.AdminCIDRs, "admin-cidr", nil, "networks that may reach the control plane (default loopback)")
	f.StringSliceVar(&cfg.TrustedProxies, "trusted-proxy", nil, "proxies whose X-Forwarded-For is believed")
	f.StringVar(&cfg.AdminClientCA, "admin-client-ca", "", "require admin clients to present a certificate from this CA (mTLS)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "scheme://host clients use, when behind a proxy")
	f.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.AddrFile, "addr-file", "", "write the URL served once ready (for scripts and tests)")
	return c
}

// mergeConfig lays flags the user set over the file's values.
func mergeConfig(file, flags server.Config, cmd *cobra.Command) server.Config {
	out := file
	set := func(name string) bool { return cmd.Flags().Changed(name) }
	if set("data-dir") || out.DataDir == "" {
		out.DataDir = flags.DataDir
	}
	if set("listen") || out.Listen == "" {
		out.Listen = flags.Listen
	}
	if set("metrics-listen") || out.MetricsListen == "" {
		out.MetricsListen = flags.MetricsListen
	}
	if set("policy") {
		out.Policy = flags.Policy
	}
	if set("postgres") {
		out.Postgres = flags.Postgres
	}
	if set("postgres-max-conns") {
		out.PostgresMaxConns = flags.PostgresMaxConns
	}
	if set("insecure-http") {
		out.InsecureHTTP = flags.InsecureHTTP
	}
	if set("tls-cert") {
		out.TLSCert = flags.TLSCert
	}
	if set("tls-key") {
		out.TLSKey = flags.TLSKey
	}
	if set("admin-cidr") {
		out.AdminCIDRs = flags.AdminCIDRs
	}
	if set("trusted-proxy") {
		out.TrustedProxies = flags.TrustedProxies
	}
	if set("admin-client-ca") {
		out.AdminClientCA = flags.AdminClientCA
	}
	if set("public-url") {
		out.PublicURL = flags.PublicURL
	}
	if set("log-format") || out.LogFormat == "" {
		out.LogFormat = flags.LogFormat
	}
	if set("log-level") || out.LogLevel == "" {
		out.LogLevel = flags.LogLevel
	}
	out.AddrFile = flags.AddrFile
	return out
}

func newTLSCmd() *cobra.Command {
	tlsCmd := &cobra.Command{
		Use:   "tls",
		Short: "Manage the server's TLS certificate",
	}
	var dataDir, caKey string
	var sans []string
	var renewFmt *outputFormat
	renew := &cobra.Command{
		Use:   "renew --data-dir DIR",
		Short: "Issue a new server certificate (one year) from the data dir's CA; a running server loads it on SIGHUP",
		Long: "Issue a new server certificate from the data dir's CA, for the names of the current one plus\n" +
			"--tls-san, valid for one year, replacing server.pem and server-key.pem. A running server serves\n" +
			"it after SIGHUP (systemctl reload mayfly) without a restart; a server also renews it by itself\n" +
			"at start when less than 30 days are left, if the data dir has the CA key (ca-key.pem). A node\n" +
			"added with init --join has none: give the cluster's with --ca-key. Clients keep trusting ca.pem.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := renewFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if dataDir == "" {
				return usageErr("tls renew: --data-dir is required")
			}
			res, err := server.RenewCertificate(dataDir, caKey, sans, time.Now())
			if err != nil {
				return usageErr("tls renew: %v", err)
			}
			if format == "json" { // {"not_after","names"}
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "renewed the server certificate in %s: valid until %s for %s\n"+
				"a running server serves it after SIGHUP (kill -HUP PID, or systemctl reload mayfly)\n",
				dataDir, res.NotAfter.Format(time.RFC3339), strings.Join(res.Names, ", "))
			return nil
		},
	}
	renew.Flags().StringVar(&dataDir, "data-dir", "", "data directory made by mayfly init")
	renew.Flags().StringSliceVar(&sans, "tls-san", nil, "extra DNS names or IPs for the certificate")
	renew.Flags().StringVar(&caKey, "ca-key", "", "the CA's key (default: the data dir's ca-key.pem; a node added with init --join needs the cluster's)")
	renewFmt = addFormatFlag(renew, "text", "text", "json")
	tlsCmd.AddCommand(renew)
	return tlsCmd
}

// shWord returns v as one sh word: as it is when sh gives none of its
// characters a meaning, else in single quotes.
func shWord(v string) string {
	if v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}
