package rotate

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// pgFixture is a role of the test's own on the machine's PostgreSQL,
// dropped (sessions first) when the test ends.
type pgFixture struct {
	admin string // the test DSN (a superuser)
	conn  *pgx.Conn
}

func newPG(t *testing.T) *pgFixture {
	t.Helper()
	dsn := storetest.PostgresDSN(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return &pgFixture{admin: dsn, conn: c}
}

func (p *pgFixture) role(t *testing.T, name, password string) {
	t.Helper()
	if _, err := p.conn.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgx.Identifier{name}.Sanitize(), password)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.conn.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, name)
		p.conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
	})
}

func (p *pgFixture) verifier(t *testing.T, role string) string {
	t.Helper()
	var v string
	if err := p.conn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, role).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// dsnFor is the test DSN with another user and password.
func (p *pgFixture) dsnFor(t *testing.T, role, pw string) string {
	u, err := url.Parse(p.admin)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, pw)
	return u.String()
}

func TestPostgresPassword(t *testing.T) {
	pg := newPG(t)
	suffix := strings.ToLower(rand.Text()[:10])

	// The checker against PostgreSQL's own hashing first, so that it can
	// be trusted with mayfly's.
	control := "mayfly_rot_control_" + suffix
	pg.role(t, control, "control-pw-"+suffix)
	if !pgroletest.SCRAMAccepts(t, pg.verifier(t, control), "control-pw-"+suffix) || pgroletest.SCRAMAccepts(t, pg.verifier(t, control), "other") {
		t.Fatal("the SCRAM checker disagrees with PostgreSQL")
	}

	tests := []struct {
		name  string
		role  string
		form  string // "url" or "bare"
		self  bool   // the role changes its own password
		fault string // "" | "no role" | "store fails" | "entry fails"
	}{
		{"URL value, admin DSN", "mayfly_rot_" + suffix, "url", false, ""},
		{"bare password, admin DSN", "mayfly_rot_bare_" + suffix, "bare", false, ""},
		{"its own password", "mayfly_rot_self_" + suffix, "url", true, ""},
		{"role needing quotes", `mayfly rot"; DROP ROLE x; --` + suffix, "url", false, ""},
		{"role does not exist", "mayfly_rot_ghost_" + suffix, "url", false, "no role"},
		{"new value cannot be stored", "mayfly_rot_store_" + suffix, "url", false, "store fails"},
		{"outcome entry cannot be written", "mayfly_rot_entry_" + suffix, "url", false, "entry fails"},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					bb := storetest.SQLite(t)
					if b.Name != "sqlite" {
						bb = storetest.Postgres(t)
					}
					r := newRig(t, bb, nil, key(t))
					role := fmt.Sprintf("%s%d%s", tt.role[:min(len(tt.role), 50)], i, b.Name[:1])
					oldPW := "old-" + rand.Text()
					if tt.fault != "no role" {
						pg.role(t, role, oldPW)
					}
					value := pg.dsnFor(t, role, oldPW)
					if tt.form == "bare" {
						value = oldPW
					}
					admin := "pg-admin"
					if tt.self {
						admin = "app-db"
					} else {
						r.put(t, "pg-admin", []byte(pg.admin), "")
					}
					r.put(t, "app-db", []byte(value), fmt.Sprintf(`{"every":"24h","grace":"10m","via":{"postgres_password":{"admin_dsn_secret":%q,"role":%q}}}`, admin, role))
					switch tt.fault {
					case "store fails":
						r.m.cfg.Vault = failingPut{r.vault}
					case "entry fails":
						r.log.limit = len(r.log.evs) + 1 // the started entry only
					}
					var before string
					var inFlight *pgx.Conn
					if tt.fault != "no role" {
						before = pg.verifier(t, role)
						// A session opened with the old password, in flight
						// across the rotation.
						c, err := pgx.Connect(ctx, pg.dsnFor(t, role, oldPW))
						if err != nil {
							t.Fatal(err)
						}
						defer c.Close(ctx)
						inFlight = c
					}

					res, err := r.m.Rotate(ctx, "app-db", "alice", "")
					if tt.fault != "" {
						if !errors.Is(err, ErrFailed) {
							t.Fatalf("err = %v, want ErrFailed", err)
						}
						if r.value(t, "app-db") != value {
							t.Fatal("a failed rotation changed the stored value")
						}
						if tt.fault == "store fails" && (pg.verifier(t, role) != before || !pgroletest.SCRAMAccepts(t, before, oldPW)) {
							t.Fatal("the role's password changed although the new value was not stored")
						}
						if st, _ := r.m.Get(ctx, "app-db"); st.Failures != 1 || st.LastError == "" || strings.Contains(st.LastError, oldPW) {
							t.Fatalf("failure state = %+v", st)
						}
						if tt.fault == "entry fails" {
							// The role has the new password (its ALTER ROLE
							// committed), kept staged; once the log takes
							// entries, the next attempt puts it in use.
							staged, _, err := r.vault.RevealPending(ctx, "app-db")
							if err != nil {
								t.Fatalf("the new value is not staged: %v", err)
							}
							r.log.limit = 0
							r.clock.add(time.Hour) // past the failure's backoff
							if _, err := r.m.Rotate(ctx, "app-db", "alice", ""); err != nil {
								t.Fatal(err)
							}
							pw, _ := passwordIn(staged)
							if r.value(t, "app-db") != string(staged) || !pgroletest.SCRAMAccepts(t, pg.verifier(t, role), pw) {
								t.Fatal("the next attempt did not put the staged value in use")
							}
							if j := r.log.json(t); !strings.Contains(j, `"resumed":true`) {
								t.Fatalf("the settling attempt's entry does not say so: %s", j)
							}
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					next := r.value(t, "app-db")
					newPW := next
					if tt.form == "url" {
						u, err := url.Parse(next)
						if err != nil || u.User.Username() != role {
							t.Fatalf("new value is not a URL for %s: %v", role, err)
						}
						newPW, _ = u.User.Password()
						if strings.Replace(next, newPW, oldPW, 1) != value {
							t.Fatal("the new URL differs from the old in more than the password")
						}
					}
					after := pg.verifier(t, role)
					if !pgroletest.SCRAMAccepts(t, after, newPW) || pgroletest.SCRAMAccepts(t, after, oldPW) {
						t.Fatal("PostgreSQL does not hold the new password")
					}
					// The new value logs in; the session opened with the
					// old one is still served; the old value is still kept
					// by mayfly for the grace period.
					dsn := next
					if tt.form == "bare" {
						dsn = pg.dsnFor(t, role, next)
					}
					c, err := pgx.Connect(ctx, dsn)
					if err != nil {
						t.Fatalf("log in with the new value: %v", err)
					}
					var who string
					c.QueryRow(ctx, `SELECT current_user`).Scan(&who)
					c.Close(ctx)
					if who != role {
						t.Fatalf("logged in as %q", who)
					}
					if err := inFlight.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != role {
						t.Fatalf("in-flight session after rotation: %v", err)
					}
					prev, _, err := r.vault.RevealPrevious(ctx, "app-db")
					if err != nil || string(prev) != value || res.GraceEnd.Sub(r.clock.Now()) != 10*time.Minute {
						t.Fatalf("previous during grace: %v, grace end %v", err, res.GraceEnd)
					}
					// Neither password reached the audit log or pg_stat_activity's
					// statement text (the verifier is sent, not the password).
					j := r.log.json(t)
					if strings.Contains(j, newPW) || strings.Contains(j, oldPW) {
						t.Fatal("a password in the audit log")
					}
					var n int
					pg.conn.QueryRow(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE strpos(query, $1) > 0`, newPW).Scan(&n)
					if n != 0 {
						t.Fatal("the new password is in a statement PostgreSQL shows")
					}
					// A second rotation works from the rotated value.
					if _, err := r.m.Rotate(ctx, "app-db", "alice", ""); err != nil {
						t.Fatalf("second rotation: %v", err)
					}
					if pgroletest.SCRAMAccepts(t, pg.verifier(t, role), newPW) {
						t.Fatal("second rotation left the password")
					}
				})
			}
		})
	}
}

// fakePG accepts PostgreSQL connections, asks for a cleartext password and
// hands back what the client sent: a server of an operator's choosing.
func fakePG(t *testing.T) (addr string, got <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var n uint32
					if binary.Read(br, binary.BigEndian, &n) != nil || n < 8 || n > 10000 {
						return
					}
					body := make([]byte, n-4)
					if _, err := io.ReadFull(br, body); err != nil {
						return
					}
					if code := binary.BigEndian.Uint32(body[:4]); code == 80877103 || code == 80877104 {
						c.Write([]byte{'N'}) // no TLS, no GSS
						continue
					}
					break // the startup message
				}
				c.Write([]byte{'R', 0, 0, 0, 8, 0, 0, 0, 3}) // AuthenticationCleartextPassword
				typ, err := br.ReadByte()
				if err != nil || typ != 'p' {
					return
				}
				var n uint32
				binary.Read(br, binary.BigEndian, &n)
				pw := make([]byte, n-4)
				io.ReadFull(br, pw)
				ch <- strings.TrimRight(string(pw), "\x00")
			}(c)
		}
	}()
	return l.Addr().String(), ch
}

// A rotated URL may name only the admin DSN's server: else the new
// password, set on the admin DSN's server, would be stored for another one
// and sent there when the secret is used (an operator wrote the URL; the
// admin DSN is an admin's). Each case is refused before any connection, the
// value and the role's password unchanged, and nothing reaches the other
// server.
func TestPostgresPasswordStaysOnItsServer(t *testing.T) {
	pg := newPG(t)
	suffix := strings.ToLower(rand.Text()[:10])
	evil, got := fakePG(t)
	evilURL := func(role, pw string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/db?sslmode=disable", role, pw, evil)
	}
	tests := []struct {
		name  string
		value func(role, pw string) string // the rotated secret's value
		admin string                       // the admin DSN secret's value; "" the real one
	}{
		{"URL at another server", evilURL, ""},
		{"another server in a query parameter", func(role, pw string) string {
			u, _ := url.Parse(pg.dsnFor(t, role, pw))
			q := u.Query()
			h, p, _ := net.SplitHostPort(evil)
			q.Set("host", h)
			q.Set("port", p)
			u.RawQuery = q.Encode()
			return u.String()
		}, ""},
		{"admin DSN moved to another server", func(role, pw string) string { return pg.dsnFor(t, role, pw) }, evilURL("postgres", "operator-known")},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, storetest.SQLite(t), nil, key(t))
			role := fmt.Sprintf("mayfly_rot_host_%s%d", suffix, i)
			oldPW := "old-" + rand.Text()
			pg.role(t, role, oldPW)
			before := pg.verifier(t, role)
			admin := pg.admin
			if tt.admin != "" {
				admin = tt.admin
			}
			r.put(t, "pg-admin", []byte(admin), "")
			value := tt.value(role, oldPW)
			r.put(t, "app-db", []byte(value), fmt.Sprintf(`{"every":"24h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":%q}}}`, role))
			_, err := r.m.Rotate(ctx, "app-db", "alice", "")
			if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "names a server") {
				t.Fatalf("err = %v, want a refusal naming the server", err)
			}
			if r.value(t, "app-db") != value || pg.verifier(t, role) != before {
				t.Fatal("a refused rotation changed the value or the role's password")
			}
			select {
			case <-got:
				t.Fatal("the other server was sent a password")
			default:
			}
		})
	}
}

func TestWithPassword(t *testing.T) {
	tests := []struct {
		cur, role, want, wantErr string
	}{
		{"hunter2", "app", "NEWPW", ""},
		{"postgres://app:old@db:5432/x?sslmode=require", "app", "postgres://app:NEWPW@db:5432/x?sslmode=require", ""},
		{"postgresql://app@db/x", "app", "postgresql://app:NEWPW@db/x", ""},
		{"postgres://other:old@db/x", "app", "", `is for user "other"`},
		{"postgres://db/x", "app", "", "does not parse as one with a user"},
		{"postgres://app:old@db:badport/x%zz", "app", "", "does not parse"},
		{"host=db user=app password=old dbname=x", "app", "", "key=value connection string"},
		{" password = old host=db", "app", "", "key=value connection string"},
		// Any keyword libpq or pgx reads may come first: taken for a bare
		// password, the connection string was replaced by one.
		{"application_name=ci host=db user=app password=old dbname=x", "app", "", "key=value connection string"},
		{"target_session_attrs=read-write host=db user=app password=old", "app", "", "key=value connection string"},
		{"options='-c search_path=app' host=db password=old", "app", "", "key=value connection string"},
		{"sslrootcert=system sslmode=verify-full host=db user=app password=old", "app", "", "key=value connection string"},
		{"pass=word", "app", "NEWPW", ""},
	}
	for _, tt := range tests {
		got, err := withPassword([]byte(tt.cur), tt.role, "NEWPW")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), ":old") || strings.Contains(err.Error(), "= old") || strings.Contains(err.Error(), "=old") {
				t.Errorf("%s: err = %v, want %q without the password", tt.cur, err, tt.wantErr)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: = %q %v, want %q", tt.cur, got, err, tt.want)
		}
	}
}

// failingPut is the vault with a store write that fails, to show that the
// role's password then stays as it was.
type failingPut struct{ Vault }

func (failingPut) PutKeepingNoted(context.Context, string, []byte, int, time.Time, *store.Note) (int, error) {
	return 0, errors.New("store unavailable")
}

func (failingPut) Stage(context.Context, string, []byte, int) (int, error) {
	return 0, errors.New("store unavailable")
}

// A postgres_password rotation killed (kill -9, OOM, power loss) at any
// step never leaves a password the role does not have in use for longer
// than it takes the dead node's claim to run out: killed once the new
// value is staged (its ALTER ROLE uncommitted, so PostgreSQL rolls it
// back), the old value stays in use and works; killed once the ALTER
// ROLE committed (or had its commit's reply lost), the new value is
// staged, and the attempt that takes over sets it again and puts it in
// use. Before, the new value was stored in use before the ALTER ROLE
// committed: a kill in between left mayfly injecting a password the role
// did not have, for good when the role administered itself. The child
// process below is the server, killed at the step named.
func TestPostgresRotationKilled(t *testing.T) {
	if at := os.Getenv("MAYFLY_ROTATE_CRASH_CHILD"); at != "" {
		rotateAndDie(at)
		return
	}
	pg := newPG(t)
	suffix := strings.ToLower(rand.Text()[:10])
	tests := []struct {
		name string
		at   string // "stage": after the new value is staged; "promote": after the ALTER ROLE committed
		self bool   // the role changes its own password
	}{
		{"after staging", "stage", false},
		{"after the ALTER ROLE committed", "promote", false},
		{"after the ALTER ROLE committed, its own password", "promote", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
			db, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			k := key(t)
			r := newRig(t, storetest.Backend{Name: "postgres", DB: db}, nil, k)
			role := fmt.Sprintf("mayfly_rot_kill_%s%d", suffix, i)
			oldPW := "old-" + rand.Text()
			pg.role(t, role, oldPW)
			value := pg.dsnFor(t, role, oldPW)
			admin := "pg-admin"
			if tt.self {
				admin = "app-db"
			} else {
				r.put(t, "pg-admin", []byte(pg.admin), "")
			}
			r.put(t, "app-db", []byte(value), fmt.Sprintf(`{"every":"24h","via":{"postgres_password":{"admin_dsn_secret":%q,"role":%q}}}`, admin, role))

			killed := filepath.Join(t.TempDir(), "killed")
			cmd := exec.Command(os.Args[0], "-test.run=^TestPostgresRotationKilled$", "-test.count=1")
			cmd.Env = append(os.Environ(), "MAYFLY_ROTATE_CRASH_CHILD="+tt.at, "CHILD_STORE="+dsn, "CHILD_KEY="+hex.EncodeToString(k), "CHILD_KILLED="+killed)
			out, err := cmd.CombinedOutput()
			if _, serr := os.Stat(killed); serr != nil || err == nil {
				t.Fatalf("the child was not killed at %s: %v\n%s", tt.at, err, out)
			}
			time.Sleep(200 * time.Millisecond) // PostgreSQL notices the dead connection
			staged, _, err := r.vault.RevealPending(ctx, "app-db")
			if err != nil {
				t.Fatalf("the new value is not staged: %v", err)
			}
			stagedPW, _ := passwordIn(staged)
			if r.value(t, "app-db") != value {
				t.Fatal("the new value was put in use by an attempt that did not finish")
			}
			if tt.at == "stage" && !pgroletest.SCRAMAccepts(t, pg.verifier(t, role), oldPW) {
				t.Fatal("killed before its ALTER ROLE committed, the role lost the password in use")
			}
			if tt.at == "promote" && !pgroletest.SCRAMAccepts(t, pg.verifier(t, role), stagedPW) {
				t.Fatal("the child was not killed after its ALTER ROLE committed")
			}
			// The dead node's claim runs out: the schedule takes over.
			r.clock.add(time.Hour)
			if n, err := r.m.RunDue(ctx); n != 1 || err != nil {
				t.Fatalf("the interrupted rotation was not taken over: %d %v", n, err)
			}
			if got := r.value(t, "app-db"); got != string(staged) {
				t.Fatal("the attempt that took over did not put the staged value in use")
			}
			if v := pg.verifier(t, role); !pgroletest.SCRAMAccepts(t, v, stagedPW) || pgroletest.SCRAMAccepts(t, v, oldPW) {
				t.Fatal("the role does not have the password in use")
			}
			if _, _, err := r.vault.RevealPending(ctx, "app-db"); !errors.Is(err, secret.ErrNotFound) {
				t.Fatalf("a staged value is left: %v", err)
			}
			if j := r.log.json(t); !strings.Contains(j, `"resumed":true`) || strings.Contains(j, stagedPW) || strings.Contains(j, oldPW) {
				t.Fatalf("the settling attempt's entry: %s", j)
			}
		})
	}
}

// killAt is the vault of a server killed at one step of a rotation.
type killAt struct {
	Vault
	at     string // "stage" or "promote"
	killed string // the file written just before
}

func (k killAt) die() {
	os.WriteFile(k.killed, nil, 0o600)
	p, _ := os.FindProcess(os.Getpid())
	p.Kill()
	time.Sleep(time.Minute)
}

func (k killAt) Stage(ctx context.Context, name string, v []byte, base int) (int, error) {
	ver, err := k.Vault.Stage(ctx, name, v, base)
	if err == nil && k.at == "stage" {
		k.die()
	}
	return ver, err
}

func (k killAt) Promote(ctx context.Context, name string, version, base int, keepUntil time.Time, n *store.Note) error {
	if k.at == "promote" {
		k.die()
	}
	return k.Vault.Promote(ctx, name, version, base, keepUntil, n)
}

// rotateAndDie is the child: a server rotating app-db, killed at the step
// at names.
func rotateAndDie(at string) {
	db, err := store.Open(ctx, store.Config{PostgresDSN: os.Getenv("CHILD_STORE")})
	if err != nil {
		os.Exit(3)
	}
	k, _ := hex.DecodeString(os.Getenv("CHILD_KEY"))
	v, err := secret.Open(ctx, db, k, secret.Options{RecordCacheTTL: -1, RetireGrace: -1})
	if err != nil {
		os.Exit(3)
	}
	m, err := New(Config{Store: db, Vault: killAt{Vault: v, at: at, killed: os.Getenv("CHILD_KILLED")}, Audit: &entries{}, Timeout: 20 * time.Second})
	if err != nil {
		os.Exit(3)
	}
	m.Rotate(ctx, "app-db", "alice", "")
	os.Exit(4)
}
