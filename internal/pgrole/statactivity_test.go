package pgrole_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
)

// A minted role's password must not be readable by anyone but the job: a
// monitoring role (pg_monitor, as Datadog, pganalyze and the like are
// given) reads every session's query text in pg_stat_activity. The
// admin's pooled connection stays idle with the creation statements as its
// last query, PASSWORD 'mfyp_…' in clear, for as long as the role lives.
// (internal/rotate sends a SCRAM verifier for exactly this reason.)
func TestMintedPasswordNotInPgStatActivity(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	r := newRoles(t)
	u := upstreamOf(s)
	ctx := context.Background()
	c, err := r.Prepare(u, leaseID(7), time.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, u, c); err != nil {
		t.Fatal(err)
	}
	// A monitoring role, no superuser, no CREATEROLE, no membership in
	// the admin or the group.
	var b [4]byte
	rand.Read(b[:])
	mon := "mft_monitor_" + hex.EncodeToString(b[:])
	super, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, q := range []string{"CREATE ROLE " + mon + " LOGIN PASSWORD 'mon'", "GRANT pg_monitor TO " + mon} {
		if _, err := super.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { super.Exec(context.Background(), "DROP ROLE IF EXISTS "+mon) })
	// The job still logs in with the clear password: what PostgreSQL
	// stored is a verifier of it. (The test server trusts loopback, so a
	// login would prove nothing.)
	var stored string
	if err := super.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", c.Name).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !pgroletest.SCRAMAccepts(t, stored, c.Password) || pgroletest.SCRAMAccepts(t, stored, c.Password[:len(c.Password)-1]+"x") {
		t.Fatalf("the role's stored password is not a SCRAM verifier of its minted password: %.20s…", stored)
	}
	mu, _ := url.Parse(os.Getenv("MAYFLY_TEST_POSTGRES"))
	mu.User = url.UserPassword(mon, "mon")
	mu.Path = "/" + s.Database
	m, err := pgx.Connect(ctx, mu.String())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(ctx)
	time.Sleep(200 * time.Millisecond) // a moment later: the admin's connection is idle in the pool
	rows, err := m.Query(ctx, "SELECT usename, state, query FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, state, query string
		var st *string
		if err := rows.Scan(&user, &st, &query); err != nil {
			continue
		}
		if st != nil {
			state = *st
		}
		if strings.Contains(query, c.Password) {
			t.Fatalf("role %s's password is readable by monitoring role %s in pg_stat_activity (session of %s, state %s): %q…",
				c.Name, mon, user, state, strings.ReplaceAll(query, c.Password, c.Password[:9]+"<…rest of the live password…>")[:120])
		}
	}
}
