package e2e

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A rolling upgrade done against README's "upgrade all nodes together":
// a newer mayfly migrated the database while this (older) node runs. The
// node used to stay ready and go on writing; it now turns unready within
// seconds, saying what to do, refuses writes, and once stopped the same
// binary refuses to start on the database.
func TestOlderNodeOnNewerSchema(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	n := initPostgres(t, dsn)
	n.start(t, "--postgres", dsn)
	hc := n.client(t)
	if code, body := n.req(t, hc, "GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz before: %d %s", code, body)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	newer := strconv.Itoa(store.SchemaVersion() + 1)
	if _, err := raw.ExecContext(context.Background(), `UPDATE meta SET value = $1 WHERE key = 'schema_version'`, []byte(newer)); err != nil {
		t.Fatal(err)
	}
	c := &cluster{}
	c.waitFor(t, "/readyz 503 naming the newer schema", func() bool {
		code, body := n.req(t, hc, "GET", "/readyz", "")
		return code == 503 && strings.Contains(body, "version "+newer) && strings.Contains(body, "upgrade this binary")
	})
	if code, body := n.req(t, hc, "PUT", "/v1/secrets/after", `{"value":"x"}`); code != 503 {
		t.Fatalf("a secret write on the older node: %d %s, want 503", code, body)
	}
	n.cmd.Process.Kill()
	n.cmd.Wait()
	_, e, code := run(t, nil, "", "server", "--data-dir", n.dir, "--postgres", dsn, "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(e, "version "+newer) || !strings.Contains(e, "upgrade this binary") {
		t.Fatalf("the older binary started again on the newer schema: exit %d, %q", code, e)
	}
}
