package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// pgWorld is a real server whose policy has postgres upstreams on a test
// database of its own.
type pgWorld struct {
	n      *node
	pg     *pgroletest.Server
	iss    *devissuer.Issuer
	admin  []string // environment of admin commands
	job    []string // environment of job commands
	dsn    string   // the store's PostgreSQL, "" for SQLite
	config string
}

func quoteY(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// startPGWorld starts a server on the given store backend with a config
// that makes crash leftovers stale after a second and sweeps every second.
func startPGWorld(t *testing.T, backend string) *pgWorld {
	t.Helper()
	w := &pgWorld{pg: pgroletest.New(t, pgroletest.Options{}), iss: devissuertest.Start(t)}
	w.config = filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(w.config, []byte("minted:\n  stale_pending: 1s\n  role_sweep_interval: 1s\n"), 0o600)
	if backend == "postgres" {
		w.dsn = storetest.FreshSchema(t, storetest.PostgresDSN(t))
		w.n = initPostgres(t, w.dsn)
	} else {
		w.n = initDir(t)
	}
	w.start(t)
	return w
}

func (w *pgWorld) start(t *testing.T) {
	t.Helper()
	args := []string{"--config", w.config}
	if w.dsn != "" {
		args = append(args, "--postgres", w.dsn)
	}
	w.n.start(t, args...)
	w.admin = []string{"MAYFLY_ADDR=" + w.n.url, "MAYFLY_CACERT=" + filepath.Join(w.n.dir, "ca.pem"), "MAYFLY_TOKEN=" + w.n.admin}
	w.job = []string{"MAYFLY_ADDR=" + w.n.url, "MAYFLY_CACERT=" + filepath.Join(w.n.dir, "ca.pem"), "MAYFLY_TOKEN="}
}

// apply stores the admin DSN and applies a policy with the test's upstream
// (grant migrate), one whose creation fails (broken), one whose admin
// secret is not stored (unstored) and one whose database is down (down).
func (w *pgWorld) apply(t *testing.T, creation string) {
	t.Helper()
	if _, e, code := run(t, w.admin, w.pg.AdminDSN, "secret", "put", "app-db-admin"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "postgres://nobody:x@" + l.Addr().String() + "/db?sslmode=disable&connect_timeout=2"
	l.Close()
	if _, e, code := run(t, w.admin, down, "secret", "put", "down-db-admin"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	// Stored for the policy to apply, removed after: a missing secret.
	if _, e, code := run(t, w.admin, w.pg.AdminDSN, "secret", "put", "never-stored"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	defer func() {
		if _, e, code := run(t, w.admin, "", "secret", "rm", "never-stored"); code != 0 {
			t.Fatalf("secret rm: %s", e)
		}
	}()
	grantTTL := func(name, up, ttl string) string {
		return "  " + name + ":\n    upstream: " + up + "\n    ttl: " + ttl + "\n    max_ttl: 1h\n    deliver: job\n    bind_source_ip: true\n    who: [{issuer: dev, claims: {repository: acme/app}}]\n"
	}
	grant := func(name, up string) string { return grantTTL(name, up, "5m") }
	pol := `issuers:
  dev:
    url: ` + w.iss.URL() + `
    audience: ` + w.n.url + `
upstreams:
  ` + w.pg.Upstream + `:
    postgres:
      admin_dsn_secret: app-db-admin
      creation: ` + quoteY(creation) + `
      revocation: ` + quoteY(w.pg.Revocation()) + `
  broken-db:
    postgres:
      admin_dsn_secret: app-db-admin
      creation: ` + quoteY(`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' IN ROLE no_such_group_e2e;`) + `
      revocation: 'DROP ROLE IF EXISTS "{{name}}";'
  unstored-db:
    postgres:
      admin_dsn_secret: never-stored
      creation: ` + quoteY(w.pg.Creation()) + `
      revocation: 'DROP ROLE IF EXISTS "{{name}}";'
  down-db:
    postgres:
      admin_dsn_secret: down-db-admin
      creation: ` + quoteY(w.pg.Creation()) + `
      revocation: 'DROP ROLE IF EXISTS "{{name}}";'
grants:
` + grant("migrate", w.pg.Upstream) + grant("broken", "broken-db") + grant("unstored", "unstored-db") + grant("down", "down-db") + grantTTL("short", w.pg.Upstream, shortTTL.String())
	f := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(f, []byte(pol), 0o600)
	if _, e, code := run(t, w.admin, "", "policy", "apply", "--yes", f); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
}

func (w *pgWorld) idFile(t *testing.T) string {
	t.Helper()
	idt, err := w.iss.Mint(nil, w.n.url, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "id")
	os.WriteFile(f, []byte(idt), 0o600)
	return f
}

// login exchanges for grant and returns the env lines it printed.
func (w *pgWorld) login(t *testing.T, grant string) map[string]string {
	t.Helper()
	out, e, code := run(t, w.job, "", "login", "--grant", grant, "--id-token-file", w.idFile(t), "--format", "env")
	if code != 0 {
		t.Fatalf("login %s: %d %s", grant, code, e)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		// A value sh would misread (a DSN's "?" and "&") is single-quoted.
		if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		env[k] = v
	}
	for _, k := range []string{"MAYFLY_TOKEN", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "DATABASE_URL"} {
		if env[k] == "" {
			t.Fatalf("login --format env printed no %s", k)
		}
	}
	return env
}

// waitRoles waits until the upstream's roles are exactly want in number.
func (w *pgWorld) waitRoles(t *testing.T, want int) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = w.pg.Roles(t, w.pg.Upstream); len(got) == want {
			return got
		}
	}
	t.Fatalf("roles %v, want %d of them", got, want)
	return nil
}

func leaseOf(t *testing.T, role string) string {
	t.Helper()
	// mayfly_<24 hex>_<8 hex> names lse_<24 hex>.
	if !pgsql.ValidName(role) {
		t.Fatalf("role %q is not of mayfly's form", role)
	}
	return "lse_" + role[len("mayfly_"):len("mayfly_")+24]
}

// shortTTL is the life of the short grant's leases (and roles).
const shortTTL = 6 * time.Second

// shortSession logs in to the short grant and opens a session with its
// role. A role whose life ran out before the session was opened (a loaded
// machine took more than shortTTL from the login to the connection)
// refuses its password: that login is tried again, until a session is
// open or a generous bound passes. A connection refused while the role
// is surely alive fails the test.
func (w *pgWorld) shortSession(t *testing.T, planted *[]string) *pgx.Conn {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		start := time.Now() // the role is made after this, to live shortTTL
		env := w.login(t, "short")
		*planted = append(*planted, env["PGPASSWORD"])
		c, err := pgx.Connect(context.Background(), env["DATABASE_URL"])
		switch {
		case err == nil:
			return c
		case time.Since(start) < shortTTL:
			t.Fatalf("the job cannot connect with a live short-lived role: %v", err)
		case time.Now().After(deadline):
			t.Fatalf("no session opened with a short-lived role before it expired, in tries until %s: %v", deadline.Format(time.TimeOnly), err)
		}
		t.Logf("the short-lived role expired before the session opened (%v); logging in again", err)
	}
}

func sessionGone(t *testing.T, c *pgx.Conn) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := c.Exec(context.Background(), "SELECT 1"); err != nil {
			return
		}
	}
	t.Fatal("the job's open session survived revocation")
}

// The whole database flow with the real binary, on both stores: a job gets
// a role, connects with the DSN and migrates; renewal, leases revoke, a leak
// report, scan --revoke and exec's end each end a role and its sessions;
// faults answer with their cause and leave nothing behind.
func TestPostgresRoles(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			w := startPGWorld(t, backend)
			w.apply(t, w.pg.Creation())
			ctx := context.Background()
			var planted []string

			// Login, connect, migrate; the session stays open.
			env := w.login(t, "migrate")
			planted = append(planted, env["PGPASSWORD"])
			if env["PGDATABASE"] != w.pg.Database || !strings.HasPrefix(env["PGPASSWORD"], "mfyp_") {
				t.Fatalf("PGDATABASE %s, password %.9s…", env["PGDATABASE"], env["PGPASSWORD"])
			}
			job, err := pgx.Connect(ctx, env["DATABASE_URL"])
			if err != nil {
				t.Fatalf("the job cannot connect: %v", err)
			}
			defer job.Close(ctx)
			for _, q := range []string{"CREATE TABLE accounts (id int PRIMARY KEY)", "INSERT INTO accounts VALUES (1)"} {
				if _, err := job.Exec(ctx, q); err != nil {
					t.Fatalf("migration: %v", err)
				}
			}
			role := w.waitRoles(t, 1)[0]
			if role != env["PGUSER"] {
				t.Fatalf("role %s, PGUSER %s", role, env["PGUSER"])
			}
			// Renewal moves VALID UNTIL.
			before := roleValidUntil(t, w.pg, role)
			time.Sleep(1100 * time.Millisecond)
			c := w.n.client(t)
			r, _ := http.NewRequest("POST", w.n.url+"/v1/token/renew", nil)
			r.Header.Set("Authorization", "Bearer "+env["MAYFLY_TOKEN"])
			resp, err := c.Do(r)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("renew: %v %v", resp, err)
			}
			resp.Body.Close()
			if after := roleValidUntil(t, w.pg, role); !after.After(before) {
				t.Fatalf("VALID UNTIL %v after renewal, was %v", after, before)
			}
			// leases revoke: the session ends, the role goes.
			if _, e, code := run(t, w.admin, "", "leases", "revoke", "--lease-id", leaseOf(t, role)); code != 0 {
				t.Fatalf("leases revoke: %s", e)
			}
			sessionGone(t, job)
			w.waitRoles(t, 0)
			if c2, err := pgx.Connect(ctx, env["DATABASE_URL"]); err == nil {
				c2.Close(ctx)
				t.Fatal("the job connects after revocation")
			}

			// A leak report with the password: its lease ends, the role goes.
			env = w.login(t, "migrate")
			planted = append(planted, env["PGPASSWORD"])
			job2, err := pgx.Connect(ctx, env["DATABASE_URL"])
			if err != nil {
				t.Fatal(err)
			}
			defer job2.Close(ctx)
			code, body := w.n.req(t, c, "POST", "/v1/leaks", "found in a log: "+env["DATABASE_URL"]+"\n")
			if code != 200 || !strings.Contains(body, leaseOf(t, env["PGUSER"])) {
				t.Fatalf("leak report: %d %s", code, body)
			}
			sessionGone(t, job2)
			w.waitRoles(t, 0)

			// scan --revoke finds the password in a file.
			env = w.login(t, "migrate")
			planted = append(planted, env["PGPASSWORD"])
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "deploy.env"), []byte("DATABASE_URL="+env["DATABASE_URL"]+"\n"), 0o600)
			out, e, code := run(t, w.admin, "", "scan", "--revoke", dir)
			if code != 1 || !strings.Contains(out+e, "1 revoked") || strings.Contains(out+e, env["PGPASSWORD"]) {
				t.Fatalf("scan --revoke: %d %s %s", code, out, e)
			}
			w.waitRoles(t, 0)

			// exec: the command gets PG*, its output is masked, and the
			// role goes when it ends.
			out, e, code = run(t, w.job, "", "exec", "--grant", "migrate", "--id-token-file", w.idFile(t), "--",
				"sh", "-c", `psql -qAtc "INSERT INTO accounts VALUES (2); SELECT count(*) FROM accounts; SELECT current_user" && echo "pw=$PGPASSWORD"`)
			if code != 0 || !strings.Contains(out, "2\nmayfly_") || !strings.Contains(out, "pw=") || strings.Contains(out, "pw=mfyp_") {
				t.Fatalf("exec: %d %q %s", code, out, e)
			}
			w.waitRoles(t, 0)

			// Expiry: the lease ends by itself, and so do the role and
			// its open session (VALID UNTIL alone would keep the session).
			job3 := w.shortSession(t, &planted)
			defer job3.Close(ctx)
			sessionGone(t, job3)
			w.waitRoles(t, 0)

			// Faults: a clear answer naming the cause, no role left.
			for _, f := range []struct{ grant, says string }{
				{"broken", "upstream_refused"},
				{"unstored", "upstream_misconfigured"},
				{"down", "upstream_unavailable"},
			} {
				_, e, code := run(t, w.job, "", "login", "--grant", f.grant, "--id-token-file", w.idFile(t))
				if code == 0 || !strings.Contains(e, f.says) {
					t.Fatalf("login %s: %d %s", f.grant, code, e)
				}
			}
			if got := w.pg.Roles(t, "broken-db"); len(got) != 0 {
				t.Fatalf("a failed creation left roles: %v", got)
			}
			// Audited: the refusals and the revocations; no password anywhere.
			out, e, code = run(t, w.admin, "", "audit", "export")
			if code != 0 {
				t.Fatalf("audit export: %s", e)
			}
			for _, want := range []string{`"upstream_refused`, `"upstream_misconfigured`, `"upstream_unavailable`, `"credential.revoke"`} {
				if !strings.Contains(out, want) {
					t.Errorf("no audit entry with %s", want)
				}
			}
			// The server stops before its log is read (its output is
			// written by another goroutine while it runs).
			w.n.cmd.Process.Signal(os.Interrupt)
			w.n.cmd.Wait()
			for _, p := range planted {
				if strings.Contains(out, p) || strings.Contains(w.n.logs.String(), p) {
					t.Fatal("a minted password is in the audit log or the server's log")
				}
			}
			if strings.Contains(out, w.pg.AdminDSN) || strings.Contains(w.n.logs.String(), w.pg.AdminDSN) {
				t.Fatal("the admin DSN is in the audit log or the server's log")
			}
		})
	}
}

func roleValidUntil(t *testing.T, s *pgroletest.Server, role string) time.Time {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v time.Time
	if err := c.QueryRow(ctx, "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A kill -9 after the role is made but before its record says so leaves no
// role behind once the server is back; nor does a role whose record is
// lost. The creation statements commit the role and then stall, so the
// server is killed exactly in that window. On both stores.
func TestPostgresRoleKillNine(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) { testPostgresRoleKillNine(t, backend) })
	}
}

func testPostgresRoleKillNine(t *testing.T, backend string) {
	w := startPGWorld(t, backend)
	w.apply(t, w.pg.Creation()+" COMMIT; SELECT pg_sleep(20);")
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(t, w.job, "", "login", "--grant", "migrate", "--id-token-file", w.idFile(t))
	}()
	role := w.waitRoles(t, 1)[0]
	w.n.cmd.Process.Signal(syscall.SIGKILL)
	w.n.cmd.Wait()
	<-done
	// A role of mayfly's form for this upstream that no record knows (its
	// record lost, say with a restored store).
	orphan := pgsql.RoleName("lse_0123456789abcdef01234567", w.pg.Upstream)
	super, err := pgx.Connect(context.Background(), w.pg.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	if _, err := super.Exec(context.Background(), "CREATE ROLE "+pgsql.QuoteIdent(orphan)+" LOGIN IN ROLE "+w.pg.Group); err != nil {
		t.Fatal(err)
	}
	if got := w.pg.Roles(t, w.pg.Upstream); len(got) != 2 {
		t.Fatalf("before the restart: %v (want %s and the orphan)", got, role)
	}
	w.start(t)
	w.waitRoles(t, 0)
	// The role is dropped first, then its record and entry are written:
	// the entry may follow the roles' end by a commit.
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _, _ = run(t, w.admin, "", "audit", "export")
		if strings.Contains(out, "left pending") {
			break
		}
		if time.Now().After(deadline) {
			t.Error("the revocation of the crash's leftover is not audited as such")
			break
		}
	}
	var entries int
	for _, line := range strings.Split(out, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil {
			entries++
		}
	}
	if entries == 0 {
		t.Fatal("audit export printed no entries")
	}
}
