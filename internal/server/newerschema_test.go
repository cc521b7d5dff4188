package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A node still running after a newer mayfly migrated the shared database
// (a rolling upgrade, against README's "upgrade all nodes together") went
// on serving: exchanges, secret writes and gateway requests wrote rows in
// the old format under the new schema, and its sequencer kept the lock
// and folded (or refused, as not sealed its way) the newer nodes' pending
// records. It now notices within seconds, through reads it makes anyway
// (the lease poll, the readiness ping, the sequencer's round): /readyz
// answers 503 naming both versions, every write answers 503 and writes
// nothing, and the sequencer lock is free for a newer node.
func TestOlderNodeStopsOnNewerSchema(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	h := newHarness(t, Config{Postgres: dsn})
	tok := h.exchange(t)

	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	ctx := context.Background()
	// What a newer mayfly's migration records as its last step.
	newer := store.SchemaVersion() + 1
	if _, err := raw.ExecContext(ctx, `UPDATE meta SET value = $1 WHERE key = 'schema_version'`, []byte(strconv.Itoa(newer))); err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		t.Helper()
		if err := raw.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM leases) + (SELECT count(*) FROM secrets) + (SELECT count(*) FROM audit_pending) + (SELECT count(*) FROM audit_entries)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// /readyz is what a load balancer and a rollout watch: no one asks
	// it here until the node has had the time to notice by itself.
	time.Sleep(2 * time.Second)
	resp, err := http.Get(h.http.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ready struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	json.Unmarshal(body, &ready)
	want := []string{strconv.Itoa(newer), strconv.Itoa(store.SchemaVersion()), "upgrade this binary"}
	if resp.StatusCode != http.StatusServiceUnavailable || ready.Ready {
		t.Errorf("/readyz: %d %s, want 503 once a newer mayfly migrated the database", resp.StatusCode, body)
	}
	for _, w := range want {
		if !strings.Contains(ready.Checks["store"], w) {
			t.Errorf("/readyz's store check %q does not say %q", ready.Checks["store"], w)
		}
	}

	before := count()
	for _, tc := range []struct {
		name, method, path, bearer, ctype, body string
	}{
		{"exchange", "POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy")},
		{"secret write", "PUT", "/v1/secrets/other", h.admin, "application/json", `{"value":"x"}`},
		{"renewal", "POST", "/v1/token/renew", tok, "", ""},
		// The upstream (port 1) would answer 502: the request's decision
		// is refused first.
		{"gateway request", "GET", "/gw/api/repos/acme/app/issues", tok, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, h.http.URL+tc.path, strings.NewReader(tc.body))
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("%s %s: %d %s, want 503", tc.method, tc.path, resp.StatusCode, b)
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // anything the sequencer would still fold
	if after := count(); after != before {
		t.Errorf("%d rows before the refused writes, %d after: the older node wrote under the newer schema", before, after)
	}

	// The sequencer lock is free: a newer node takes it.
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var took bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(7303886, hashtext(current_schema()))`).Scan(&took); err != nil {
		t.Fatal(err)
	}
	if !took {
		t.Error("the older node still holds the audit sequencer lock")
	}
	conn.ExecContext(ctx, `SELECT pg_advisory_unlock(7303886, hashtext(current_schema()))`)
}
