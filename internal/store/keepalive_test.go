package store

import (
	"context"
	"testing"
)

// Every session a node opens asks PostgreSQL for TCP keepalives, so that
// the server drops the sessions of a node the network cut off within
// ~25 s, and with them the audit sequencer's advisory lock: without them
// it kept them for the operating system's two hours, and no other node
// could take over the log. A DSN's own value is kept.
func TestSessionsAskForServerKeepalives(t *testing.T) {
	var pg Config
	for _, b := range syncBackends(t) {
		if b.name == "postgres" {
			pg = b.cfg
		}
	}
	if pg.PostgresDSN == "" {
		t.Skip("PostgreSQL only (MAYFLY_TEST_POSTGRES)")
	}
	for _, tc := range []struct {
		name, dsnExtra, want string
	}{
		{"defaults", "", "10"},
		{"the DSN's own", "&tcp_keepalives_idle=42", "42"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, Config{PostgresDSN: pg.PostgresDSN + tc.dsnExtra})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			got, err := db.SessionSettings(ctx, "tcp_keepalives_idle")
			if err != nil {
				t.Fatal(err)
			}
			for _, session := range []string{"pool", "sequencer", "notifier"} {
				if got[session] != tc.want {
					t.Errorf("%s session: tcp_keepalives_idle = %q, want %q", session, got[session], tc.want)
				}
			}
		})
	}
}
