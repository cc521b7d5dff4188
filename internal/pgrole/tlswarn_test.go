package pgrole_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
)

// An admin DSN that leaves the upstream server's certificate unchecked off
// loopback (no sslmode: pgx's prefer) is logged when its connections are
// set up, naming the upstream and host but never the DSN; once per DSN.
func TestUnverifiedAdminDSNIsWarned(t *testing.T) {
	tests := []struct {
		dsn  string
		warn bool
	}{
		{"postgres://admin:hunter2@192.0.2.1:5432/app", true},
		{"postgres://admin:hunter2@192.0.2.1:5432/app?sslmode=require", true},
		{"postgres://admin:hunter2@127.0.0.1:5432/app?sslmode=disable", false},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			var logs bytes.Buffer
			r := pgrole.New(pgrole.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			defer r.Close()
			u := pgrole.Upstream{Name: "app-db", AdminDSN: tt.dsn}
			for range 2 {
				// Prepare sets up the upstream's connections, connecting to nothing.
				if _, err := r.Prepare(u, "lse_000000000000000000000001", time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			want := 0
			if tt.warn {
				want = 1
			}
			if got := strings.Count(logs.String(), "certificate is not verified"); got != want {
				t.Fatalf("warned %d times, want %d; logs:\n%s", got, want, logs.String())
			}
			if strings.Contains(logs.String(), "hunter2") {
				t.Fatalf("the DSN's password is logged:\n%s", logs.String())
			}
			if tt.warn && (!strings.Contains(logs.String(), "app-db") || !strings.Contains(logs.String(), "192.0.2.1")) {
				t.Fatalf("upstream or host not named:\n%s", logs.String())
			}
		})
	}
}
