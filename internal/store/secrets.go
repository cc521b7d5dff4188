package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// GetMeta returns a value stored under key, or ErrNotFound.
func (db *DB) GetMeta(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := db.queryRow(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get meta %s: %w", key, err)
	}
	return v, nil
}

// PutMetaIfAbsent stores value under key unless a value is there already;
// it reports whether it stored. Several nodes racing to create the same
// value keep the first.
func (db *DB) PutMetaIfAbsent(ctx context.Context, key string, value []byte) (bool, error) {
	var stored bool
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		stored = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: put meta %s: %w", key, err)
	}
	return stored, nil
}

// PutMeta stores value under key, replacing any value there.
func (db *DB) PutMeta(ctx context.Context, key string, value []byte) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put meta %s: %w", key, err)
	}
	return nil
}

// KeyVersion is one version of the keyring: a key-encryption key, sealed by
// the master key (the store never sees it in the clear).
type KeyVersion struct {
	Version   int
	Sealed    []byte
	CreatedAt time.Time
}

// KeyVersions returns every keyring version, oldest first.
func (db *DB) KeyVersions(ctx context.Context) ([]KeyVersion, error) {
	out, err := queryAll(ctx, db, scanKeyVersion, `SELECT `+keyringCols+` FROM keyring ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("store: list keyring: %w", err)
	}
	return out, nil
}

const keyringCols = `version, sealed, created_at`

func scanKeyVersion(r scanner) (KeyVersion, error) {
	var k KeyVersion
	var at int64
	err := r.Scan(&k.Version, &k.Sealed, &at)
	k.CreatedAt = fromNanos(at)
	return k, err
}

// AddKeyVersion stores a new keyring version; ErrExists if that version is
// taken (another node rotated first).
func (db *DB) AddKeyVersion(ctx context.Context, k KeyVersion) error {
	return db.AddKeyVersionNoted(ctx, k, nil)
}

// AddKeyVersionNoted is AddKeyVersion with its audit record n (a master-key
// rotation's) in the same transaction: with ErrExists nothing is written.
func (db *DB) AddKeyVersionNoted(ctx context.Context, k KeyVersion, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrExists, `INSERT INTO keyring (version, sealed, created_at) VALUES (?, ?, ?) ON CONFLICT (version) DO NOTHING`,
			k.Version, k.Sealed, nanos(k.CreatedAt)); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{})
	})
	if err != nil {
		return fmt.Errorf("store: add key version %d: %w", k.Version, err)
	}
	return nil
}

// DeleteKeyVersion removes a keyring version, refusing (ErrConflict) while
// any secret is still wrapped by it.
func (db *DB) DeleteKeyVersion(ctx context.Context, version int) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		// The row taken for update first: a write sealed under this
		// version holds it shared until it commits (keyVersionExists), so
		// the count below sees that write, and a later one finds the
		// version gone instead of landing under it unseen.
		if err := db.keyVersionExists(ctx, tx, version, " FOR UPDATE"); errors.Is(err, ErrKeyVersionGone) {
			return nil
		} else if err != nil {
			return err
		}
		var n int64
		if err := db.txQueryRow(ctx, tx, `SELECT COUNT(*) FROM secrets WHERE kek_version = ? AND deleted_at IS NULL`, version).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrConflict
		}
		_, err := db.exec(ctx, tx, `DELETE FROM keyring WHERE version = ?`, version)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: delete key version %d: %w", version, err)
	}
	return nil
}

// keyVersionExists is nil when keyring version exists, ErrKeyVersionGone
// when it does not. On PostgreSQL it locks the row with lock (" FOR SHARE"
// for a writer sealing under it, " FOR UPDATE" for its deletion) until the
// transaction ends; SQLite has one writer at a time, so a plain read in the
// transaction is enough there.
func (db *DB) keyVersionExists(ctx context.Context, tx *sql.Tx, version int, lock string) error {
	if !db.postgres {
		lock = ""
	}
	var one int
	err := db.txQueryRow(ctx, tx, `SELECT 1 FROM keyring WHERE version = ?`+lock, version).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w (version %d)", ErrKeyVersionGone, version)
	}
	return err
}

// Secret is one sealed version of a named secret. Ciphertext is sealed under
// a data key, and WrappedDEK is that data key sealed under keyring version
// KEKVersion.
type Secret struct {
	Name       string
	Version    int
	KEKVersion int
	WrappedDEK []byte
	Ciphertext []byte
	CreatedAt  time.Time
	// RetireAt is set on a replaced version kept for a rotation's grace
	// period: its sealed bytes are destroyed at that time (RetireSecrets).
	// Zero on the live version.
	RetireAt time.Time
	// Pending marks a version stored but not in use: a postgres_password
	// rotation's new value, stored before the role's ALTER ROLE commits
	// and made live (PromoteSecret) after, so that what is injected is
	// never a password the role may not have. Only PendingSecret reads
	// it; a later write of a live version destroys it.
	Pending bool
}

// NextSecretVersion returns the version the next PutSecret of name will
// get, so the caller can bind the ciphertext to it. PutSecret checks it.
func (db *DB) NextSecretVersion(ctx context.Context, name string) (int, error) {
	var v sql.NullInt64
	if err := db.queryRow(ctx, `SELECT MAX(version) FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: next secret version %s: %w", name, err)
	}
	return int(v.Int64) + 1, nil
}

// PutSecret stores s as a new version of s.Name; s.Version must be the
// next version (ErrConflict otherwise: another writer got there first).
func (db *DB) PutSecret(ctx context.Context, s Secret) error {
	return db.PutSecretKeeping(ctx, s, time.Time{})
}

// PutSecretKeeping is PutSecret that keeps the version it replaces sealed
// until keepUntil (a rotation's grace period; zero: destroyed at once, as
// PutSecret does). Any older version is destroyed at once either way.
func (db *DB) PutSecretKeeping(ctx context.Context, s Secret, keepUntil time.Time) error {
	return db.PutSecretNoted(ctx, s, keepUntil, nil)
}

// PutSecretNoted is PutSecretKeeping with its audit record n (an admin's
// secret write) in the same transaction. ErrKeyVersionGone when
// s.KEKVersion is no longer in the keyring: the row could never be opened.
func (db *DB) PutSecretNoted(ctx context.Context, s Secret, keepUntil time.Time, n *Note) error {
	return db.PutSecretRotating(ctx, s, 0, keepUntil, nil, n)
}

// RotationChange is a change of a secret's rotation made together with a
// write of its value (PutSecretRotating).
type RotationChange struct {
	// Remove stops rotating the secret (no error when it was not rotated).
	Remove bool
	// Spec and NextAt are the rotation's settings and next due time, as
	// SetRotation takes them (its history is kept); MAC authenticates
	// the name and Spec (rotate.SpecMAC).
	Spec   string
	MAC    []byte
	NextAt time.Time
}

// PutSecretRotating is PutSecretNoted that also applies rc (nil: none) in
// the same transaction: an admin's write that sets or removes the
// rotation has one entry naming both, so the value, the rotation and the
// entry commit together or not at all. A pending s (Secret.Pending)
// replaces only an older pending version; keepUntil and rc are then
// ignored. A base other than 0 is the live version s was made from (a
// rotation's): ErrSecretChanged, and nothing written, when it is no
// longer the live one.
func (db *DB) PutSecretRotating(ctx context.Context, s Secret, base int, keepUntil time.Time, rc *RotationChange, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.keyVersionExists(ctx, tx, s.KEKVersion, " FOR SHARE"); err != nil {
			return err
		}
		var v sql.NullInt64
		if err := db.txQueryRow(ctx, tx, `SELECT MAX(version) FROM secrets WHERE name = ?`, s.Name).Scan(&v); err != nil {
			return err
		}
		if int(v.Int64)+1 != s.Version {
			return ErrConflict
		}
		_, err := db.exec(ctx, tx, `INSERT INTO secrets (name, version, kek_version, wrapped_dek, ciphertext, created_at, pending) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			s.Name, s.Version, s.KEKVersion, s.WrappedDEK, s.Ciphertext, nanos(s.CreatedAt), boolInt(s.Pending))
		if err != nil {
			if isUniqueViolation(err) {
				return ErrConflict // another node wrote this version first
			}
			return err
		}
		if base != 0 {
			// After the insert: an admin's write of the same version (on
			// another node) is waited for there, before this holds the
			// live row that write updates, so neither waits for the other.
			if err := db.baseIsLive(ctx, tx, s.Name, base, s.Version); err != nil {
				return err
			}
		}
		if s.Pending {
			// One pending version at a time: the live one stays as it is.
			if _, err := db.exec(ctx, tx, `UPDATE secrets SET ciphertext = ?, wrapped_dek = ?, deleted_at = ? WHERE name = ? AND version < ? AND pending = 1 AND deleted_at IS NULL`,
				[]byte{}, []byte{}, nanos(s.CreatedAt), s.Name, s.Version); err != nil {
				return err
			}
			return db.note(ctx, tx, n, Changes{SecretVersion: s.Version})
		}
		if err := db.replaceLive(ctx, tx, s.Name, s.Version, s.CreatedAt, keepUntil); err != nil {
			return err
		}
		if err := db.changeRotation(ctx, tx, s.Name, rc); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{SecretVersion: s.Version})
	})
	if err != nil {
		return fmt.Errorf("store: put secret %s: %w", s.Name, err)
	}
	return nil
}

// replaceLive destroys, inside tx, the sealed bytes of every version of
// name below version, the new live one: only the newest version is kept
// sealed (and, until keepUntil when it is not zero, the live version it
// replaces, for a rotation's grace period). Older versions keep their
// metadata but lose their ciphertext, so a replaced credential is gone; a
// pending version below goes too (the new value replaces it).
func (db *DB) replaceLive(ctx context.Context, tx *sql.Tx, name string, version int, at, keepUntil time.Time) error {
	keep := version
	if !keepUntil.IsZero() {
		var live sql.NullInt64
		if err := db.txQueryRow(ctx, tx, `SELECT MAX(version) FROM secrets WHERE name = ? AND version < ? AND pending = 0 AND deleted_at IS NULL`,
			name, version).Scan(&live); err != nil {
			return err
		}
		if live.Valid {
			keep = int(live.Int64)
			if _, err := db.exec(ctx, tx, `UPDATE secrets SET retire_at = ? WHERE name = ? AND version = ?`, nanos(keepUntil), name, keep); err != nil {
				return err
			}
		}
	}
	_, err := db.exec(ctx, tx, `UPDATE secrets SET ciphertext = ?, wrapped_dek = ?, deleted_at = ? WHERE name = ? AND version < ? AND version <> ? AND deleted_at IS NULL`,
		[]byte{}, []byte{}, nanos(at), name, version, keep)
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// PendingSecret returns name's pending version (Secret.Pending), or
// ErrNotFound when it has none.
func (db *DB) PendingSecret(ctx context.Context, name string) (Secret, error) {
	var s Secret
	var at int64
	err := db.queryRow(ctx, `SELECT name, version, kek_version, wrapped_dek, ciphertext, created_at FROM secrets WHERE name = ? AND pending = 1 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1`, name).
		Scan(&s.Name, &s.Version, &s.KEKVersion, &s.WrappedDEK, &s.Ciphertext, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Secret{}, ErrNotFound
	}
	if err != nil {
		return Secret{}, fmt.Errorf("store: get pending secret %s: %w", name, err)
	}
	s.CreatedAt, s.Pending = fromNanos(at), true
	return s, nil
}

// baseIsLive is nil when base is name's live version (own, the version
// tx has just written, aside; 0: none), ErrSecretChanged when another one
// is or none is (deleted). On PostgreSQL it locks the live row until tx
// ends: a concurrent delete or write of it waits, or is waited for and
// seen (SQLite has one writer at a time).
func (db *DB) baseIsLive(ctx context.Context, tx *sql.Tx, name string, base, own int) error {
	lock := ""
	if db.postgres {
		lock = " FOR UPDATE"
	}
	var live int
	err := db.txQueryRow(ctx, tx, `SELECT version FROM secrets WHERE name = ? AND version <> ? AND pending = 0 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1`+lock,
		name, own).Scan(&live)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && live != base) {
		return ErrSecretChanged
	}
	return err
}

// PromoteSecret makes name's pending version live, as PutSecretKeeping
// would have stored it at, and writes its audit record n in the same
// transaction. ErrNotFound when that version is no longer pending (a
// later write replaced it, or it was promoted already); ErrSecretChanged
// when base, the live version it was made from, no longer is.
func (db *DB) PromoteSecret(ctx context.Context, name string, version, base int, at, keepUntil time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.baseIsLive(ctx, tx, name, base, 0); err != nil {
			return err
		}
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE secrets SET pending = 0 WHERE name = ? AND version = ? AND pending = 1 AND deleted_at IS NULL`,
			name, version); err != nil {
			return err
		}
		if err := db.replaceLive(ctx, tx, name, version, at, keepUntil); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{SecretVersion: version})
	})
	if err != nil {
		return fmt.Errorf("store: promote secret %s v%d: %w", name, version, err)
	}
	return nil
}

// GetSecret returns the live version of name, or ErrNotFound.
func (db *DB) GetSecret(ctx context.Context, name string) (Secret, error) {
	var s Secret
	var at int64
	err := db.queryRow(ctx, `SELECT name, version, kek_version, wrapped_dek, ciphertext, created_at FROM secrets WHERE name = ? AND deleted_at IS NULL AND pending = 0 ORDER BY version DESC LIMIT 1`, name).
		Scan(&s.Name, &s.Version, &s.KEKVersion, &s.WrappedDEK, &s.Ciphertext, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Secret{}, ErrNotFound
	}
	if err != nil {
		return Secret{}, fmt.Errorf("store: get secret %s: %w", name, err)
	}
	s.CreatedAt = fromNanos(at)
	return s, nil
}

// GetSecretVersion returns one version of name while it is still sealed
// (the live one, or a replaced one in its grace period), or ErrNotFound.
// A version past its RetireAt is not returned even if not yet swept.
func (db *DB) GetSecretVersion(ctx context.Context, name string, version int, now time.Time) (Secret, error) {
	var s Secret
	var at int64
	var retire sql.NullInt64
	err := db.queryRow(ctx, `SELECT name, version, kek_version, wrapped_dek, ciphertext, created_at, retire_at FROM secrets WHERE name = ? AND version = ? AND deleted_at IS NULL AND pending = 0`, name, version).
		Scan(&s.Name, &s.Version, &s.KEKVersion, &s.WrappedDEK, &s.Ciphertext, &at, &retire)
	if errors.Is(err, sql.ErrNoRows) {
		return Secret{}, ErrNotFound
	}
	if err != nil {
		return Secret{}, fmt.Errorf("store: get secret %s v%d: %w", name, version, err)
	}
	s.CreatedAt = fromNanos(at)
	s.RetireAt = nullNanos(retire)
	if !s.RetireAt.IsZero() && !now.Before(s.RetireAt) {
		return Secret{}, ErrNotFound
	}
	return s, nil
}

// RetireSecrets destroys the sealed bytes of every replaced version whose
// grace period ended by now, and reports how many it destroyed.
func (db *DB) RetireSecrets(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := db.exec(ctx, tx, `UPDATE secrets SET ciphertext = ?, wrapped_dek = ?, deleted_at = ? WHERE retire_at IS NOT NULL AND retire_at <= ? AND deleted_at IS NULL`,
			[]byte{}, []byte{}, nanos(now), nanos(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: retire replaced secret versions: %w", err)
	}
	return n, nil
}

// SecretMeta describes a live secret without its sealed bytes.
type SecretMeta struct {
	Name       string
	Version    int
	KEKVersion int
	CreatedAt  time.Time
}

// ListSecrets returns the live version of every secret, by name.
func (db *DB) ListSecrets(ctx context.Context) ([]SecretMeta, error) {
	out, err := queryAll(ctx, db, func(r scanner) (SecretMeta, error) {
		var m SecretMeta
		var at int64
		err := r.Scan(&m.Name, &m.Version, &m.KEKVersion, &at)
		m.CreatedAt = fromNanos(at)
		return m, err
	}, `SELECT name, version, kek_version, created_at FROM secrets WHERE deleted_at IS NULL AND retire_at IS NULL AND pending = 0 ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list secrets: %w", err)
	}
	return out, nil
}

// DeleteSecret destroys the sealed bytes of every version of name (and
// drops its rotation); the version numbers stay taken. ErrNotFound if
// there is no live version.
func (db *DB) DeleteSecret(ctx context.Context, name string, at time.Time) error {
	return db.DeleteSecretNoted(ctx, name, at, nil)
}

// DeleteSecretNoted is DeleteSecret with its audit record n (an admin's
// secret delete) in the same transaction: with ErrNotFound nothing is
// written.
func (db *DB) DeleteSecretNoted(ctx context.Context, name string, at time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.postgres {
			// A rotation holding the live row (baseIsLive) may commit a
			// new version that an UPDATE begun before that commit would
			// miss: wait for it here, so the UPDATE's snapshot, taken
			// after, holds that version too.
			var v int
			if err := db.txQueryRow(ctx, tx, `SELECT version FROM secrets WHERE name = ? AND pending = 0 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1 FOR UPDATE`, name).Scan(&v); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE secrets SET ciphertext = ?, wrapped_dek = ?, deleted_at = ? WHERE name = ? AND deleted_at IS NULL`,
			[]byte{}, []byte{}, nanos(at), name); err != nil {
			return err
		}
		if _, err := db.exec(ctx, tx, `DELETE FROM secret_rotations WHERE name = ?`, name); err != nil {
			return err
		}
		if err := db.advanceRotationHead(ctx, tx, map[string][]byte{name: nil}); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{})
	})
	if err != nil {
		return fmt.Errorf("store: delete secret %s: %w", name, err)
	}
	return nil
}

// SecretsWrappedBelow returns up to limit live secrets whose data key is
// wrapped by a keyring version older than version, for re-wrapping.
func (db *DB) SecretsWrappedBelow(ctx context.Context, version, limit int) ([]Secret, error) {
	out, err := queryAll(ctx, db, func(r scanner) (Secret, error) {
		var s Secret
		var at int64
		err := r.Scan(&s.Name, &s.Version, &s.KEKVersion, &s.WrappedDEK, &s.Ciphertext, &at)
		s.CreatedAt = fromNanos(at)
		return s, err
	}, `SELECT name, version, kek_version, wrapped_dek, ciphertext, created_at FROM secrets WHERE kek_version < ? AND deleted_at IS NULL ORDER BY name, version LIMIT ?`, version, limit)
	if err != nil {
		return nil, fmt.Errorf("store: secrets to re-wrap: %w", err)
	}
	return out, nil
}

// KeyVersionsInUse returns how many secrets each keyring version wraps.
func (db *DB) KeyVersionsInUse(ctx context.Context) (map[int]int64, error) {
	rows, err := db.query(ctx, `SELECT kek_version, COUNT(*) FROM secrets WHERE deleted_at IS NULL GROUP BY kek_version`)
	if err != nil {
		return nil, fmt.Errorf("store: key versions in use: %w", err)
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var v int
		var n int64
		if err := rows.Scan(&v, &n); err != nil {
			return nil, fmt.Errorf("store: key versions in use: %w", err)
		}
		out[v] = n
	}
	return out, rows.Err()
}

// RewrapSecret replaces the wrapped data key of one secret version, but
// only if it is still wrapped by fromKEK (ErrConflict otherwise), so a
// resumed or concurrent re-wrap never undoes a newer one, and only if
// keyring version toKEK still exists (ErrKeyVersionGone otherwise).
func (db *DB) RewrapSecret(ctx context.Context, name string, version, fromKEK, toKEK int, wrapped []byte) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.keyVersionExists(ctx, tx, toKEK, " FOR SHARE"); err != nil {
			return err
		}
		return db.execOne(ctx, tx, ErrConflict, `UPDATE secrets SET kek_version = ?, wrapped_dek = ? WHERE name = ? AND version = ? AND kek_version = ? AND deleted_at IS NULL`,
			toKEK, wrapped, name, version, fromKEK)
	})
	if err != nil {
		return fmt.Errorf("store: re-wrap secret %s v%d: %w", name, version, err)
	}
	return nil
}
