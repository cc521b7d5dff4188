package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AdminSession is a human signed in through the identity provider: the
// keyed hash of the session value, never the value.
type AdminSession struct {
	ID         string // public id, for listing and revoking ("ses_…")
	Hash       [32]byte
	Name       string // who, as the role claim or email names them
	Subject    string // the IdP's sub
	Role       string
	Via        string // "browser" or "cli"
	Source     string // address it was signed in from
	CreatedAt  time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time // zero while live
	LastUsedAt time.Time // to within a minute; zero: never
}

const sessionCols = `id, token_hash, name, subject, role, via, source, created_at, expires_at, revoked_at, last_used_at`

func scanSession(r scanner) (AdminSession, error) {
	var s AdminSession
	var h []byte
	var at, exp int64
	var rev, used sql.NullInt64
	if err := r.Scan(&s.ID, &h, &s.Name, &s.Subject, &s.Role, &s.Via, &s.Source, &at, &exp, &rev, &used); err != nil {
		return AdminSession{}, err
	}
	copy(s.Hash[:], h)
	s.CreatedAt, s.ExpiresAt, s.RevokedAt, s.LastUsedAt = fromNanos(at), fromNanos(exp), nullNanos(rev), nullNanos(used)
	return s, nil
}

// CreateAdminSessionNoted stores a new session with its audit record n in
// the same transaction.
func (db *DB) CreateAdminSessionNoted(ctx context.Context, s AdminSession, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := db.exec(ctx, tx, `INSERT INTO admin_sessions (id, token_hash, name, subject, role, via, source, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.Hash[:], s.Name, s.Subject, s.Role, s.Via, s.Source, nanos(s.CreatedAt), nanos(s.ExpiresAt)); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{})
	})
	if err != nil {
		return fmt.Errorf("store: create admin session: %w", err)
	}
	return nil
}

// AdminSessionByHash finds an unrevoked session by its keyed hash; whether
// it has expired is the caller's to judge.
func (db *DB) AdminSessionByHash(ctx context.Context, hash [32]byte) (AdminSession, error) {
	s, err := scanSession(db.queryRow(ctx, `SELECT `+sessionCols+` FROM admin_sessions WHERE token_hash = ? AND revoked_at IS NULL`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return AdminSession{}, ErrNotFound
	}
	if err != nil {
		return AdminSession{}, fmt.Errorf("store: find admin session: %w", err)
	}
	return s, nil
}

// AdminSessionsByHashes finds the unrevoked sessions of many keyed hashes,
// one query per HashBatch hashes (a leak report's). Hashes without one are
// absent; whether a session has expired is the caller's to check.
func (db *DB) AdminSessionsByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]AdminSession, error) {
	out := make(map[[32]byte]AdminSession)
	err := inBatches(hashes, func(in string, args []any) error {
		ss, err := queryAll(ctx, db, scanSession, `SELECT `+sessionCols+` FROM admin_sessions WHERE revoked_at IS NULL AND token_hash IN (`+in+`)`, args...)
		for _, s := range ss {
			out[s.Hash] = s
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: find admin sessions by hash: %w", err)
	}
	return out, nil
}

// ListAdminSessions returns the sessions that had not expired at now
// (live or revoked), newest first.
func (db *DB) ListAdminSessions(ctx context.Context, now time.Time) ([]AdminSession, error) {
	out, err := queryAll(ctx, db, scanSession, `SELECT `+sessionCols+` FROM admin_sessions WHERE expires_at > ? ORDER BY created_at DESC, id LIMIT 10000`, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("store: list admin sessions: %w", err)
	}
	return out, nil
}

// TouchAdminSession records that session id authenticated a call at at.
func (db *DB) TouchAdminSession(ctx context.Context, id string, at time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `UPDATE admin_sessions SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
			nanos(at), id, nanos(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: touch admin session: %w", err)
	}
	return nil
}

// RevokeAdminSessionNoted revokes a live session by id with its audit
// record n; ErrNotFound when none is live.
func (db *DB) RevokeAdminSessionNoted(ctx context.Context, id string, at time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE admin_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND expires_at > ?`,
			nanos(at), id, nanos(at)); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{})
	})
	if err != nil {
		return fmt.Errorf("store: revoke admin session: %w", err)
	}
	return nil
}

// SessionsLive says which sessions are live at At: not revoked, not past
// their expiry, made after MadeAfter (the admin_session_ttl in force) and
// made or used after UsedAfter (admin_session_idle).
type SessionsLive struct {
	At, MadeAfter, UsedAfter time.Time
}

// endSessionsSQL is the statement of EndAdminSessionsNoted for that many
// roles: it finds the subject's sessions through admin_sessions_subject
// (migration 14), not by reading every session.
func endSessionsSQL(roles int) string {
	in := strings.Repeat("?, ", roles-1) + "?"
	return `UPDATE admin_sessions SET revoked_at = ? WHERE subject = ? AND role IN (` + in + `) AND revoked_at IS NULL AND expires_at > ? AND created_at > ?` +
		` AND (created_at > ? OR last_used_at > ?) RETURNING ` + sessionCols
}

// endAdminsSQL is the statement that ends, with the sessions, the live
// admin tokens of those roles that the subject made.
func endAdminsSQL(roles int) string {
	in := strings.Repeat("?, ", roles-1) + "?"
	return `UPDATE admin_tokens SET revoked_at = ? WHERE creator_subject = ? AND role IN (` + in + `) AND revoked_at IS NULL` +
		` AND (expires_at IS NULL OR expires_at > ?) RETURNING ` + adminCols
}

// EndAdminSessionsNoted revokes every session of subject whose role is
// one of roles and that is live as live says, and every live admin token
// of those roles that subject made (AdminToken.CreatorSubject): a role the
// subject no longer has is not kept through a token they made with it.
// The audit records n makes from Changes.EndedSessions and
// Changes.EndedAdmins (the rows as they were) are in the same
// transaction. It returns what it ended: however many there are, not a
// listing's first page.
func (db *DB) EndAdminSessionsNoted(ctx context.Context, subject string, roles []string, live SessionsLive, n *Note) ([]AdminSession, []AdminToken, error) {
	if len(roles) == 0 {
		return nil, nil, nil
	}
	args := []any{nanos(live.At), subject}
	targs := []any{nanos(live.At), subject}
	for _, r := range roles {
		args = append(args, r)
		targs = append(targs, r)
	}
	args = append(args, nanos(live.At), nanos(live.MadeAfter), nanos(live.UsedAfter), nanos(live.UsedAfter))
	targs = append(targs, nanos(live.At))
	q, tq := endSessionsSQL(len(roles)), endAdminsSQL(len(roles))
	var ended []AdminSession
	var admins []AdminToken
	err := db.tx(ctx, func(tx *sql.Tx) error {
		ended, admins = nil, nil // a group commit may run this twice
		rows, err := tx.QueryContext(ctx, db.Rebind(q), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			s, err := scanSession(rows)
			if err != nil {
				rows.Close()
				return err
			}
			ended = append(ended, s)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if rows, err = tx.QueryContext(ctx, db.Rebind(tq), targs...); err != nil {
			return err
		}
		for rows.Next() {
			t, err := scanAdmin(rows)
			if err != nil {
				rows.Close()
				return err
			}
			admins = append(admins, t)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ended) == 0 && len(admins) == 0 {
			return nil
		}
		return db.note(ctx, tx, n, Changes{EndedSessions: ended, EndedAdmins: admins})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: end admin sessions: %w", err)
	}
	return ended, admins, nil
}

// SweepAdminSessions forgets sessions that expired before sessions, and
// sign-ins under way that expired before logins (nothing shows those: they
// go as soon as they expire, so that their number stays bounded by how
// many may be started within their lifetime).
func (db *DB) SweepAdminSessions(ctx context.Context, sessions, logins time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := db.exec(ctx, tx, `DELETE FROM admin_sessions WHERE expires_at < ?`, nanos(sessions)); err != nil {
			return err
		}
		_, err := db.exec(ctx, tx, `DELETE FROM admin_logins WHERE expires_at < ?`, nanos(logins))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: sweep admin sessions: %w", err)
	}
	return nil
}

// PutAdminLogin records a sign-in under way under the keyed hash of its
// key (a state or a one-time code): data is what the next step needs and
// holds no secret.
func (db *DB) PutAdminLogin(ctx context.Context, key [32]byte, kind string, data []byte, expires time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO admin_logins (key_hash, kind, data, expires_at) VALUES (?, ?, ?, ?)`, key[:], kind, data, nanos(expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put admin login: %w", err)
	}
	return nil
}

// TakeAdminLogin removes and returns the sign-in under way of kind under
// key, if it has not expired at now: each is taken at most once, across
// nodes. ErrNotFound when there is none (unknown, used or expired).
func (db *DB) TakeAdminLogin(ctx context.Context, key [32]byte, kind string, now time.Time) ([]byte, error) {
	var data []byte
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var exp int64
		err := db.txQueryRow(ctx, tx, `DELETE FROM admin_logins WHERE key_hash = ? AND kind = ? RETURNING data, expires_at`, key[:], kind).Scan(&data, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if exp <= nanos(now) {
			data = nil
			return nil
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("store: take admin login: %w", err)
	}
	if data == nil {
		return nil, ErrNotFound
	}
	return data, nil
}
