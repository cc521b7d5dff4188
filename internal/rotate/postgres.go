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
// ALTER ROLE and the write of the new value happen together: the role's
// password changes only if the new value was stored (the statement runs in
// a transaction committed after the store write), so a failure at any
// step leaves the current password working.
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

// keyValueDSN reports whether s starts like libpq's key=value form.
func keyValueDSN(s string) bool {
	k, _, ok := strings.Cut(strings.TrimSpace(s), "=")
	switch strings.TrimSpace(k) {
	case "host", "hostaddr", "port", "dbname", "user", "password", "sslmode", "service", "connect_timeout":
		return ok
	}
	return false
}

func (p postgresRotator) Rotate(ctx context.Context, secretName string, current []byte, commit func(context.Context, []byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	pw := newPassword()
	next, err := withPassword(current, p.cfg.Role, pw)
	if err != nil {
		return err
	}
	defer clear(next)
	var admin []byte
	if p.cfg.AdminDSNSecret == secretName {
		admin = bytes.Clone(current) // the role changes its own password
	} else if admin, err = p.reveal(ctx, p.cfg.AdminDSNSecret); err != nil {
		return fmt.Errorf("admin DSN secret %s: %w", p.cfg.AdminDSNSecret, err)
	}
	cc, err := pgx.ParseConfig(string(admin))
	clear(admin)
	if err != nil {
		// pgx's error quotes the DSN (password masked); say less.
		return fmt.Errorf("admin DSN secret %s: not a PostgreSQL connection string", p.cfg.AdminDSNSecret)
	}
	if err := sameServers(current, &cc.Config); err != nil {
		return fmt.Errorf("admin DSN secret %s: %w", p.cfg.AdminDSNSecret, err)
	}
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > p.timeout {
		cc.ConnectTimeout = p.timeout
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect with admin DSN secret %s: %w", p.cfg.AdminDSNSecret, err)
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
	if err := commit(ctx, next); err != nil {
		return err // rolled back: the current password still works
	}
	if err := tx.Commit(ctx); err != nil {
		// The new value is stored but the role may still have the old
		// password: store the current value again so that what mayfly
		// injects works, and fail so a retry comes soon.
		if rerr := commit(context.WithoutCancel(ctx), current); rerr != nil {
			return fmt.Errorf("ALTER ROLE not confirmed (%v), and storing the previous value back failed: %w", err, rerr)
		}
		return fmt.Errorf("ALTER ROLE not confirmed, previous value stored back: %w", err)
	}
	return nil
}
