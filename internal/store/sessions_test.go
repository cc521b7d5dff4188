package store_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// A database the previous release (schema 13) left, with sessions in it,
// upgrades to one where lowering a subject's role finds that subject's
// sessions through the subject index instead of reading every session.
func TestEndSessionsUsesSubjectIndexAfterUpgrade(t *testing.T) {
	for _, m := range readOnlyBackends() {
		t.Run(m.name, func(t *testing.T) {
			b := m.make(t, func(b roBackend) {
				if err := store.CreateAtSchema(ctx, b.cfg, 13); err != nil {
					t.Fatal(err)
				}
				for i := range 3 {
					b.exec(t, `INSERT INTO admin_sessions (id, token_hash, name, subject, role, via, source, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
						"ses_"+strconv.Itoa(i), []byte{byte(i)}, "n", "sub"+strconv.Itoa(i%2), "admin", "browser", "127.0.0.1", int64(1), int64(2))
				}
			})
			db, err := store.Open(ctx, b.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var v []byte
			if err := b.raw.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil || string(v) != strconv.Itoa(store.SchemaVersion()) {
				t.Fatalf("schema version %s, %v; want %d", v, err, store.SchemaVersion())
			}
			plan, err := db.PlanEndAdminSessions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(plan, "admin_sessions_subject") {
				t.Fatalf("ending a subject's sessions does not use admin_sessions_subject:\n%s", plan)
			}
			var n int
			if err := b.raw.QueryRowContext(ctx, `SELECT COUNT(*) FROM admin_sessions`).Scan(&n); err != nil || n != 3 {
				t.Fatalf("%d sessions after the upgrade, %v; want 3", n, err)
			}
		})
	}
}
