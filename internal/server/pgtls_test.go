package server

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUnverifiedPostgresHosts(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	t.Setenv("PGSSLROOTCERT", "")
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := generateTLS(ca, filepath.Join(dir, "ca-key.pem"), filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem"), nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dsn  string
		want string // hosts, comma separated
	}{
		{"postgres://u:p@db.internal:5432/m", "db.internal"},                               // pgx's default: prefer
		{"postgres://u:p@db.internal/m?sslmode=disable", "db.internal"},                    // in clear
		{"postgres://u:p@10.0.0.9/m?sslmode=require", "10.0.0.9"},                          // encrypted, anyone's certificate
		{"host=db.internal user=u password=p sslmode=allow", "db.internal"},                // keyword form
		{"postgres://u:p@a.internal,b.internal/m?sslmode=prefer", "a.internal,b.internal"}, // every host
		{"postgres://u:p@db.internal/m?sslmode=verify-full&sslrootcert=" + ca, ""},
		{"postgres://u:p@db.internal/m?sslmode=verify-ca&sslrootcert=" + ca, ""},
		{"postgres://u:p@db.internal/m?sslmode=require&sslrootcert=" + ca, ""}, // libpq: verify-ca
		{"postgres://u:p@db.internal/m?sslrootcert=system", ""},                // system roots: verify-full
		{"postgres://u:p@127.0.0.1:5432/m?sslmode=disable", ""},
		{"postgres://u:p@[::1]:5432/m", ""},
		{"postgres://u:p@localhost/m", ""},
		{"host=/var/run/postgresql user=u sslmode=disable", ""},
		{"postgres://u:p@db.internal/m?sslmode=bogus", ""}, // refused when the store opens
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			if got := strings.Join(unverifiedPostgresHosts(tt.dsn), ","); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	// PGSSLMODE counts as pgx reads it.
	t.Setenv("PGSSLMODE", "require")
	if got := unverifiedPostgresHosts("postgres://u:p@db.internal/m"); len(got) != 1 {
		t.Fatalf("PGSSLMODE=require: got %v", got)
	}
}

// A server whose PostgreSQL DSN leaves the certificate unchecked off
// loopback says so when it starts, naming the host but not the DSN.
func TestStartWarnsOfUnverifiedPostgres(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	dir := filepath.Join(t.TempDir(), "d")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dsn  string
		warn bool
	}{
		// 192.0.2.0/24 is for documentation: nothing answers, the store
		// fails to open after connect_timeout; the warning comes first.
		{"postgres://mayfly:hunter2@192.0.2.1:5432/m?connect_timeout=1", true},
		{"postgres://mayfly:hunter2@192.0.2.1:5432/m?connect_timeout=1&sslmode=require", true},
		{"postgres://mayfly:hunter2@127.0.0.1:1/m?connect_timeout=1&sslmode=disable", false},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", Postgres: tt.dsn}, NewLogger(&logs, "text", "info"))
			if err == nil {
				s.Close(context.Background())
			}
			got := strings.Contains(logs.String(), "PostgreSQL connection is not verified")
			if got != tt.warn {
				t.Fatalf("warned %v, want %v; logs:\n%s", got, tt.warn, logs.String())
			}
			if strings.Contains(logs.String(), "hunter2") {
				t.Fatalf("the DSN's password is logged:\n%s", logs.String())
			}
			if tt.warn && !strings.Contains(logs.String(), "192.0.2.1") {
				t.Fatalf("the host is not named:\n%s", logs.String())
			}
		})
	}
}
