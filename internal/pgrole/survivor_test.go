package pgrole_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
)

// A job's role that owns an object cannot be dropped by the default
// revocation (DROP ROLE IF EXISTS): it stayed, NOLOGIN, but still a member
// of the group, and a SECURITY DEFINER function it made kept reading, for
// any other login, what the group may read. Now a role that survives its
// revocation statements holds no membership, its routines run as their
// caller and nobody but it may call them or use its tables: another login
// can no longer reach what the role's membership gave.
func TestRevokedSurvivorHoldsNothing(t *testing.T) {
	for _, tc := range []struct {
		name       string
		revocation string // "": the default
		wantErr    bool   // the role could not be dropped
	}{
		{"default revocation", "", true},
		{"revocation that only locks the role", `ALTER ROLE "{{name}}" NOLOGIN;`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := pgroletest.New(t, pgroletest.Options{})
			r := newRoles(t)
			u := upstreamOf(s)
			u.Revocation = tc.revocation
			ctx := context.Background()
			super, err := pgx.Connect(ctx, s.SuperDSN)
			if err != nil {
				t.Fatal(err)
			}
			defer super.Close(ctx)
			// What the group may read, and another login that may not.
			other := "mft_other_" + strings.TrimPrefix(s.Admin, "mft_admin_")
			for _, q := range []string{
				"CREATE TABLE vault (v text)", "INSERT INTO vault VALUES ('group-only')",
				"ALTER TABLE vault OWNER TO " + s.Group,
				"CREATE ROLE " + other + " LOGIN",
			} {
				if _, err := super.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			t.Cleanup(func() {
				c, err := pgx.Connect(context.Background(), s.SuperDSN)
				if err == nil {
					c.Exec(context.Background(), "DROP OWNED BY "+other+"; DROP ROLE IF EXISTS "+other)
					c.Close(context.Background())
				}
			})
			c, err := r.Prepare(u, leaseID(700), time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Create(ctx, u, c); err != nil {
				t.Fatal(err)
			}
			job, err := pgx.Connect(ctx, c.DSN())
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				"CREATE FUNCTION peek() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT v FROM public.vault'",
				"CREATE TABLE jobs_table (x int)",
				"GRANT ALL ON jobs_table TO PUBLIC",
			} {
				if _, err := job.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			job.Close(ctx)
			ou, _ := url.Parse(s.SuperDSN)
			ou.User = url.User(other) // the test server trusts loopback logins
			oc, err := pgx.Connect(ctx, ou.String())
			if err != nil {
				t.Fatal(err)
			}
			defer oc.Close(ctx)
			var got string
			if err := oc.QueryRow(ctx, "SELECT peek()").Scan(&got); err != nil || got != "group-only" {
				t.Fatalf("before revocation peek() = %q, %v", got, err)
			}

			err = r.Revoke(ctx, u, c.Name)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Revoke: %v, want an error %v", err, tc.wantErr)
			}
			if left := s.Roles(t, s.Upstream); len(left) != 1 {
				t.Fatalf("roles left %v, want the surviving role", left)
			}
			var members int
			if err := super.QueryRow(ctx, "SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", c.Name).Scan(&members); err != nil || members != 0 {
				t.Fatalf("the surviving role is still a member of %d roles (%v)", members, err)
			}
			if err := oc.QueryRow(ctx, "SELECT peek()").Scan(&got); err == nil {
				t.Fatalf("another login still reads through the revoked role's function: %q", got)
			}
			if _, err := oc.Exec(ctx, "INSERT INTO jobs_table VALUES (1)"); err == nil {
				t.Fatal("another login still writes the revoked role's table")
			}
			var secdef bool
			if err := super.QueryRow(ctx, "SELECT prosecdef FROM pg_proc WHERE proname = 'peek'").Scan(&secdef); err != nil || secdef {
				t.Fatalf("peek() SECURITY DEFINER = %v, %v", secdef, err)
			}
			// A second revocation finds it stripped already and says the
			// same.
			if err := r.Revoke(ctx, u, c.Name); (err != nil) != tc.wantErr {
				t.Fatalf("second Revoke: %v", err)
			}
		})
	}
}
