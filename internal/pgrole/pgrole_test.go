package pgrole_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
)

func newRoles(t *testing.T) *pgrole.Roles {
	r := pgrole.New(pgrole.Options{})
	t.Cleanup(r.Close)
	return r
}

func upstreamOf(s *pgroletest.Server) pgrole.Upstream {
	return pgrole.Upstream{Name: s.Upstream, AdminDSN: s.AdminDSN, Creation: s.Creation(), Revocation: s.Revocation()}
}

func leaseID(i int) string { return fmt.Sprintf("lse_%024x", i) }

// The whole life of a role: the job connects with the DSN and migrates;
// renewal moves VALID UNTIL; revocation ends its open session and it can
// no longer connect; what it made stays, handed to the group.
func TestRoleLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts pgroletest.Options
	}{
		{"admin in pg_signal_backend", pgroletest.Options{}},
		{"CREATEROLE only", pgroletest.Options{NoSignal: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := pgroletest.New(t, tc.opts)
			r := newRoles(t)
			u := upstreamOf(s)
			ctx := context.Background()
			exp := time.Now().Add(10 * time.Minute)
			c, err := r.Prepare(u, leaseID(1), exp)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Create(ctx, u, c); err != nil {
				t.Fatal(err)
			}
			dsn := c.DSN()
			if !strings.HasPrefix(dsn, "postgres://"+c.Name+":"+c.Password+"@") || !strings.Contains(dsn, "/"+s.Database) {
				t.Fatalf("DSN shape: %s", strings.ReplaceAll(dsn, c.Password, "…"))
			}
			job, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("the job cannot connect with its DSN: %v", err)
			}
			defer job.Close(ctx)
			for _, q := range []string{"CREATE TABLE widgets (id int PRIMARY KEY, name text)", "INSERT INTO widgets VALUES (1, 'a')", "ALTER TABLE widgets ADD COLUMN size int"} {
				if _, err := job.Exec(ctx, q); err != nil {
					t.Fatalf("migration %q: %v", q, err)
				}
			}
			if got := validUntil(t, s, c.Name); !got.Equal(c.Expires) {
				t.Fatalf("VALID UNTIL %v, want the lease's expiry %v", got, c.Expires)
			}
			later := exp.Add(5 * time.Minute).Truncate(time.Second)
			if err := r.Renew(ctx, u, c.Name, later); err != nil {
				t.Fatal(err)
			}
			if got := validUntil(t, s, c.Name); !got.Equal(later) {
				t.Fatalf("after renewal VALID UNTIL %v, want %v", got, later)
			}
			if err := r.Revoke(ctx, u, c.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := job.Exec(ctx, "SELECT 1"); err == nil {
				t.Fatal("the job's open session survived revocation")
			}
			if c2, err := pgx.Connect(ctx, dsn); err == nil {
				c2.Close(ctx)
				t.Fatal("the job can still connect after revocation")
			}
			if roles := s.Roles(t, s.Upstream); len(roles) != 0 {
				t.Fatalf("roles left after revocation: %v", roles)
			}
			// The migration's table outlives the role, owned by the group.
			super, err := pgx.Connect(ctx, s.SuperDSN)
			if err != nil {
				t.Fatal(err)
			}
			defer super.Close(ctx)
			var owner string
			if err := super.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'widgets'").Scan(&owner); err != nil || owner != s.Group {
				t.Fatalf("widgets owner %q, %v; want %s", owner, err, s.Group)
			}
			// Revoking again is done already, not an error.
			if err := r.Revoke(ctx, u, c.Name); err != nil {
				t.Fatalf("second revocation: %v", err)
			}
		})
	}
}

func validUntil(t *testing.T, s *pgroletest.Server, name string) time.Time {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v time.Time
	if err := conn.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Faults answer with their cause, hold no password, and leave no role.
func TestCreateFaults(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	// A port nothing listens on: the database is down.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "postgres://" + s.Admin + ":x@" + l.Addr().String() + "/" + s.Database + "?sslmode=disable&connect_timeout=2"
	l.Close()
	for _, tc := range []struct {
		name     string
		u        func(u pgrole.Upstream) pgrole.Upstream
		cause    pgrole.Cause
		contains string
	}{
		{"database down", func(u pgrole.Upstream) pgrole.Upstream { u.AdminDSN = down; return u }, pgrole.Unreachable, "connect"},
		{"creation SQL fails", func(u pgrole.Upstream) pgrole.Upstream {
			u.Creation = `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' IN ROLE no_such_group_x;`
			return u
		}, pgrole.Refused, "no_such_group_x"},
		{"second statement fails after the role is made", func(u pgrole.Upstream) pgrole.Upstream {
			u.Creation = s.Creation() + ` SELECT '{{password}}'::int;`
			return u
		}, pgrole.Refused, "invalid input syntax"},
		{"creation makes no role", func(u pgrole.Upstream) pgrole.Upstream {
			u.Creation = `SELECT '{{password}}', "{{name}}" FROM (SELECT 1 AS "{{name}}") x;`
			return u
		}, pgrole.Misconfigured, "did not create the role"},
		{"role without LOGIN", func(u pgrole.Upstream) pgrole.Upstream {
			u.Creation = `CREATE ROLE "{{name}}" PASSWORD '{{password}}';`
			return u
		}, pgrole.Misconfigured, "cannot log in"},
		{"template unsafe", func(u pgrole.Upstream) pgrole.Upstream {
			u.Creation = `CREATE ROLE "{{name}}" -- {{password}}`
			return u
		}, pgrole.Misconfigured, "comment"},
		{"admin DSN garbage", func(u pgrole.Upstream) pgrole.Upstream { u.AdminDSN = "postgres://a:" + "secretpw@[::1"; return u }, pgrole.Misconfigured, "does not parse"},
		{"admin role unknown", func(u pgrole.Upstream) pgrole.Upstream {
			u.AdminDSN = strings.Replace(u.AdminDSN, s.Admin+":", "nobody_"+s.Admin+":", 1)
			return u
		}, pgrole.Misconfigured, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRoles(t)
			u := tc.u(upstreamOf(s))
			c, err := r.Prepare(u, leaseID(7), time.Now().Add(time.Minute))
			if err == nil {
				err = r.Create(context.Background(), u, c)
			}
			var pe *pgrole.Error
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *pgrole.Error", err)
			}
			if pe.Cause != tc.cause || !strings.Contains(err.Error(), tc.contains) || !strings.Contains(err.Error(), s.Upstream) {
				t.Fatalf("err = %v (cause %s), want cause %s saying %q and naming the upstream", err, pe.Cause, tc.cause, tc.contains)
			}
			if c != nil && strings.Contains(err.Error(), c.Password) {
				t.Fatal("the error holds the minted password")
			}
			if strings.Contains(err.Error(), "secretpw") || strings.Contains(err.Error(), "admin-") {
				t.Fatal("the error holds the admin password")
			}
			if roles := s.Roles(t, s.Upstream); len(roles) != 0 {
				t.Fatalf("a failed creation left roles: %v", roles)
			}
		})
	}
}

// The sweep drops only this upstream's roles that no record vouches for;
// it never touches roles of another upstream or of another form.
func TestSweep(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	r := newRoles(t)
	u := upstreamOf(s)
	other := u
	other.Name = s.Upstream + "-other"
	ctx := context.Background()
	var names []string
	for i := range 4 {
		c, err := r.Prepare(u, leaseID(100+i), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Create(ctx, u, c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Name)
	}
	oc, _ := r.Prepare(other, leaseID(200), time.Now().Add(time.Hour))
	if err := r.Create(ctx, other, oc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Revoke(context.Background(), other, oc.Name) })
	var asked []string
	dropped, err := r.Sweep(ctx, u, func(_ context.Context, ns []string) (map[string]bool, error) {
		asked = ns
		return map[string]bool{names[0]: true, names[2]: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 4 || len(dropped) != 2 {
		t.Fatalf("asked about %v, dropped %v", asked, dropped)
	}
	left := s.Roles(t, s.Upstream)
	if strings.Join(left, ",") != strings.Join([]string{names[0], names[2]}, ",") && strings.Join(left, ",") != strings.Join([]string{names[2], names[0]}, ",") {
		t.Fatalf("left %v, want %v", left, []string{names[0], names[2]})
	}
	if got := s.Roles(t, other.Name); len(got) != 1 {
		t.Fatalf("the sweep touched another upstream's roles: %v", got)
	}
	// A store that cannot answer: nothing is dropped.
	if _, err := r.Sweep(ctx, u, func(context.Context, []string) (map[string]bool, error) { return nil, errors.New("store down") }); err == nil {
		t.Fatal("sweep went on without knowing which roles are vouched for")
	}
	if got := s.Roles(t, s.Upstream); len(got) != 2 {
		t.Fatalf("roles dropped without a store answer: %v", got)
	}
}

// RevokeMany drops a thousand roles in a few round trips, and goes on one
// by one when the revocations fail together.
func TestRevokeMany(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	r := newRoles(t)
	u := upstreamOf(s)
	ctx := context.Background()
	var names []string
	for i := range 5 {
		c, _ := r.Prepare(u, leaseID(300+i), time.Now().Add(time.Hour))
		if err := r.Create(ctx, u, c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c.Name)
	}
	// Make one role impossible to drop under a revocation that does not
	// reassign: it owns a table.
	super, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, "CREATE TABLE owned (x int); ALTER TABLE owned OWNER TO "+pgsql.QuoteIdent(names[1])); err != nil {
		t.Fatal(err)
	}
	plain := u
	plain.Revocation = ""
	done, err := r.RevokeMany(ctx, plain, names)
	if err == nil || len(done) != 4 || !strings.Contains(err.Error(), names[1]) {
		t.Fatalf("RevokeMany = %v, %v; want 4 done and an error naming %s", done, err, names[1])
	}
	if got := s.Roles(t, s.Upstream); len(got) != 1 || got[0] != names[1] {
		t.Fatalf("left %v", got)
	}
	// The role that could not be dropped can no longer log in either.
	var login bool
	if err := super.QueryRow(ctx, "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", names[1]).Scan(&login); err != nil || login {
		t.Fatalf("rolcanlogin = %v, %v", login, err)
	}
	if done, err := r.RevokeMany(ctx, u, names); err != nil || len(done) != 5 {
		t.Fatalf("RevokeMany with REASSIGN = %v, %v", done, err)
	}
}

// The quoting functions mean exactly their input to PostgreSQL, whatever
// the input holds.
func TestQuotingOnPostgres(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, v := range []string{`plain`, `it's`, `a"b`, `back\slash`, `\'; DROP TABLE x; --`, `"; DROP ROLE postgres; --`, `$$`, `$x$ end $x$`, "new\nline", `E'\x41'`, `''''`, `ユニコード`} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT "+pgsql.QuoteLiteral(v), pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil || got != v {
			t.Fatalf("literal %q came back %q, %v", v, got, err)
		}
		rows, err := conn.Query(ctx, "SELECT 1 AS "+pgsql.QuoteIdent(v), pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("identifier %q: %v", v, err)
		}
		name := rows.FieldDescriptions()[0].Name
		rows.Close()
		if name != v && len(v) < 63 {
			t.Fatalf("identifier %q came back %q", v, name)
		}
	}
}

// A job never gets a role that can do more than the database grants it:
// creation statements that make the role a superuser, let it make roles
// (which outlive its lease), bypass row security, replicate, or join a
// role that can (or one of the roles that read and write the server's
// files or run programs on it) are refused, and leave no role, whatever
// the admin DSN's role may do.
func TestCreateRefusesPrivilegedRoles(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	const base = `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`
	for _, tc := range []struct {
		name, creation, says string
		super                bool // the admin DSN is a superuser's
	}{
		{"SUPERUSER", base + ` SUPERUSER;`, "SUPERUSER", true},
		{"CREATEROLE", base + ` CREATEROLE;`, "CREATEROLE", false},
		{"BYPASSRLS", base + ` BYPASSRLS;`, "BYPASSRLS", true},
		{"REPLICATION", base + ` REPLICATION;`, "REPLICATION", true},
		{"IN ROLE the admin (CREATEROLE)", base + ` IN ROLE ` + s.Admin + `;`, s.Admin, false},
		{"IN ROLE pg_execute_server_program", base + ` IN ROLE pg_execute_server_program;`, "pg_execute_server_program", false},
		{"granted pg_read_server_files after", base + `; GRANT pg_read_server_files TO "{{name}}";`, "pg_read_server_files", false},
		{"granted pg_write_server_files after", base + `; GRANT pg_write_server_files TO "{{name}}";`, "pg_write_server_files", false},
		{"ADMIN OPTION on the group", base + ` IN ROLE ` + s.Group + `; GRANT ` + s.Group + ` TO "{{name}}" WITH ADMIN OPTION;`, "ADMIN OPTION on " + s.Group, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRoles(t)
			u := upstreamOf(s)
			u.Name += "-" + strings.ReplaceAll(tc.name, " ", "-") // a case that fails leaves its role to itself
			u.Creation = tc.creation
			t.Cleanup(func() { // what a failing case made, dropped as the superuser
				su := u
				su.AdminDSN, su.Revocation = s.SuperDSN, ""
				if left := s.Roles(t, u.Name); len(left) > 0 {
					r.RevokeMany(context.Background(), su, left)
				}
			})
			if tc.super {
				u.AdminDSN = s.SuperDSN
			}
			c, err := r.Prepare(u, leaseID(11), time.Now().Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Create(context.Background(), u, c)
			var pe *pgrole.Error
			if !errors.As(err, &pe) || pe.Cause != pgrole.Misconfigured || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want a refusal (%s) naming %s", err, pgrole.Misconfigured, tc.says)
			}
			if strings.Contains(err.Error(), c.Password) {
				t.Fatal("the error holds the minted password")
			}
			if roles := s.Roles(t, u.Name); len(roles) != 0 {
				t.Fatalf("a refused creation left roles: %v", roles)
			}
		})
	}
}

// ADMIN OPTION held through a role the job's role joins is ADMIN OPTION
// all the same (PostgreSQL lets a member grant what any role it is a
// member of administers): creation statements that make the role a member
// of one are refused. A plain group role, the common grant, still passes.
func TestCreateRefusesAdminOptionThroughMembership(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	ctx := context.Background()
	super, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	lead, target, plain := s.Group+"_lead", s.Group+"_target", s.Group+"_rw"
	for _, q := range []string{
		"CREATE ROLE " + target + " NOLOGIN",
		"CREATE ROLE " + lead + " NOLOGIN",
		"CREATE ROLE " + plain + " NOLOGIN",
		"GRANT " + target + " TO " + lead + " WITH ADMIN OPTION", // lead administers target
		"GRANT " + lead + ", " + plain + " TO " + s.Admin + " WITH ADMIN OPTION",
	} {
		if _, err := super.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), s.SuperDSN)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for _, r := range []string{lead, plain, target} {
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+r)
		}
	})
	const base = `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}'`
	for _, tc := range []struct {
		name, creation, says string // says: "" when it must pass
	}{
		{"IN ROLE a role administering another", base + ` IN ROLE ` + lead + `;`, "ADMIN OPTION on " + target},
		{"granted a role administering another", base + `; GRANT ` + lead + ` TO "{{name}}";`, "ADMIN OPTION on " + target},
		{"granted a plain group role", base + `; GRANT ` + plain + ` TO "{{name}}";`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRoles(t)
			u := upstreamOf(s)
			u.Name += "-" + strings.ReplaceAll(tc.name, " ", "-")
			u.Creation = tc.creation
			t.Cleanup(func() {
				su := u
				su.AdminDSN, su.Revocation = s.SuperDSN, ""
				if left := s.Roles(t, u.Name); len(left) > 0 {
					r.RevokeMany(context.Background(), su, left)
				}
			})
			c, err := r.Prepare(u, leaseID(12), time.Now().Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			err = r.Create(ctx, u, c)
			if tc.says == "" {
				if err != nil {
					t.Fatalf("err = %v, want the role made", err)
				}
				return
			}
			var pe *pgrole.Error
			if !errors.As(err, &pe) || pe.Cause != pgrole.Misconfigured || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want a refusal (%s) naming %s", err, pgrole.Misconfigured, tc.says)
			}
			if roles := s.Roles(t, u.Name); len(roles) != 0 {
				t.Fatalf("a refused creation left roles: %v", roles)
			}
		})
	}
}

// Two nodes renewing one lease at once may extend its role in either
// order; the lease keeps the later expiry (store.RenewLease), and so must
// the role's VALID UNTIL, or the job's logins stop while its lease lives.
func TestRenewNeverMovesValidUntilEarlier(t *testing.T) {
	s := pgroletest.New(t, pgroletest.Options{})
	r := newRoles(t)
	u := upstreamOf(s)
	ctx := context.Background()
	exp := time.Now().Add(10 * time.Minute).Truncate(time.Second)
	c, err := r.Prepare(u, leaseID(13), exp)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, u, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Revoke(context.Background(), u, c.Name) })
	later, sooner := exp.Add(2*time.Hour), exp.Add(time.Hour)
	for _, step := range []struct {
		to, want time.Time
	}{
		{later, later},  // moved later
		{sooner, later}, // a renewal computed earlier, landing second: kept
		{exp, later},
	} {
		if err := r.Renew(ctx, u, c.Name, step.to); err != nil {
			t.Fatal(err)
		}
		if got := validUntil(t, s, c.Name); !got.Equal(step.want) {
			t.Fatalf("renewed to %v: VALID UNTIL %v, want %v", step.to, got, step.want)
		}
	}
}
