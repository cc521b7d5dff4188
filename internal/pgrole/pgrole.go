// Package pgrole mints PostgreSQL roles that live and die with a lease
// (SPEC section 9): it creates a role per lease from the policy's creation
// statements in one transaction on the upstream, extends its VALID UNTIL on
// renewal, and on revocation stops new logins, terminates the role's
// sessions and runs the revocation statements. A sweep drops the roles of
// an upstream that no record knows about (what a crash left).
//
// It never keeps a minted password after handing it back, never writes one
// into an error, and never drops a role that is not of its own name form
// (mayfly_<24 hex>_<8 hex>) and upstream. It does not decide which lease
// gets a role, nor record anything: the caller records first and creates
// second, so a crash between the two leaves a record the sweep honours, never
// a role nobody knows.
package pgrole

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Upstream is one postgres upstream of the policy with its admin DSN read
// from the stored secret.
type Upstream struct {
	Name       string
	AdminDSN   string // a role with CREATEROLE (and pg_signal_backend, see Revoke)
	Creation   string // statements; {{name}}, {{password}} (its SCRAM verifier), {{expires}}
	Revocation string // statements; {{name}}; default DROP ROLE IF EXISTS
	// MadeOn is the server (serverOf) the roles were made on, when known:
	// creation refuses, and revocation does not take a missing role as
	// gone, when AdminDSN now names another.
	MadeOn string
}

// serverOf names the servers (host:port, comma-separated) a DSN connects
// to: roles live per server, whatever the database.
func serverOf(upstream, dsn string) (string, error) {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors may quote the DSN, which holds a password.
		return "", &Error{Upstream: upstream, Op: "read admin DSN", Cause: Misconfigured, Err: errors.New("the admin DSN secret does not parse as a PostgreSQL connection string")}
	}
	return servers(c), nil
}

func servers(c *pgconn.Config) string {
	s := []string{net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))}
	for _, f := range c.Fallbacks {
		if a := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))); a != s[len(s)-1] {
			s = append(s, a) // prefer's plain fallback is the same server
		}
	}
	return strings.Join(s, ",")
}

// moved reports whether u's admin DSN (in p) names another server than
// the one u's roles were made on.
func (u Upstream) moved(p *pool) bool { return u.MadeOn != "" && u.MadeOn != servers(p.cfg) }

// DefaultRevocation drops the role; roles that own objects need the
// policy's own statements (REASSIGN OWNED / DROP OWNED first).
const DefaultRevocation = `DROP ROLE IF EXISTS "{{name}}";`

// Credential is a minted role. Password is the only copy.
type Credential struct {
	Upstream string
	Name     string
	Password string
	Host     string // as the admin DSN names it
	Port     uint16
	Database string
	SSLMode  string // the admin DSN's own sslmode (see sslSettings)
	// SSLRootCert is "system" when the admin DSN says so (the platform's
	// CAs); a file path of the server's means nothing where the job runs.
	SSLRootCert string
	Expires     time.Time
}

// DSN is the connection URL a job uses.
func (c *Credential) DSN() string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.Name, c.Password), Path: "/" + c.Database}
	q := url.Values{}
	if strings.HasPrefix(c.Host, "/") {
		q.Set("host", c.Host) // a Unix socket directory
		q.Set("port", strconv.Itoa(int(c.Port)))
	} else {
		u.Host = net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	}
	if c.SSLMode != "" {
		q.Set("sslmode", c.SSLMode)
	}
	if c.SSLRootCert != "" {
		q.Set("sslrootcert", c.SSLRootCert)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Cause classifies a failure for the exchange's answer.
type Cause string

const (
	// Unreachable: the upstream could not be reached or timed out (503).
	Unreachable Cause = "upstream_unavailable"
	// Refused: the upstream ran the statements and refused them (502).
	Refused Cause = "upstream_refused"
	// Misconfigured: the admin DSN or the statements cannot be used (500).
	Misconfigured Cause = "upstream_misconfigured"
)

// Error is a failure on an upstream. Its text names the upstream, what was
// being done and PostgreSQL's own message, never a password.
type Error struct {
	Upstream string
	Op       string // "create role", "renew role", "revoke role", "sweep"
	Cause    Cause
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("pgrole: %s on upstream %q: %s: %v", e.Op, e.Upstream, e.Cause, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Options tune Roles.
type Options struct {
	// MaxConns caps the admin connections per upstream (default 8).
	MaxConns int32
	// ConnectTimeout bounds each connection attempt (default 5s).
	ConnectTimeout time.Duration
	// StatementTimeout bounds each statement on the upstream (default 15s).
	StatementTimeout time.Duration
	Logger           *slog.Logger
}

// Roles mints and revokes roles. It keeps one small pool of admin
// connections per upstream; safe for concurrent use.
type Roles struct {
	opts Options

	mu    sync.Mutex
	pools map[string]*pool // by upstream name
}

type pool struct {
	dsnSum [32]byte // a changed admin DSN (rotated secret) replaces the pool
	p      *pgxpool.Pool
	cfg    *pgconn.Config
}

// New returns Roles. Close it to close its connections.
func New(opts Options) *Roles {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 5 * time.Second
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Roles{opts: opts, pools: map[string]*pool{}}
}

// Close closes every admin connection.
func (r *Roles) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range r.pools {
		p.p.Close()
		delete(r.pools, name)
	}
}

func (r *Roles) pool(u Upstream, op string) (*pool, error) {
	sum := sha256.Sum256([]byte(u.AdminDSN))
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pools[u.Name]; p != nil {
		if p.dsnSum == sum {
			return p, nil
		}
		p.p.Close()
		delete(r.pools, u.Name)
	}
	cfg, err := pgxpool.ParseConfig(u.AdminDSN)
	if err != nil {
		// pgx's parse errors may quote the DSN, which holds a password.
		return nil, &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New("the admin DSN secret does not parse as a PostgreSQL connection string")}
	}
	cfg.MaxConns = r.opts.MaxConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.ConnConfig.ConnectTimeout = r.opts.ConnectTimeout
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	ms := strconv.FormatInt(r.opts.StatementTimeout.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = ms
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = ms
	cfg.ConnConfig.RuntimeParams["application_name"] = "mayfly"
	// The simple protocol runs a policy's several statements in one call;
	// no statement cache needed for the few fixed ones of our own.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New("the admin DSN cannot be used: " + redact(err.Error(), u.AdminDSN))}
	}
	if hosts := pgsql.UnverifiedHosts(&cfg.ConnConfig.Config); len(hosts) > 0 {
		// Said once per admin DSN, as its pool is made: the admin role's
		// session could be taken over on the path.
		r.opts.Logger.Warn("pgrole: the upstream's certificate is not verified: anyone on the network path can read and change the admin connection; give the admin DSN sslmode=verify-full (with sslrootcert=FILE or sslrootcert=system)",
			"upstream", u.Name, "hosts", strings.Join(hosts, ","))
	}
	np := &pool{dsnSum: sum, p: p, cfg: &cfg.ConnConfig.Config}
	r.pools[u.Name] = np
	return np, nil
}

// Forget closes the connections of upstreams not in keep (a policy
// version removed them).
func (r *Roles) Forget(keep func(upstream string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range r.pools {
		if !keep(name) {
			p.p.Close()
			delete(r.pools, name)
		}
	}
}

// Prepare names the role of leaseID on u and draws its password, without
// touching the upstream, so the caller can record the credential (its
// keyed hash) before Create makes it.
func (r *Roles) Prepare(u Upstream, leaseID string, expires time.Time) (*Credential, error) {
	p, err := r.pool(u, "create role")
	if err != nil {
		return nil, err
	}
	if u.moved(p) {
		// Its record names the planned server; one made elsewhere would
		// not be revoked there.
		return nil, &Error{Upstream: u.Name, Op: "create role", Cause: Unreachable, Err: errors.New("the admin DSN secret changed server while the role was being planned; try again")}
	}
	pw, err := token.NewPassword()
	if err != nil {
		return nil, &Error{Upstream: u.Name, Op: "create role", Cause: Misconfigured, Err: err}
	}
	mode, root := sslSettings(u.AdminDSN)
	if mode == "" {
		mode = sslMode(p.cfg)
	}
	c := &Credential{Upstream: u.Name, Name: pgsql.RoleName(leaseID, u.Name), Password: pw, Host: p.cfg.Host, Port: p.cfg.Port,
		Database: p.cfg.Database, SSLMode: mode, SSLRootCert: root, Expires: expires.UTC().Truncate(time.Second)}
	return c, nil
}

// sslSettings reads sslmode and sslrootcert as the admin DSN writes them,
// so the job's DSN checks the server as strictly as the admin's does
// (pgx's TLS settings cannot tell verify-ca from require, nor allow from
// disable). require with a root certificate verifies the chain in libpq
// and pgx alike, so the job gets verify-ca then. mode is "" when the DSN
// names none (pgx's default or PGSSLMODE apply); root is only "system".
func sslSettings(dsn string) (mode, root string) {
	var get func(string) string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", ""
		}
		get = u.Query().Get
	} else {
		kv := keywordValues(dsn)
		get = func(k string) string { return kv[k] }
	}
	mode, root = get("sslmode"), get("sslrootcert")
	if mode == "require" && root != "" {
		mode = "verify-ca"
	}
	if root != "system" {
		root = ""
	}
	return mode, root
}

// keywordValues reads libpq's keyword=value form as pgx does: values
// single-quoted or not, backslash escaping the next character. It reads
// what pgx has already accepted, so it does not report errors.
func keywordValues(s string) map[string]string {
	const space = " \t\n\r\v\f"
	out := map[string]string{}
	s = strings.TrimLeft(s, space)
	for len(s) > 0 {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		s = strings.TrimLeft(rest, space)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		var v strings.Builder
		for len(s) > 0 {
			c := s[0]
			if (quoted && c == '\'') || (!quoted && strings.IndexByte(space, c) >= 0) {
				s = s[1:]
				break
			}
			if c == '\\' && len(s) > 1 {
				s = s[1:]
				c = s[0]
			}
			v.WriteByte(c)
			s = s[1:]
		}
		out[strings.TrimSpace(k)] = v.String()
		s = strings.TrimLeft(s, space)
	}
	return out
}

// sslMode is what pgx made of a DSN that names no sslmode.
func sslMode(c *pgconn.Config) string {
	plainFallback := false
	for _, f := range c.Fallbacks {
		if f.TLSConfig == nil {
			plainFallback = true
		}
	}
	switch {
	case c.TLSConfig == nil:
		return "disable"
	case plainFallback:
		return "prefer"
	case c.TLSConfig.InsecureSkipVerify:
		return "require"
	}
	return "verify-full"
}

// Create makes c's role on u: the creation statements, a check that they
// made the role and that it can log in, and VALID UNTIL (set again by
// mayfly, so a template that forgets it still gets the lease's expiry), all
// sent at once and run by PostgreSQL as one implicit transaction: one round
// trip, and on any failure nothing is left behind.
func (r *Roles) Create(ctx context.Context, u Upstream, c *Credential) error {
	const op = "create role"
	p, err := r.pool(u, op)
	if err != nil {
		return err
	}
	sql, err := pgsql.Render(u.Creation, pgsql.Values{Name: c.Name, Password: c.Password, Expires: c.Expires})
	if err != nil {
		return &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: fmt.Errorf("creation statements: %w", err)}
	}
	// "\n;" ends the policy's last statement even after a trailing
	// "-- comment"; an empty statement is harmless.
	sql += "\n;\n" + checkRole(c.Name) +
		"ALTER ROLE " + pgsql.QuoteIdent(c.Name) + " VALID UNTIL " + pgsql.QuoteLiteral(c.Expires.Format(pgsql.ExpiresFormat)) + ";\n"
	if _, err := p.p.Exec(ctx, sql); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == codeNoRole || pe.Code == codeNoLogin || pe.Code == codePrivileged) {
			return &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New(pe.Message)}
		}
		return r.classify(u, op, fmt.Errorf("creation statements: %w", err), c.Password)
	}
	return nil
}

// SQLSTATEs of our own check (class MY: not PostgreSQL's).
const (
	codeNoRole     = "MYF01"
	codeNoLogin    = "MYF02"
	codePrivileged = "MYF03"
)

// checkRole is a statement that fails, with one of our codes, unless the
// role exists, can log in, and is not privileged: not SUPERUSER,
// CREATEROLE (its roles would outlive the lease, and before PostgreSQL 16
// it may join almost any role), REPLICATION or BYPASSRLS, not a member
// (directly or not) of a role that is, or of the predefined roles that
// read or write the server's files or run programs on it, and holding no
// ADMIN OPTION, its own or a role's it joins (memberships it granted would
// outlive it). The creation
// statements are the policy's, and the admin role may well be a superuser:
// what they made is checked, not what they say.
func checkRole(name string) string {
	lit := pgsql.QuoteLiteral(name)
	const privileged = "(p.rolsuper OR p.rolcreaterole OR p.rolreplication OR p.rolbypassrls OR " +
		"p.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'))"
	return "DO $mayfly_check$ DECLARE bad text; BEGIN\n" +
		"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + lit + ") THEN\n" +
		"  RAISE EXCEPTION 'the creation statements did not create the role {{name}}' USING ERRCODE = '" + codeNoRole + "';\n" +
		"ELSIF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = " + lit + ") THEN\n" +
		"  RAISE EXCEPTION 'the creation statements made a role that cannot log in (add LOGIN)' USING ERRCODE = '" + codeNoLogin + "';\n" +
		"END IF;\n" +
		"SELECT concat_ws(', ', CASE WHEN rolsuper THEN 'SUPERUSER' END, CASE WHEN rolcreaterole THEN 'CREATEROLE' END,\n" +
		"  CASE WHEN rolreplication THEN 'REPLICATION' END, CASE WHEN rolbypassrls THEN 'BYPASSRLS' END) INTO bad\n" +
		"  FROM pg_roles WHERE rolname = " + lit + ";\n" +
		"IF bad <> '' THEN\n" +
		"  RAISE EXCEPTION 'the creation statements made a role with %, which a job never gets', bad USING ERRCODE = '" + codePrivileged + "';\n" +
		"END IF;\n" +
		"SELECT string_agg(p.rolname, ', ' ORDER BY p.rolname) INTO bad FROM pg_roles p\n" +
		"  WHERE p.rolname <> " + lit + " AND " + privileged + " AND pg_has_role(" + lit + ", p.oid, 'MEMBER');\n" +
		"IF bad IS NOT NULL THEN\n" +
		"  RAISE EXCEPTION 'the creation statements made the role a member of %, a privileged role a job never joins', bad USING ERRCODE = '" + codePrivileged + "';\n" +
		"END IF;\n" +
		// Held through a role it joins too: a member may grant what any
		// of its roles administers.
		"SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) INTO bad FROM pg_roles r\n" +
		"  WHERE r.rolname <> " + lit + " AND pg_has_role(" + lit + ", r.oid, 'MEMBER WITH ADMIN OPTION');\n" +
		"IF bad IS NOT NULL THEN\n" +
		"  RAISE EXCEPTION 'the creation statements gave the role ADMIN OPTION on %: it could hand that role to others, beyond its lease', bad USING ERRCODE = '" + codePrivileged + "';\n" +
		"END IF; END $mayfly_check$;\n"
}

// renewRole is the statement that moves name's VALID UNTIL to expires
// unless it is already later: two nodes renewing one lease at once may
// land in either order, and the lease keeps the later expiry. The lock
// (one per role, held to commit) makes the look and the change one step
// against another renewal; a role that is gone fails as ALTER ROLE does.
func renewRole(name string, expires time.Time) string {
	lit, until := pgsql.QuoteLiteral(name), pgsql.QuoteLiteral(expires.UTC().Format(pgsql.ExpiresFormat))
	return "DO $mayfly_renew$ BEGIN\n" +
		"PERFORM pg_advisory_xact_lock(hashtext('mayfly renew ' || " + lit + "));\n" +
		"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = " + lit + " AND rolvaliduntil >= " + until + "::timestamptz) THEN\n" +
		"  ALTER ROLE " + pgsql.QuoteIdent(name) + " VALID UNTIL " + until + ";\n" +
		"END IF; END $mayfly_renew$;"
}

// Renew moves the role's VALID UNTIL to expires, never earlier.
func (r *Roles) Renew(ctx context.Context, u Upstream, name string, expires time.Time) error {
	const op = "renew role"
	if !pgsql.ValidName(name) {
		return &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New("not a role name mayfly makes")}
	}
	p, err := r.pool(u, op)
	if err != nil {
		return err
	}
	_, err = p.p.Exec(ctx, renewRole(name, expires))
	if err != nil {
		return r.classify(u, op, err, "")
	}
	return nil
}

// Revoke ends the role name on u: it can no longer log in (NOLOGIN, VALID
// UNTIL in the past), its sessions are terminated and waited for, and the
// revocation statements run in one transaction. A role that is already gone
// is revoked, unless u's admin DSN now names another server than u.MadeOn. Revoke first grants the role to the admin (CREATEROLE may),
// which lets it terminate the role's sessions and REASSIGN OWNED BY it.
// A role the statements leave (it owns an object, or they do not drop it)
// is stripped of everything it holds (strip).
func (r *Roles) Revoke(ctx context.Context, u Upstream, name string) error {
	_, err := r.RevokeMany(ctx, u, []string{name})
	return err
}

// RevokeMany is Revoke for many roles of one upstream in a few round trips:
// one statement stops every login, one terminates every session, one
// transaction runs every revocation. If that transaction fails, each role is
// tried alone, so one bad role does not hold up the others. It returns the
// roles revoked, and the first error.
func (r *Roles) RevokeMany(ctx context.Context, u Upstream, names []string) ([]string, error) {
	const op = "revoke role"
	for _, n := range names {
		if !pgsql.ValidName(n) {
			return nil, &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New("not a role name mayfly makes")}
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	revocation := u.Revocation
	if strings.TrimSpace(revocation) == "" {
		revocation = DefaultRevocation
	}
	stmts := make([]string, len(names))
	for i, n := range names {
		s, err := pgsql.Render(revocation, pgsql.Values{Name: n, Expires: time.Unix(0, 0)})
		if err != nil {
			return nil, &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: fmt.Errorf("revocation statements: %w", err)}
		}
		stmts[i] = s
	}
	p, err := r.pool(u, op)
	if err != nil {
		return nil, err
	}
	conn, err := p.p.Acquire(ctx)
	if err != nil {
		return nil, r.classify(u, op, err, "")
	}
	defer conn.Release()
	// Which of them exist: the rest are revoked already.
	rows, err := conn.Query(ctx, "SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", names)
	if err != nil {
		return nil, r.classify(u, op, err, "")
	}
	present, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, r.classify(u, op, err, "")
	}
	if u.moved(p) && len(present) < len(names) {
		// Missing here says nothing of the server that made them.
		return nil, &Error{Upstream: u.Name, Op: op, Cause: Misconfigured, Err: errors.New("the admin DSN secret now names another server than the one the role was made on, and the role is not there: it is not taken as revoked (point the secret back, or drop the role on its server)")}
	}
	if len(present) == 0 {
		return names, nil // gone already
	}
	isPresent := make(map[string]bool, len(present))
	for _, n := range present {
		isPresent[n] = true
	}
	// No new session from here on: committed before the terminations.
	// Membership in the role lets a CREATEROLE admin end its sessions and
	// REASSIGN OWNED BY it; where the admin may not grant it (a policy's
	// own arrangement), logins stop all the same and the steps below say
	// what is missing.
	var stop, join strings.Builder
	for _, n := range present {
		stop.WriteString("ALTER ROLE " + pgsql.QuoteIdent(n) + " NOLOGIN VALID UNTIL '-infinity';\n")
		join.WriteString("GRANT " + pgsql.QuoteIdent(n) + " TO CURRENT_USER;\n")
	}
	if _, err := conn.Exec(ctx, stop.String()+join.String()); err != nil {
		if _, err := conn.Exec(ctx, stop.String()); err != nil {
			return nil, r.classify(u, op, fmt.Errorf("stop logins: %w", err), "")
		}
		r.opts.Logger.Warn("pgrole: the admin role could not join the roles it revokes", "upstream", u.Name)
	}
	if err := terminate(ctx, conn.Conn(), present); err != nil {
		return nil, r.classify(u, op, fmt.Errorf("terminate sessions (the admin role needs pg_signal_backend or membership in the role): %w", err), "")
	}
	var run []string
	for i, n := range names {
		if isPresent[n] {
			run = append(run, stmts[i])
		}
	}
	var done []string
	var first error
	if err := runRevocations(ctx, conn.Conn(), run); err == nil {
		done = names
	} else if len(present) == 1 {
		first = r.classify(u, op, fmt.Errorf("revocation statements: %w", err), "")
	} else {
		for i, n := range names {
			if !isPresent[n] {
				done = append(done, n)
				continue
			}
			if err := runRevocations(ctx, conn.Conn(), stmts[i:i+1]); err != nil {
				if first == nil {
					first = r.classify(u, op, fmt.Errorf("revocation statements for %s: %w", n, err), "")
				}
				continue
			}
			done = append(done, n)
		}
	}
	// Whatever the statements did, a role they left (one that owns an
	// object cannot be dropped, or they do not drop) must hold nothing it
	// was granted. Stripped after them, not before: a revocation may rely
	// on the role's memberships (REASSIGN OWNED to a role the admin
	// reaches only through it).
	if first == nil && revocation == DefaultRevocation {
		return done, nil // every role dropped: nothing left to strip
	}
	if err := strip(ctx, conn.Conn(), present); err != nil {
		return nil, r.classify(u, op, fmt.Errorf("strip the roles the revocation statements left: %w", err), "")
	}
	return done, first
}

// codeNotStripped is our SQLSTATE for a surviving role that still holds
// something after strip.
const codeNotStripped = "MYF04"

// strip leaves the roles of names that still exist holding nothing: every
// role granted to them is revoked (in the grantor's name where PostgreSQL
// 16 records several), their SECURITY DEFINER routines in this database
// run as their caller from now on, and every privilege on what they own
// here (routines, tables, views, sequences) is revoked from everyone else,
// PUBLIC included. What they own is neither dropped (a job's data) nor
// handed to a more privileged role (REASSIGN OWNED to the admin would
// give a routine or view the admin's rights): it stays theirs, usable by
// nobody. Their objects in other databases are out of this connection's
// reach; the revocation statements (REASSIGN OWNED, DROP OWNED) are the
// way to settle those. It fails, with codeNotStripped, unless nothing is
// left: the revocation is then retried.
func strip(ctx context.Context, conn *pgx.Conn, names []string) error {
	lits := make([]string, len(names))
	for i, n := range names {
		lits[i] = pgsql.QuoteLiteral(n)
	}
	roles := "(SELECT oid FROM pg_roles WHERE rolname IN (" + strings.Join(lits, ", ") + "))"
	q := "DO $mayfly_strip$ DECLARE r record; g record; left_over text; BEGIN\n" +
		"FOR r IN SELECT m.roleid::regrole::text AS granted, m.member::regrole::text AS member FROM pg_auth_members m WHERE m.member IN " + roles + " LOOP\n" +
		"  EXECUTE format('REVOKE %s FROM %s CASCADE', r.granted, r.member);\n" +
		"END LOOP;\n" +
		// PostgreSQL 16 keeps one membership per grantor, and REVOKE
		// without GRANTED BY removes the current user's only.
		"FOR r IN SELECT m.roleid::regrole::text AS granted, m.member::regrole::text AS member, m.grantor::regrole::text AS grantor FROM pg_auth_members m WHERE m.member IN " + roles + " LOOP\n" +
		"  BEGIN EXECUTE format('REVOKE %s FROM %s GRANTED BY %s CASCADE', r.granted, r.member, r.grantor);\n" +
		"  EXCEPTION WHEN insufficient_privilege OR feature_not_supported THEN NULL; END;\n" +
		"END LOOP;\n" +
		"FOR r IN SELECT p.oid::regprocedure::text AS f, p.prosecdef, p.proowner, coalesce(p.proacl, acldefault('f', p.proowner)) AS acl FROM pg_proc p WHERE p.proowner IN " + roles + " LOOP\n" +
		"  IF r.prosecdef THEN EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', r.f); END IF;\n" +
		"  FOR g IN SELECT DISTINCT a.grantee FROM aclexplode(r.acl) a WHERE a.grantee <> r.proowner LOOP\n" +
		"    EXECUTE format('REVOKE ALL ON ROUTINE %s FROM %s CASCADE', r.f, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);\n" +
		"  END LOOP;\n" +
		"END LOOP;\n" +
		"FOR r IN SELECT c.oid::regclass::text AS t, c.relowner, c.relacl AS acl FROM pg_class c WHERE c.relowner IN " + roles + " AND c.relacl IS NOT NULL LOOP\n" +
		"  FOR g IN SELECT DISTINCT a.grantee FROM aclexplode(r.acl) a WHERE a.grantee <> r.relowner LOOP\n" +
		"    EXECUTE format('REVOKE ALL ON TABLE %s FROM %s CASCADE', r.t, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);\n" +
		"  END LOOP;\n" +
		"END LOOP;\n" +
		// Checked, not assumed: a REVOKE the admin may not make only warns.
		"SELECT string_agg(DISTINCT what, '; ') INTO left_over FROM (\n" +
		"  SELECT format('%s is still a member of %s', m.member::regrole, m.roleid::regrole) AS what FROM pg_auth_members m WHERE m.member IN " + roles + "\n" +
		"  UNION ALL SELECT format('%s is still SECURITY DEFINER', p.oid::regprocedure) FROM pg_proc p WHERE p.proowner IN " + roles + " AND p.prosecdef\n" +
		"  UNION ALL SELECT format('others may still use %s', p.oid::regprocedure) FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE p.proowner IN " + roles + " AND a.grantee <> p.proowner\n" +
		"  UNION ALL SELECT format('others may still use %s', c.oid::regclass) FROM pg_class c, aclexplode(c.relacl) a WHERE c.relowner IN " + roles + " AND a.grantee <> c.relowner) w;\n" +
		"IF left_over IS NOT NULL THEN\n" +
		"  RAISE EXCEPTION 'the admin role could not take from the surviving role what it holds: %', left_over USING ERRCODE = '" + codeNotStripped + "';\n" +
		"END IF; END $mayfly_strip$;"
	_, err := conn.Exec(ctx, q)
	return err
}

// terminate ends the sessions of names and waits (up to 5 s each) until
// they are gone.
func terminate(ctx context.Context, conn *pgx.Conn, names []string) error {
	const q = "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()"
	var n int64
	return conn.QueryRow(ctx, q, names).Scan(&n)
}

// runRevocations sends the statements at once: PostgreSQL runs them as one
// implicit transaction, all or nothing, in one round trip.
func runRevocations(ctx context.Context, conn *pgx.Conn, stmts []string) error {
	_, err := conn.Exec(ctx, strings.Join(stmts, "\n;\n"))
	return err
}

// Sweep revokes the roles of u that known does not vouch for: roles of
// mayfly's name form and of this upstream only. Roles are listed first and
// known is asked after, so a role made meanwhile (recorded before it was
// made) is always vouched for. It returns the roles dropped.
func (r *Roles) Sweep(ctx context.Context, u Upstream, known func(ctx context.Context, names []string) (map[string]bool, error)) ([]string, error) {
	const op = "sweep"
	p, err := r.pool(u, op)
	if err != nil {
		return nil, err
	}
	rows, err := p.p.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'mayfly\_%\_'||$1`, pgsql.UpstreamSuffix(u.Name))
	if err != nil {
		return nil, r.classify(u, op, err, "")
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, r.classify(u, op, err, "")
	}
	var ours []string
	for _, n := range all {
		if pgsql.OwnedBy(n, u.Name) {
			ours = append(ours, n)
		}
	}
	if len(ours) == 0 {
		return nil, nil
	}
	k, err := known(ctx, ours)
	if err != nil {
		return nil, fmt.Errorf("pgrole: sweep upstream %q: which roles are known: %w", u.Name, err)
	}
	var orphans []string
	for _, n := range ours {
		if !k[n] {
			orphans = append(orphans, n)
		}
	}
	if len(orphans) == 0 {
		return nil, nil
	}
	r.opts.Logger.Info("dropping roles no lease knows", "upstream", u.Name, "roles", len(orphans))
	return r.RevokeMany(ctx, u, orphans)
}

// classify wraps err as an *Error with its cause, its text cleaned of
// password (and of any password-shaped value).
func (r *Roles) classify(u Upstream, op string, err error, password string) error {
	cause := Refused
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		switch {
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "57P"), pe.Code == "57014", pe.Code == "55P03":
			cause = Unreachable // connection, resources, shutdown, timeouts
		case pe.Code == "28000", pe.Code == "28P01", pe.Code == "3D000":
			cause = Misconfigured // the admin DSN's role or database
		}
	case pgconn.Timeout(err), errors.Is(err, context.DeadlineExceeded):
		cause = Unreachable
	default:
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) || pgconn.SafeToRetry(err) {
			cause = Unreachable
		}
		var ne net.Error
		if errors.As(err, &ne) {
			cause = Unreachable
		}
	}
	msg := redact(err.Error(), u.AdminDSN)
	if password != "" {
		msg = strings.ReplaceAll(msg, password, token.PasswordHint(password))
	}
	for _, p := range token.FindPasswords([]byte(msg)) {
		msg = strings.ReplaceAll(msg, p.Password, token.PasswordHint(p.Password))
	}
	return &Error{Upstream: u.Name, Op: op, Cause: cause, Err: &cleanErr{msg: msg, err: err}}
}

// cleanErr carries a redacted message while keeping the original for
// errors.Is/As (context cancellation, PgError codes).
type cleanErr struct {
	msg string
	err error
}

func (e *cleanErr) Error() string { return e.msg }
func (e *cleanErr) Unwrap() error { return e.err }

// redact removes the admin DSN's password from s.
func redact(s, dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err == nil && cfg.Password != "" {
		s = strings.ReplaceAll(s, cfg.Password, "…")
	}
	return s
}
