package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// AdminToken is a stored admin token: its keyed hash, never the token.
type AdminToken struct {
	Name      string
	Role      string
	Hash      [32]byte
	CreatedAt time.Time
	RevokedAt time.Time // zero while live
	// ExpiresAt is when it stops working; zero: never (tokens made before
	// admin tokens expired).
	ExpiresAt time.Time
	// LastUsedAt is when it last authenticated a call, to within
	// a minute (see authority); zero: never.
	LastUsedAt time.Time
	// CreatorSubject is the identity provider's subject of the human who
	// made it (signed in, or through a token they made); "" when no
	// human did (init, offline, a token made before it was kept).
	CreatorSubject string
}

// adminCols are the columns scanAdmin reads, in order.
const adminCols = `name, role, token_hash, created_at, revoked_at, expires_at, last_used_at, creator_subject`

func scanAdmin(r scanner) (AdminToken, error) {
	var t AdminToken
	var h []byte
	var at int64
	var rev, exp, used sql.NullInt64
	var creator sql.NullString
	if err := r.Scan(&t.Name, &t.Role, &h, &at, &rev, &exp, &used, &creator); err != nil {
		return AdminToken{}, err
	}
	copy(t.Hash[:], h)
	t.CreatorSubject = creator.String
	t.CreatedAt, t.RevokedAt, t.ExpiresAt, t.LastUsedAt = fromNanos(at), nullNanos(rev), nullNanos(exp), nullNanos(used)
	return t, nil
}

func nullable(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// CreateAdminToken stores a new admin token. A name that is live already
// gives ErrExists; a revoked name may be reused.
func (db *DB) CreateAdminToken(ctx context.Context, t AdminToken) error {
	return db.CreateAdminTokenNoted(ctx, t, nil)
}

// CreateAdminTokenNoted is CreateAdminToken with its audit record n in the
// same transaction.
func (db *DB) CreateAdminTokenNoted(ctx context.Context, t AdminToken, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var revoked sql.NullInt64
		err := db.txQueryRow(ctx, tx, `SELECT revoked_at FROM admin_tokens WHERE name = ?`, t.Name).Scan(&revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = db.exec(ctx, tx, `INSERT INTO admin_tokens (name, role, token_hash, created_at, expires_at, creator_subject) VALUES (?, ?, ?, ?, ?, ?)`,
				t.Name, t.Role, t.Hash[:], nanos(t.CreatedAt), nullable(t.ExpiresAt), nullString(t.CreatorSubject))
			if err != nil && isUniqueViolation(err) {
				err = ErrExists // another node made it meanwhile
			}
		case err != nil:
		case !revoked.Valid:
			err = ErrExists
		default:
			// Still revoked when written: another node may have reused
			// the name since it was read, and its token must not be
			// overwritten unseen (on PostgreSQL the UPDATE waits for that
			// write and reads the row again).
			err = db.execOne(ctx, tx, ErrExists, `UPDATE admin_tokens SET role = ?, token_hash = ?, created_at = ?, expires_at = ?, revoked_at = NULL, last_used_at = NULL, creator_subject = ? WHERE name = ? AND revoked_at IS NOT NULL`,
				t.Role, t.Hash[:], nanos(t.CreatedAt), nullable(t.ExpiresAt), nullString(t.CreatorSubject), t.Name)
		}
		if err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{})
	})
	if err != nil {
		return fmt.Errorf("store: create admin token %s: %w", t.Name, err)
	}
	return nil
}

// AdminTokenByHash finds a live (unrevoked) admin token by its keyed hash;
// whether it has expired is the caller's to judge.
func (db *DB) AdminTokenByHash(ctx context.Context, hash [32]byte) (AdminToken, error) {
	t, err := scanAdmin(db.queryRow(ctx, `SELECT `+adminCols+` FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return AdminToken{}, ErrNotFound
	}
	if err != nil {
		return AdminToken{}, fmt.Errorf("store: find admin token: %w", err)
	}
	return t, nil
}

// AdminTokensByHashes finds the live admin tokens of many hashes, one
// query per HashBatch hashes. Hashes without a live token are absent.
func (db *DB) AdminTokensByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]AdminToken, error) {
	out := make(map[[32]byte]AdminToken)
	err := inBatches(hashes, func(in string, args []any) error {
		ts, err := queryAll(ctx, db, scanAdmin, `SELECT `+adminCols+` FROM admin_tokens WHERE revoked_at IS NULL AND token_hash IN (`+in+`)`, args...)
		for _, t := range ts {
			out[t.Hash] = t
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: find admin tokens by hash: %w", err)
	}
	return out, nil
}

// ListAdminTokens returns every admin token, live and revoked, by name.
func (db *DB) ListAdminTokens(ctx context.Context) ([]AdminToken, error) {
	out, err := queryAll(ctx, db, scanAdmin, `SELECT `+adminCols+` FROM admin_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list admin tokens: %w", err)
	}
	return out, nil
}

// TouchAdminToken records that the admin token name authenticated a call
// at at (never moving the time back).
func (db *DB) TouchAdminToken(ctx context.Context, name string, at time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `UPDATE admin_tokens SET last_used_at = ? WHERE name = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
			nanos(at), name, nanos(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: touch admin token %s: %w", name, err)
	}
	return nil
}

// RevokeAdminToken revokes a live admin token; ErrNotFound if none.
func (db *DB) RevokeAdminToken(ctx context.Context, name string, at time.Time) error {
	return db.RevokeAdminTokenNoted(ctx, name, at, nil)
}

// RevokeAdminTokenNoted is RevokeAdminToken with its audit record n
// (Changes.Admins: the name) in the same transaction.
func (db *DB) RevokeAdminTokenNoted(ctx context.Context, name string, at time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE admin_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL`, nanos(at), name); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Admins: []string{name}})
	})
	if err != nil {
		return fmt.Errorf("store: revoke admin token %s: %w", name, err)
	}
	return nil
}

// RevokeHeldAdminTokenNoted is RevokeAdminTokenNoted for whoever holds the
// token whose keyed hash is hash (RFC 7009): ErrNotFound unless name is
// still that token, live. A revoked name is reused by the next token made
// under it, which a revocation of the old one must not reach.
func (db *DB) RevokeHeldAdminTokenNoted(ctx context.Context, name string, hash [32]byte, at time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE admin_tokens SET revoked_at = ? WHERE name = ? AND token_hash = ? AND revoked_at IS NULL`,
			nanos(at), name, hash[:]); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Admins: []string{name}})
	})
	if err != nil {
		return fmt.Errorf("store: revoke admin token %s: %w", name, err)
	}
	return nil
}

// UseJTI records that an ID token's jti was exchanged. It reports fresh
// = true for the first use only, across restarts and nodes.
func (db *DB) UseJTI(ctx context.Context, issuer, jti string, expires time.Time) (bool, error) {
	var fresh bool
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `INSERT INTO jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING`,
			issuer, jti, nanos(expires))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		fresh = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: use jti: %w", err)
	}
	return fresh, nil
}

// SweepJTIs forgets jtis that expired before t.
func (db *DB) SweepJTIs(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `DELETE FROM jtis WHERE expires_at < ?`, nanos(t))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: sweep jtis: %w", err)
	}
	return n, nil
}

// PolicyVersion is one applied version of the policy.
type PolicyVersion struct {
	Version   int64
	Hash      string
	Source    []byte
	AppliedAt time.Time
	AppliedBy string
	// MAC authenticates the other fields (authority.PolicyMAC); nil on a
	// row written before policy versions were authenticated, until sealed.
	MAC []byte
}

// PutPolicyVersion stores a new policy version and returns its number.
// With p.Version set, that number must be the next one (ErrConflict
// otherwise: another node applied a version first).
func (db *DB) PutPolicyVersion(ctx context.Context, p PolicyVersion) (int64, error) {
	v, _, err := db.ApplyPolicyVersion(ctx, p, nil, "", nil)
	return v, err
}

// ApplyPolicyVersion is PutPolicyVersion that also revokes, in the same
// transaction, the live leases of the grants the version removes (with
// reason), and writes the apply's audit records n (Changes.Version and
// Changes.ByGrant: the leases revoked per grant). It returns the version
// and the revoked leases by grant.
func (db *DB) ApplyPolicyVersion(ctx context.Context, p PolicyVersion, removed []string, reason string, n *Note) (int64, map[string][]string, error) {
	var v int64
	var byGrant map[string][]string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		// The head row taken for update first: it waits for lease inserts
		// decided against the version in force (they hold it key-shared
		// until they commit), and they for this apply. See Lease.AtPolicy.
		lock := ""
		if db.postgres {
			lock = " FOR UPDATE"
		}
		var head int64
		if err := db.txQueryRow(ctx, tx, `SELECT version FROM policy_head WHERE id = 1`+lock).Scan(&head); err != nil {
			return err
		}
		var cur sql.NullInt64
		if err := db.txQueryRow(ctx, tx, `SELECT MAX(version) FROM policy_versions`).Scan(&cur); err != nil {
			return err
		}
		v = cur.Int64 + 1
		if p.Version != 0 && p.Version != v {
			return ErrConflict
		}
		if _, err := db.exec(ctx, tx, `INSERT INTO policy_versions (version, hash, source, applied_at, applied_by, mac) VALUES (?, ?, ?, ?, ?, ?)`,
			v, p.Hash, p.Source, nanos(p.AppliedAt), p.AppliedBy, nullBytes(p.MAC)); err != nil {
			return err
		}
		if _, err := db.exec(ctx, tx, `UPDATE policy_head SET version = ? WHERE id = 1`, v); err != nil {
			return err
		}
		byGrant = map[string][]string{}
		for _, g := range removed {
			ids, err := db.revokeTx(ctx, tx, LeaseFilter{Grant: g}, p.AppliedAt, reason)
			if err != nil {
				return err
			}
			byGrant[g] = ids
		}
		return db.note(ctx, tx, n, Changes{Version: v, ByGrant: byGrant})
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: put policy version: %w", err)
	}
	return v, byGrant, nil
}

// LatestPolicy returns the newest policy version, or ErrNotFound.
func (db *DB) LatestPolicy(ctx context.Context) (PolicyVersion, error) {
	var p PolicyVersion
	var at int64
	err := db.queryRow(ctx, `SELECT version, hash, source, applied_at, applied_by, mac FROM policy_versions ORDER BY version DESC LIMIT 1`).
		Scan(&p.Version, &p.Hash, &p.Source, &at, &p.AppliedBy, &p.MAC)
	if errors.Is(err, sql.ErrNoRows) {
		return PolicyVersion{}, ErrNotFound
	}
	if err != nil {
		return PolicyVersion{}, fmt.Errorf("store: latest policy: %w", err)
	}
	p.AppliedAt = fromNanos(at)
	return p, nil
}

// nullBytes is b for a nullable column: NULL when empty.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// UnsealedPolicyVersions returns the policy versions that carry no MAC
// (written before policy versions were authenticated), oldest first.
func (db *DB) UnsealedPolicyVersions(ctx context.Context) ([]PolicyVersion, error) {
	out, err := queryAll(ctx, db, func(r scanner) (PolicyVersion, error) {
		var p PolicyVersion
		var at int64
		err := r.Scan(&p.Version, &p.Hash, &p.Source, &at, &p.AppliedBy)
		p.AppliedAt = fromNanos(at)
		return p, err
	}, `SELECT version, hash, source, applied_at, applied_by FROM policy_versions WHERE mac IS NULL ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("store: unsealed policy versions: %w", err)
	}
	return out, nil
}

// PolicyVersionCounts returns how many policy versions are stored and how
// many of them carry a MAC.
func (db *DB) PolicyVersionCounts(ctx context.Context) (all, sealed int64, err error) {
	if err := db.queryRow(ctx, `SELECT COUNT(*), COUNT(mac) FROM policy_versions`).Scan(&all, &sealed); err != nil {
		return 0, 0, fmt.Errorf("store: count policy versions: %w", err)
	}
	return all, sealed, nil
}

// SealPolicyVersions sets the MAC of each version in macs that has none
// yet, with n's audit records (Changes.Sealed: the versions sealed) in the
// same transaction, and returns the versions it sealed. It seals only a
// database none of whose versions has a MAC (one never sealed, as the
// previous release left it): once any has, a version without one was
// planted, and sealing it would make it authentic. So a node that seals
// while another has just done so seals nothing.
func (db *DB) SealPolicyVersions(ctx context.Context, macs map[int64][]byte, n *Note) ([]int64, error) {
	var sealed []int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		sealed = sealed[:0]
		var already int64
		if err := db.txQueryRow(ctx, tx, `SELECT COUNT(mac) FROM policy_versions`).Scan(&already); err != nil {
			return err
		}
		if already > 0 {
			return nil
		}
		vs := make([]int64, 0, len(macs))
		for v := range macs {
			vs = append(vs, v)
		}
		slices.Sort(vs)
		for _, v := range vs {
			if len(macs[v]) == 0 {
				return fmt.Errorf("version %d: empty MAC", v)
			}
			res, err := db.exec(ctx, tx, `UPDATE policy_versions SET mac = ? WHERE version = ? AND mac IS NULL`, macs[v], v)
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err != nil {
				return err
			} else if k > 0 {
				sealed = append(sealed, v)
			}
		}
		if len(sealed) == 0 {
			return nil
		}
		return db.note(ctx, tx, n, Changes{Sealed: sealed})
	})
	if err != nil {
		return nil, fmt.Errorf("store: seal policy versions: %w", err)
	}
	return sealed, nil
}
