package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Minted credential states.
const (
	MintPending  = "pending"  // recorded, being created upstream
	MintLive     = "live"     // created and recorded
	MintRevoking = "revoking" // to be revoked upstream (retried until confirmed)
	MintRevoked  = "revoked"  // confirmed gone upstream
	MintRefused  = "refused"  // its tag did not verify: never acted on, left for an admin
)

// Minted is one credential mayfly minted upstream (SPEC section 9). It never
// holds the credential's value: Hash is its keyed hash and Sealed is
// encrypted by the caller.
type Minted struct {
	ID           string
	LeaseID      string // "" for a credential shared by a grant (deliver: gateway)
	Upstream     string
	Grant        string
	Kind         string
	ExternalName string // e.g. a role name; "" when the upstream names it
	Hash         []byte // keyed hash of the secret value; nil until created
	Params       []byte // what revoking needs that is not secret (JSON)
	Sealed       []byte // what revoking needs that is secret, sealed to the other fields (its tag when there is nothing secret); nil in records of earlier releases
	State        string
	CreatedAt    time.Time
	ExpiresAt    time.Time
	Reason       string // why it is being revoked
	Attempts     int64  // failed revocation attempts
	NextAttempt  time.Time
	LastError    string
	RevokedAt    time.Time
}

const mintedCols = `id, lease_id, upstream, grant_name, kind, external_name, value_hash, params, sealed, state, ` +
	`created_at, expires_at, revoke_reason, revoke_attempts, next_attempt_at, last_error, revoked_at`

func scanMinted(r scanner) (Minted, error) {
	var m Minted
	var created, expires, next int64
	var revoked sql.NullInt64
	err := r.Scan(&m.ID, &m.LeaseID, &m.Upstream, &m.Grant, &m.Kind, &m.ExternalName, &m.Hash, &m.Params, &m.Sealed, &m.State,
		&created, &expires, &m.Reason, &m.Attempts, &next, &m.LastError, &revoked)
	if err != nil {
		return m, err
	}
	m.CreatedAt, m.ExpiresAt, m.NextAttempt, m.RevokedAt = fromNanos(created), fromNanos(expires), fromNanos(next), nullNanos(revoked)
	return m, nil
}

// InsertMinted records a credential before it is created (state pending).
func (db *DB) InsertMinted(ctx context.Context, m Minted) error {
	if m.State == "" {
		m.State = MintPending
	}
	if m.Params == nil {
		m.Params = []byte{}
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO minted (`+mintedCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			m.ID, m.LeaseID, m.Upstream, m.Grant, m.Kind, m.ExternalName, nilIfEmpty(m.Hash), m.Params, nilIfEmpty(m.Sealed), m.State,
			nanos(m.CreatedAt), nanos(m.ExpiresAt), m.Reason, m.Attempts, nanos(m.NextAttempt), m.LastError, optNanos(m.RevokedAt))
		return err
	})
	if err != nil {
		if isUniqueViolation(err) {
			return ErrExists
		}
		return fmt.Errorf("store: record minted credential: %w", err)
	}
	return nil
}

func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// MintedCreated marks a pending credential live once created upstream, with
// its value's hash, its sealed revocation material and its own expiry. A
// credential already being revoked (its lease ended meanwhile) stays so and
// gets the material it needs. n, the creation's audit record, is written
// in the same transaction: when it fails nothing is recorded.
func (db *DB) MintedCreated(ctx context.Context, id string, hash, sealed []byte, expires time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound,
			`UPDATE minted SET value_hash = ?, sealed = ?, expires_at = ?, state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ? AND state IN (?, ?)`,
			nilIfEmpty(hash), nilIfEmpty(sealed), nanos(expires), MintPending, MintLive, id, MintPending, MintRevoking); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Minted: []string{id}})
	})
	if err != nil {
		if isUniqueViolation(err) {
			return ErrExists
		}
		return fmt.Errorf("store: minted credential created: %w", err)
	}
	return nil
}

// RevokeMinted marks credentials to be revoked (not yet revoked ones), by
// id or by lease, and returns how many it marked. By lease it leaves those
// still pending: they are being made (revoking one now would find nothing
// upstream, and record it revoked before it exists); the worker revokes
// each once made (its lease has ended), or once stale. It leaves each
// one's next attempt as it is: a pending or live credential has none
// unless a node's worker holds it (ClaimMinted), and clearing that claim
// let a second node revoke it again while the first was at it.
func (db *DB) RevokeMinted(ctx context.Context, ids, leaseIDs []string, reason string) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for _, set := range []struct {
			col    string
			vals   []string
			states []any
		}{{"id", ids, []any{MintPending, MintLive}}, {"lease_id", leaseIDs, []any{MintLive, MintLive}}} {
			for len(set.vals) > 0 {
				k := min(len(set.vals), HashBatch)
				args := []any{MintRevoking, reason}
				for _, v := range set.vals[:k] {
					args = append(args, v)
				}
				args = append(args, set.states...)
				res, err := db.exec(ctx, tx, `UPDATE minted SET state = ?, revoke_reason = ? WHERE `+set.col+` IN (`+
					strings.Repeat("?, ", k-1)+`?) AND state IN (?, ?)`, args...)
				if err != nil {
					return err
				}
				c, _ := res.RowsAffected()
				n += c
				set.vals = set.vals[k:]
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: revoke minted credentials: %w", err)
	}
	return n, nil
}

// RevokeSharedMinted marks the live shared credentials (deliver: gateway:
// no lease) of grants to be revoked, HashBatch grants a statement, and
// returns their ids: a grant a policy version removed has no lease for its
// shared credential to end with. One already marked is left as it is, so
// that every node may ask and the credential is marked once.
func (db *DB) RevokeSharedMinted(ctx context.Context, grants []string, reason string) ([]string, error) {
	var ids []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		ids = nil // a group commit may run this twice
		for rest := grants; len(rest) > 0; {
			k := min(len(rest), HashBatch)
			args := []any{MintRevoking, reason, MintLive}
			for _, g := range rest[:k] {
				args = append(args, g)
			}
			rows, err := tx.QueryContext(ctx, db.Rebind(`UPDATE minted SET state = ?, revoke_reason = ? WHERE lease_id = '' AND state = ? AND grant_name IN (`+
				strings.Repeat("?, ", k-1)+`?) RETURNING id`), args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
			}
			if err := rows.Close(); err != nil {
				return err
			}
			if err := rows.Err(); err != nil {
				return err
			}
			rest = rest[k:]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: revoke shared minted credentials: %w", err)
	}
	return ids, nil
}

// MintedDue returns credentials whose revocation is due at now, oldest
// attempt first: those marked revoking, those past their own expiry, those
// whose lease is revoked, expired or gone, and those still pending after
// staleBefore (a crash between recording and creating). One pending since
// staleBefore is being made: it is left until made (then live, and due by
// its lease) or stale, for revoking it now would find nothing upstream and
// record it revoked before it exists.
func (db *DB) MintedDue(ctx context.Context, now, staleBefore time.Time, limit int) ([]Minted, error) {
	n := nanos(now)
	out, err := queryAll(ctx, db, scanMinted, `SELECT m.`+strings.ReplaceAll(mintedCols, ", ", ", m.")+` FROM minted m LEFT JOIN leases l ON l.id = m.lease_id
WHERE m.state IN (?, ?, ?) AND m.next_attempt_at <= ? AND (
	(m.state = ? AND m.created_at < ?)
	OR (m.state <> ? AND (m.state = ? OR m.expires_at <= ?
		OR (m.lease_id <> '' AND (l.id IS NULL OR l.revoked_at IS NOT NULL OR l.expires_at <= ?)))))
ORDER BY m.next_attempt_at, m.id LIMIT ?`,
		MintPending, MintLive, MintRevoking, n, MintPending, nanos(staleBefore), MintPending, MintRevoking, n, n, limit)
	if err != nil {
		return nil, fmt.Errorf("store: minted credentials due: %w", err)
	}
	return out, nil
}

// MintedRevoked records that a credential is confirmed gone upstream; its
// sealed material is dropped. n, the revocation's audit record, is written
// in the same transaction: when it fails nothing is recorded, and the
// credential stays due for another attempt.
func (db *DB) MintedRevoked(ctx context.Context, id, reason string, at time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE minted SET state = ?, revoked_at = ?, sealed = NULL,
	revoke_reason = CASE WHEN revoke_reason = '' THEN ? ELSE revoke_reason END, last_error = '' WHERE id = ? AND state <> ?`,
			MintRevoked, nanos(at), reason, id, MintRevoked); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Minted: []string{id}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: minted credential revoked: %w", err)
	}
	return err
}

// MintedRevokeFailed records a failed revocation attempt and when to try
// again; the credential is marked revoking so the next try needs no other
// cause. n, the attempt's audit record, is written in the same
// transaction.
func (db *DB) MintedRevokeFailed(ctx context.Context, id, reason, lastErr string, next time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE minted SET state = ?, revoke_attempts = revoke_attempts + 1, next_attempt_at = ?, last_error = ?,
	revoke_reason = CASE WHEN revoke_reason = '' THEN ? ELSE revoke_reason END WHERE id = ? AND state <> ?`,
			MintRevoking, nanos(next), lastErr, reason, id, MintRevoked); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Minted: []string{id}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: minted credential revocation failed: %w", err)
	}
	return err
}

// MintedRefused marks a credential whose record does not verify (its tag
// fails under the seal key: changed in the store) as refused, with why in
// last_error: never acted on, never due again, so that one refusal has one
// audit entry (n, written in the same transaction) rather than one per
// retry. It stays, standing for its external name, until an admin removes
// it. A record already revoked or refused is ErrNotFound.
func (db *DB) MintedRefused(ctx context.Context, id, lastErr string, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE minted SET state = ?, last_error = ? WHERE id = ? AND state IN (?, ?, ?)`,
			MintRefused, lastErr, id, MintPending, MintLive, MintRevoking); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Minted: []string{id}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: minted credential refused: %w", err)
	}
	return err
}

// SetMintedExpiry records a live credential's new expiry (a renewal, or a
// replaced shared one retired early), with n, its audit record, in the
// same transaction.
func (db *DB) SetMintedExpiry(ctx context.Context, id string, expires time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE minted SET expires_at = ? WHERE id = ? AND state = ?`, nanos(expires), id, MintLive); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Minted: []string{id}})
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: minted credential expiry: %w", err)
	}
	return err
}

// MintedByHashes finds minted credentials by the keyed hashes of their
// values, HashBatch at a time. Hashes of nothing minted are absent.
func (db *DB) MintedByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]Minted, error) {
	out := make(map[[32]byte]Minted)
	err := inBatches(hashes, func(in string, args []any) error {
		ms, err := queryAll(ctx, db, scanMinted, `SELECT `+mintedCols+` FROM minted WHERE value_hash IN (`+in+`)`, args...)
		for _, m := range ms {
			if len(m.Hash) == 32 {
				out[[32]byte(m.Hash)] = m
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: find minted credentials by hash: %w", err)
	}
	return out, nil
}

// MintedByLease lists a lease's minted credentials, in creation order.
func (db *DB) MintedByLease(ctx context.Context, leaseID string) ([]Minted, error) {
	return db.listMinted(ctx, `WHERE lease_id = ? ORDER BY created_at, id`, leaseID)
}

// MintedByID finds one minted credential.
func (db *DB) MintedByID(ctx context.Context, id string) (Minted, error) {
	ms, err := db.listMinted(ctx, `WHERE id = ?`, id)
	if err != nil {
		return Minted{}, err
	}
	if len(ms) == 0 {
		return Minted{}, ErrNotFound
	}
	return ms[0], nil
}

func (db *DB) listMinted(ctx context.Context, where string, args ...any) ([]Minted, error) {
	out, err := queryAll(ctx, db, scanMinted, `SELECT `+mintedCols+` FROM minted `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list minted credentials: %w", err)
	}
	return out, nil
}

// SweepMinted deletes the rows of credentials revoked before t.
func (db *DB) SweepMinted(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `DELETE FROM minted WHERE state = ? AND revoked_at < ?`, MintRevoked, nanos(t))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: sweep minted credentials: %w", err)
	}
	return n, nil
}

// ClaimMinted takes a due credential for one revocation attempt: it moves
// its next attempt to until, only if nobody else did since it was read
// (next is what was read), so that nodes sharing a database do not revoke
// the same credential at once. It reports whether the claim was won.
func (db *DB) ClaimMinted(ctx context.Context, id string, next, until time.Time) (bool, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		return db.execOne(ctx, tx, ErrConflict, `UPDATE minted SET next_attempt_at = ? WHERE id = ? AND next_attempt_at = ? AND state <> ?`,
			nanos(until), id, nanos(next), MintRevoked)
	})
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: claim minted credential: %w", err)
	}
	return true, nil
}

// MintedNames reports which of names (external names of upstream's
// credentials, e.g. role names) a record still stands for: any state but
// revoked. A credential source's sweep drops the others.
func (db *DB) MintedNames(ctx context.Context, upstream string, names []string) (map[string]bool, error) {
	out := make(map[string]bool, len(names))
	for len(names) > 0 {
		n := min(len(names), HashBatch)
		args := []any{upstream, MintRevoked}
		for _, v := range names[:n] {
			args = append(args, v)
		}
		rows, err := db.query(ctx, `SELECT external_name FROM minted WHERE upstream = ? AND state <> ? AND external_name IN (`+strings.Repeat("?, ", n-1)+`?)`, args...)
		if err != nil {
			return nil, fmt.Errorf("store: which minted credentials are known: %w", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: which minted credentials are known: %w", err)
			}
			out[s] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("store: which minted credentials are known: %w", err)
		}
		names = names[n:]
	}
	return out, nil
}
