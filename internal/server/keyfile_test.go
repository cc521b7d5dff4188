//go:build unix

package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/alert"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// A private key another local user can read is as good as leaked: as ssh
// does, mayfly refuses to use one, naming the file and the chmod to run,
// wherever it reads one (server start, offline commands, certificate
// renewal, init --join). The file is put back to 0600 after each case.
func TestKeyFileReadableByOthersIsRefused(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	d := datadir.Dir(dir)
	quiet := NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error")
	start := func() error {
		s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off"}, quiet)
		if err == nil {
			s.Close(ctx)
		}
		return err
	}
	startOwnTLS := func() error {
		s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off", TLSCert: d.ServerCert(), TLSKey: d.ServerKey()}, quiet)
		if err == nil {
			s.Close(ctx)
		}
		return err
	}
	offline := func() error {
		_, err := PutSecretOffline(ctx, OfflineOptions{DataDir: dir}, "k", []byte("v"))
		return err
	}
	renew := func() error {
		_, err := RenewCertificate(dir, "", nil, time.Now())
		return err
	}
	join := func(master, audit, caKey string) func() error {
		return func() error {
			_, err := Join(ctx, JoinOptions{DataDir: filepath.Join(t.TempDir(), "joined"), Postgres: "postgres://127.0.0.1:1/none",
				MasterKeyFile: master, AuditKeyFile: audit, CACert: d.CACert(), CAKey: caKey})
			return err
		}
	}
	for _, tc := range []struct {
		name, file string
		mode       os.FileMode
		run        func() error
	}{
		{"master key, server", d.MasterKey(), 0o640, start},
		{"audit key, server", d.AuditKey(), 0o640, start},
		{"audit key, world", d.AuditKey(), 0o604, start},
		{"server TLS key", d.ServerKey(), 0o640, start},
		{"TLS key given by config", d.ServerKey(), 0o644, startOwnTLS},
		{"audit key, offline", d.AuditKey(), 0o644, offline},
		{"CA key, renew", d.CAKey(), 0o640, renew},
		{"audit key, join", d.AuditKey(), 0o640, join(d.MasterKey(), d.AuditKey(), d.CAKey())},
		{"CA key, join", d.CAKey(), 0o640, join(d.MasterKey(), d.AuditKey(), d.CAKey())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Chmod(tc.file, tc.mode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(tc.file, 0o600)
			err := tc.run()
			if err == nil {
				t.Fatalf("%s with mode %04o was used", filepath.Base(tc.file), tc.mode)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.file) || !strings.Contains(msg, "chmod 600") {
				t.Fatalf("the refusal does not name the file and the chmod to run: %v", err)
			}
		})
	}
	// Each back at 0600, the same calls pass those checks.
	if err := start(); err != nil {
		t.Fatalf("start with every key 0600: %v", err)
	}
	if err := renew(); err != nil {
		t.Fatalf("renew with the CA key 0600: %v", err)
	}
}

// The secrets the config names by file are refused as the keys are when
// another local user may read them: an alert target's HMAC key (with it,
// anyone forges signed alerts) and admin_oidc's client secret (a
// credential at the identity provider). Before, both were read whatever
// their mode. Each case starts with its file at 0600 (the server starts),
// then at a mode others may read (refused, naming the file and the chmod).
func TestConfigSecretFileReadableByOthersIsRefused(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	iss := devissuertest.Start(t)
	quiet := NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error")
	for _, tc := range []struct {
		name   string
		config func(file string) Config
	}{
		{"alerts hmac_key_file", func(file string) Config {
			return Config{Alerts: &alert.Config{Targets: []alert.TargetConfig{{Name: "soc", URL: "https://127.0.0.1:1/hook", HMACKeyFile: file}}}}
		}},
		{"admin_oidc client_secret_file", func(file string) Config {
			c := Config{AdminOIDC: devissuertest.AdminOIDC(iss, "http://127.0.0.1:1")}
			c.AdminOIDC.ClientSecretFile = file
			return c
		}},
	} {
		// keyfile's own test covers the modes: one refused here (each
		// failed start costs seconds to close).
		for _, mode := range []os.FileMode{0o600, 0o640} {
			t.Run(fmt.Sprintf("%s %04o", tc.name, mode), func(t *testing.T) {
				file := filepath.Join(t.TempDir(), "secret")
				if err := os.WriteFile(file, []byte("a-config-file-secret-0123456789\n"), 0o600); err != nil { // mayfly:allow
					t.Fatal(err)
				}
				if err := os.Chmod(file, mode); err != nil {
					t.Fatal(err)
				}
				cfg := tc.config(file)
				cfg.DataDir, cfg.Listen, cfg.MetricsListen, cfg.InsecureHTTP = dir, "127.0.0.1:0", "off", true
				s, err := New(ctx, cfg, quiet)
				if err == nil {
					s.Close(ctx)
				}
				if mode == 0o600 {
					if err != nil {
						t.Fatalf("start with the file at 0600: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("the file at mode %04o was used", mode)
				}
				if msg := err.Error(); !strings.Contains(msg, file) || !strings.Contains(msg, "chmod 600") {
					t.Fatalf("the refusal does not name the file and the chmod to run: %v", err)
				}
			})
		}
	}
}
