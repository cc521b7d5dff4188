package rotate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayfly-sh/mayfly/internal/pgsql"
)

// postgresRotator sets a new random password on a PostgreSQL role. The
// role's password and mayfly's store cannot commit together, so the new
// value is staged first (stored, not in use), then the ALTER ROLE
// commits, then the value is promoted (put in use, with its entry). A
// failure or a kill before the ALTER ROLE commits leaves the current
// password working and in use. One after it, or a commit whose reply was
// lost, leaves the new value staged while the role may have it: the next
// attempt (a dead node's claim runs out, then the schedule takes it over)
// settles it by setting that same staged value again and promoting it, so
// whichever password the role had, it ends with the one in use. (Probing
// which of the two the role accepts would need a login as the role, which
// pg_hba, NOLOGIN or CONNECT may refuse; setting it again needs only what
// every attempt needs.)
//
// The secret's value is either the bare password or a postgres:// URL whose
// user is the role; the new value keeps that form.
type postgresRotator struct {
	cfg     PostgresPassword
	reveal  func(ctx context.Context, name string) ([]byte, error)
	timeout time.Duration
}

// newPassword is 130 bits of randomness in base32: no character a DSN or a
// SQL literal has to escape.
func newPassword() string { return rand.Text() }

// withPassword returns the value holding pw in current's form: a
// postgres:// URL with that password (its user must be role), or pw.
func withPassword(current []byte, role, pw string) ([]byte, error) {
	s := string(current)
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		if keyValueDSN(s) {
			// Replacing it with a bare password would break every user of it.
			return nil, errors.New("the secret holds a key=value connection string: store a postgres:// URL or the bare password to rotate it")
		}
		return []byte(pw), nil
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return nil, errors.New("the secret's value starts like a postgres:// URL but does not parse as one with a user")
	}
	if u.User.Username() != role {
		return nil, fmt.Errorf("the secret's URL is for user %q, not the rotated role %q", u.User.Username(), role)
	}
	u.User = url.UserPassword(role, pw)
	return []byte(u.String()), nil
}

// sameServers refuses a rotated postgres:// URL that may connect to a
// server (host and port) the admin DSN does not: the new password is set
// on the admin DSN's server, and a value naming another would hand it to
// whoever answers there when the secret is used. A bare password names
// none. Both are read as pgx reads them, so a query parameter (?host=…)
// cannot name a server the URL's host part hides.
func sameServers(current []byte, admin *pgconn.Config) error {
	s := string(current)
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return nil
	}
	cc, err := pgconn.ParseConfig(s)
	if err != nil {
		return errors.New("the secret's URL is not a PostgreSQL connection string")
	}
	allowed := map[string]bool{}
	for _, a := range servers(admin) {
		allowed[a] = true
	}
	for _, a := range servers(cc) {
		if !allowed[a] {
			return errors.New("the secret's URL names a server (host and port) the admin DSN does not: the new password would reach a server it is not set on")
		}
	}
	return nil
}

// servers lists the host:port pairs a connection with c may try.
func servers(c *pgconn.Config) []string {
	s := []string{net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))}
	for _, f := range c.Fallbacks {
		s = append(s, net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))))
	}
	return s
}

// keyValueDSN reports whether s starts like libpq's key=value form: with
// any keyword libpq (PostgreSQL 18) or pgx reads, since a connection
// string may start with any of them, and one taken for a bare password is
// replaced by a password.
func keyValueDSN(s string) bool {
	k, _, ok := strings.Cut(strings.TrimSpace(s), "=")
	switch strings.TrimSpace(k) {
	case "host", "hostaddr", "port", "dbname", "database", "user", "password", "passfile", "require_auth",
		"channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
		"fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "replication", "gssencmode", "sslmode", "requiressl", "sslnegotiation",
		"sslcompression", "sslcert", "sslkey", "sslkeylogfile", "sslpassword", "sslcertmode", "sslrootcert",
		"sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version",
		"min_protocol_version", "max_protocol_version", "krbsrvname", "krbspn", "gsslib", "gssdelegation",
		"service", "servicefile", "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id",
		"oauth_client_secret", "oauth_scope", "statement_cache_capacity",
		"description_cache_capacity", "default_query_exec_mode", "min_read_buffer_size":
		return ok
	}
	return false
}

// passwordIn is the password a value holds: the bare password, or a
// postgres:// URL's (the forms withPassword writes).
func passwordIn(v []byte) (string, error) {
	s := string(v)
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return "", errors.New("the staged value does not parse as a URL with a user")
	}
	pw, ok := u.User.Password()
	if !ok {
		return "", errors.New("the staged value's URL holds no password")
	}
	return pw, nil
}

func (p postgresRotator) Rotate(ctx context.Context, secretName string, current []byte, w writer) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	next, resumed := w.pending, w.pending != nil
	var pw string
	if resumed {
		var err error
		if pw, err = passwordIn(next); err != nil {
			return err
		}
	} else {
		pw = newPassword()
		n, err := withPassword(current, p.cfg.Role, pw)
		if err != nil {
			return err
		}
		next = n
		defer clear(next)
	}
	// The admin DSNs to try, in order.
	var admins [][]byte
	defer func() {
		for _, a := range admins {
			clear(a)
		}
	}()
	if p.cfg.AdminDSNSecret == secretName {
		// The role changes its own password: with the current one, or,
		// when resuming, the staged one it may have already.
		admins = append(admins, bytes.Clone(current))
		if resumed {
			admins = append(admins, bytes.Clone(next))
		}
	} else {
		a, err := p.reveal(ctx, p.cfg.AdminDSNSecret)
		if err != nil {
			return fmt.Errorf("admin DSN secret %s: %w", p.cfg.AdminDSNSecret, err)
		}
		admins = append(admins, a)
	}
	conn, err := p.connect(ctx, admins, current, next)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The verifier, not pw: PostgreSQL's statement log and pg_stat_activity
	// never hold the password.
	verifier, err := pgsql.SCRAMVerifier(pw)
	if err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// PostgreSQL itself quotes the role (%I) and the verifier (%L): no
	// role name can end the statement or start another.
	var stmt string
	if err := tx.QueryRow(ctx, `SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)`, p.cfg.Role, verifier).Scan(&stmt); err != nil {
		return fmt.Errorf("quote ALTER ROLE: %w", err)
	}
	if _, err := tx.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("ALTER ROLE %s: %w", pgx.Identifier{p.cfg.Role}.Sanitize(), err)
	}
	if !resumed {
		if err := w.stage(ctx, next); err != nil {
			return err // rolled back: the current password still works
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// Committed or not, the current value stays in use and the new
		// one staged: the next attempt sets it again. (Storing the
		// current value back, as before, left the role with a password
		// nothing held when the commit had happened.)
		return fmt.Errorf("ALTER ROLE not confirmed, the new value stays staged for the next attempt: %w", err)
	}
	return w.promote(ctx)
}

// connect opens a connection with the first of admins that connects, each
// checked first against the servers current and next may name.
func (p postgresRotator) connect(ctx context.Context, admins [][]byte, current, next []byte) (*pgx.Conn, error) {
	var err error
	for _, admin := range admins {
		cc, perr := pgx.ParseConfig(string(admin))
		if perr != nil {
			// pgx's error quotes the DSN (password masked); say less.
			return nil, fmt.Errorf("admin DSN secret %s: not a PostgreSQL connection string", p.cfg.AdminDSNSecret)
		}
		for _, v := range [][]byte{current, next} {
			if serr := sameServers(v, &cc.Config); serr != nil {
				return nil, fmt.Errorf("admin DSN secret %s: %w", p.cfg.AdminDSNSecret, serr)
			}
		}
		if cc.ConnectTimeout == 0 || cc.ConnectTimeout > p.timeout {
			cc.ConnectTimeout = p.timeout
		}
		conn, cerr := pgx.ConnectConfig(ctx, cc)
		if cerr == nil {
			return conn, nil
		}
		err = fmt.Errorf("connect with admin DSN secret %s: %w", p.cfg.AdminDSNSecret, cerr)
	}
	return nil, err
}
