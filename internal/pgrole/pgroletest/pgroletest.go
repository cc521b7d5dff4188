// Package pgroletest gives a test its own PostgreSQL database on the
// MAYFLY_TEST_POSTGRES server, an admin role with CREATEROLE that owns it,
// and a group role for minted roles to join; all dropped when the test
// ends, with every role the test's upstream minted. It never touches a
// database or role it did not create. SCRAMAccepts checks a stored
// password verifier, since the test server trusts loopback logins.
package pgroletest

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

	"github.com/mayfly-sh/mayfly/internal/pgsql"
)

// Server is a test's database on the shared server.
type Server struct {
	// SuperDSN connects as the server's superuser to the test's database
	// (for checks the admin role may not make).
	SuperDSN string
	// AdminDSN connects as the admin role (CREATEROLE, owner of the
	// database): what an upstream's admin_dsn_secret holds.
	AdminDSN string
	Database string
	Admin    string // the admin role
	Group    string // a role minted roles join (IN ROLE), allowed to migrate
	Upstream string // a unique upstream name for this test
}

// Options choose what the admin role may do.
type Options struct {
	// NoSignal leaves the admin role out of pg_signal_backend, as a
	// CREATEROLE-only role is by default.
	NoSignal bool
}

// New makes a database and roles for t, or skips (fails in CI) when
// MAYFLY_TEST_POSTGRES is unset.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	base := os.Getenv("MAYFLY_TEST_POSTGRES")
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MAYFLY_TEST_POSTGRES is not set in CI: PostgreSQL tests must run")
		}
		t.Skip("MAYFLY_TEST_POSTGRES not set")
	}
	var b [6]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	s := &Server{Database: "mft_db_" + id, Admin: "mft_admin_" + id, Group: "mft_group_" + id, Upstream: "db-" + id}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	super, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgroletest: connect to MAYFLY_TEST_POSTGRES: %v", err)
	}
	defer super.Close(ctx)
	stmts := []string{
		"CREATE ROLE " + s.Admin + " LOGIN CREATEROLE PASSWORD 'admin-" + id + "'",
		"CREATE ROLE " + s.Group + " NOLOGIN",
		"GRANT " + s.Group + " TO " + s.Admin + " WITH ADMIN OPTION",
		"CREATE DATABASE " + s.Database + " OWNER " + s.Admin,
	}
	if !opts.NoSignal {
		stmts = append(stmts, "GRANT pg_signal_backend TO "+s.Admin)
	}
	for _, q := range stmts {
		if _, err := super.Exec(ctx, q); err != nil {
			t.Fatalf("pgroletest: %s: %v", strings.Fields(q)[0], err)
		}
	}
	t.Cleanup(func() { s.drop(base) })
	s.SuperDSN = withDB(t, base, s.Database, "", "")
	s.AdminDSN = withDB(t, base, s.Database, s.Admin, "admin-"+id)
	// The group may create in the database's public schema (PostgreSQL 15
	// no longer lets everyone).
	db, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatalf("pgroletest: connect to the test database: %v", err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, "GRANT ALL ON SCHEMA public TO "+s.Group); err != nil {
		t.Fatalf("pgroletest: grant schema: %v", err)
	}
	return s
}

// Creation is a typical creation statement joining the group.
func (s *Server) Creation() string {
	return `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}' IN ROLE ` + s.Group + ";"
}

// Revocation hands what the role made to the group, then drops it.
func (s *Server) Revocation() string {
	return `REASSIGN OWNED BY "{{name}}" TO ` + s.Group + `; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`
}

// Roles lists the roles the test's upstream (or upstream) has now.
func (s *Server) Roles(t testing.TB, upstream string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatalf("pgroletest: connect: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname LIKE '%\\_'||$1 ORDER BY 1", pgsql.UpstreamSuffix(upstream))
	if err != nil {
		t.Fatalf("pgroletest: list roles: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("pgroletest: list roles: %v", err)
	}
	var out []string
	for _, n := range names {
		if pgsql.OwnedBy(n, upstream) {
			out = append(out, n)
		}
	}
	return out
}

func withDB(t testing.TB, base, db, user, password string) string {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgroletest: MAYFLY_TEST_POSTGRES is not a URL: %v", err)
	}
	u.Path = "/" + db
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// drop removes the database, the test's minted roles and its own roles.
func (s *Server) drop(base string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", s.Database)
	conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.Database+" WITH (FORCE)")
	// Minted roles: those in the group, and those of the test's upstream.
	rows, err := conn.Query(ctx, "SELECT rolname FROM pg_roles r WHERE rolname LIKE 'mayfly\\_%' AND (pg_has_role(r.oid, $1::regrole, 'MEMBER') OR rolname LIKE '%\\_'||$2)", s.Group, pgsql.UpstreamSuffix(s.Upstream))
	if err == nil {
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, n := range names {
			if pgsql.ValidName(n) {
				conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgsql.QuoteIdent(n))
			}
		}
	}
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+s.Group)
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+s.Admin)
}
