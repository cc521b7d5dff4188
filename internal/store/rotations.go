package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Rotation is a stored secret's rotation: its settings (Spec, opaque to the
// store, never a value), when it is next due, and how the last attempts went.
type Rotation struct {
	Name string
	Spec string
	// MAC authenticates Name and Spec (rotate.SpecMAC); nil on a row
	// written before rotations were authenticated, until sealed.
	MAC         []byte
	NextAt      time.Time
	LastAt      time.Time // the last successful rotation
	LastVersion int       // the version it wrote
	Failures    int       // failed attempts since the last success
	LastError   string    // why the last attempt failed ("" after a success)
	LastErrorAt time.Time
}

// SetRotation creates or replaces name's rotation settings, their MAC and
// next due time, keeping its history (last success, failures).
func (db *DB) SetRotation(ctx context.Context, name, spec string, mac []byte, nextAt time.Time) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		return db.changeRotation(ctx, tx, name, &RotationChange{Spec: spec, MAC: mac, NextAt: nextAt})
	})
	if err != nil {
		return fmt.Errorf("store: set rotation of %s: %w", name, err)
	}
	return nil
}

// changeRotation applies rc (nil: nothing) to name's rotation inside tx.
func (db *DB) changeRotation(ctx context.Context, tx *sql.Tx, name string, rc *RotationChange) error {
	switch {
	case rc == nil:
		return nil
	case rc.Remove:
		if _, err := db.exec(ctx, tx, `DELETE FROM secret_rotations WHERE name = ?`, name); err != nil {
			return err
		}
		return db.advanceRotationHead(ctx, tx, map[string][]byte{name: nil})
	}
	if _, err := db.exec(ctx, tx, `INSERT INTO secret_rotations (name, spec, mac, next_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, mac = excluded.mac, next_at = excluded.next_at`, name, rc.Spec, nullBytes(rc.MAC), nanos(rc.NextAt)); err != nil {
		return err
	}
	return db.advanceRotationHead(ctx, tx, map[string][]byte{name: rc.MAC})
}

// DeleteRotation stops rotating name (ErrNotFound when it was not).
func (db *DB) DeleteRotation(ctx context.Context, name string) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `DELETE FROM secret_rotations WHERE name = ?`, name); err != nil {
			return err
		}
		return db.advanceRotationHead(ctx, tx, map[string][]byte{name: nil})
	})
	if err != nil {
		return fmt.Errorf("store: delete rotation of %s: %w", name, err)
	}
	return nil
}

const rotationCols = `name, spec, mac, next_at, last_at, last_version, failures, last_error, last_error_at`

func scanRotation(sc scanner) (Rotation, error) {
	var r Rotation
	var next, last, errAt int64
	err := sc.Scan(&r.Name, &r.Spec, &r.MAC, &next, &last, &r.LastVersion, &r.Failures, &r.LastError, &errAt)
	r.NextAt, r.LastAt, r.LastErrorAt = fromNanos(next), fromNanos(last), fromNanos(errAt)
	return r, err
}

// GetRotation returns name's rotation, or ErrNotFound.
func (db *DB) GetRotation(ctx context.Context, name string) (Rotation, error) {
	r, err := scanRotation(db.queryRow(ctx, `SELECT `+rotationCols+` FROM secret_rotations WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Rotation{}, ErrNotFound
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("store: get rotation of %s: %w", name, err)
	}
	return r, nil
}

// Rotations returns every rotation, by name.
func (db *DB) Rotations(ctx context.Context) ([]Rotation, error) {
	return db.rotations(ctx, `SELECT `+rotationCols+` FROM secret_rotations ORDER BY name`)
}

// DueRotations returns up to limit rotations due by now that no node is
// working on, the most overdue first.
func (db *DB) DueRotations(ctx context.Context, now time.Time, limit int) ([]Rotation, error) {
	return db.rotations(ctx, `SELECT `+rotationCols+` FROM secret_rotations WHERE next_at <= ? AND claimed_until < ? ORDER BY next_at LIMIT ?`,
		nanos(now), nanos(now), limit)
}

func (db *DB) rotations(ctx context.Context, q string, args ...any) ([]Rotation, error) {
	out, err := queryAll(ctx, db, scanRotation, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list rotations: %w", err)
	}
	return out, nil
}

// ClaimRotation makes node the only one rotating name until until, unless
// another node's claim is still running at now (ErrConflict) or name has
// no rotation (ErrNotFound). It returns the rotation as claimed. One
// conditional UPDATE, so on a shared PostgreSQL exactly one node wins.
// The rotation is due again when the claim ends (FinishRotation sets
// when): an attempt whose node died is taken over then, whatever started
// it, to settle what it left (a pending version).
func (db *DB) ClaimRotation(ctx context.Context, name, node string, now, until time.Time) (Rotation, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		return db.execOne(ctx, tx, ErrConflict, `UPDATE secret_rotations SET claimed_by = ?, claimed_until = ?, next_at = ? WHERE name = ? AND claimed_until < ?`,
			node, nanos(until), nanos(until), name, nanos(now))
	})
	if errors.Is(err, ErrConflict) {
		if _, gerr := db.GetRotation(ctx, name); errors.Is(gerr, ErrNotFound) {
			return Rotation{}, ErrNotFound
		}
		return Rotation{}, fmt.Errorf("store: claim rotation of %s: %w", name, ErrConflict)
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("store: claim rotation of %s: %w", name, err)
	}
	return db.GetRotation(ctx, name)
}

// RotationOutcome is how one claimed attempt ended.
type RotationOutcome struct {
	At      time.Time
	Version int    // the version written (0: the attempt failed)
	Error   string // why it failed (never a value)
	NextAt  time.Time
}

// FinishRotation records node's attempt at name and releases its claim.
// ErrConflict when node no longer holds the claim (it ran past it and
// another node took over): nothing is recorded then.
func (db *DB) FinishRotation(ctx context.Context, name, node string, o RotationOutcome) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if o.Version > 0 {
			return db.execOne(ctx, tx, ErrConflict, `UPDATE secret_rotations SET last_at = ?, last_version = ?, failures = 0, last_error = '', next_at = ?, claimed_by = '', claimed_until = 0
WHERE name = ? AND claimed_by = ? AND claimed_until > 0`, nanos(o.At), o.Version, nanos(o.NextAt), name, node)
		}
		return db.execOne(ctx, tx, ErrConflict, `UPDATE secret_rotations SET failures = failures + 1, last_error = ?, last_error_at = ?, next_at = ?, claimed_by = '', claimed_until = 0
WHERE name = ? AND claimed_by = ? AND claimed_until > 0`, o.Error, nanos(o.At), nanos(o.NextAt), name, node)
	})
	if err != nil {
		return fmt.Errorf("store: finish rotation of %s: %w", name, err)
	}
	return nil
}

// UnsealedRotations returns the rotations whose settings carry no MAC
// (written before rotations were authenticated), by name.
func (db *DB) UnsealedRotations(ctx context.Context) ([]Rotation, error) {
	return db.rotations(ctx, `SELECT `+rotationCols+` FROM secret_rotations WHERE mac IS NULL ORDER BY name`)
}

// RotationCounts returns how many rotations are stored and how many of
// them carry a MAC.
func (db *DB) RotationCounts(ctx context.Context) (all, sealed int64, err error) {
	if err := db.queryRow(ctx, `SELECT COUNT(*), COUNT(mac) FROM secret_rotations`).Scan(&all, &sealed); err != nil {
		return 0, 0, fmt.Errorf("store: count rotations: %w", err)
	}
	return all, sealed, nil
}

// SealedRotation is a rotation's settings as an upgrade read them, and
// the MAC to give them.
type SealedRotation struct {
	Spec string
	MAC  []byte
}

// SealRotations sets the MAC of each rotation in macs that has none yet
// and still holds the settings the MAC was made over, with n's audit
// records (Changes.SealedRotations: the secrets sealed) in the same
// transaction, and returns the secrets it sealed. As SealPolicyVersions,
// it seals only a database none of whose rotations has a MAC: once any
// has, a rotation without one was planted, and sealing it would make it
// authentic.
func (db *DB) SealRotations(ctx context.Context, macs map[string]SealedRotation, n *Note) ([]string, error) {
	var sealed []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		sealed = sealed[:0]
		var already int64
		if err := db.txQueryRow(ctx, tx, `SELECT COUNT(mac) FROM secret_rotations`).Scan(&already); err != nil {
			return err
		}
		if already > 0 {
			return nil
		}
		names := make([]string, 0, len(macs))
		for name := range macs {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			m := macs[name]
			if len(m.MAC) == 0 {
				return fmt.Errorf("rotation of %s: empty MAC", name)
			}
			res, err := db.exec(ctx, tx, `UPDATE secret_rotations SET mac = ? WHERE name = ? AND spec = ? AND mac IS NULL`, m.MAC, name, m.Spec)
			if err != nil {
				return err
			}
			if k, err := res.RowsAffected(); err != nil {
				return err
			} else if k > 0 {
				sealed = append(sealed, name)
			}
		}
		if len(sealed) == 0 {
			return nil
		}
		listed := make(map[string][]byte, len(sealed))
		for _, name := range sealed {
			listed[name] = macs[name].MAC
		}
		if err := db.advanceRotationHead(ctx, tx, listed); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{SealedRotations: sealed})
	})
	if err != nil {
		return nil, fmt.Errorf("store: seal rotations: %w", err)
	}
	return sealed, nil
}

// RotationHead lists the MAC each rotated secret's settings carry now
// (Manifest: a JSON object of name to the hex SHA-256 of the MAC), under a
// MAC of its own over Gen and Manifest (rotate.HeadMAC; nil: never
// sealed). Gen grows with every change. A row's own MAC proves a node
// wrote its settings once; the head proves they are the ones in force, so
// that older genuine settings put back by a database writer are refused.
type RotationHead struct {
	Gen      int64
	Manifest string
	MAC      []byte
}

// RotationHeadKeeper seals and checks rotation heads (it holds the key).
type RotationHeadKeeper interface {
	SealHead(gen int64, manifest string) []byte
	// HeadAuthentic reports whether h is sealed and no older than the
	// newest head its node has seen.
	HeadAuthentic(h RotationHead) bool
	// NextGen is the generation of the head that follows one at gen: past
	// any its node has seen.
	NextGen(gen int64) int64
}

type headKeeper struct{ k RotationHeadKeeper }

// KeepRotationHead makes every change of a rotation's settings through db
// advance the head, sealed by k, in its own transaction. Set once, before
// use; without it (tests of other parts) the head is left alone.
func (db *DB) KeepRotationHead(k RotationHeadKeeper) { db.rotHead.Store(&headKeeper{k}) }

// RotationMACDigest is how a head lists a rotation's MAC.
func RotationMACDigest(mac []byte) string {
	sum := sha256.Sum256(mac)
	return hex.EncodeToString(sum[:])
}

// GetRotationHead returns the rotations' head.
func (db *DB) GetRotationHead(ctx context.Context) (RotationHead, error) {
	var h RotationHead
	if err := db.queryRow(ctx, `SELECT gen, manifest, mac FROM rotation_head WHERE id = 1`).Scan(&h.Gen, &h.Manifest, &h.MAC); err != nil {
		return RotationHead{}, fmt.Errorf("store: rotation head: %w", err)
	}
	return h, nil
}

// advanceRotationHead records in the head, inside tx, the rotations'
// new MACs (nil: the rotation was removed). It builds on the head's
// list only when that authenticates: a list a database writer edited is
// not carried forward (sealing it would make its entries authentic), and
// every rotation it does not name is refused until set again.
func (db *DB) advanceRotationHead(ctx context.Context, tx *sql.Tx, changed map[string][]byte) error {
	hk := db.rotHead.Load()
	if hk == nil {
		return nil
	}
	lock := ""
	if db.postgres {
		lock = " FOR UPDATE"
	}
	var h RotationHead
	if err := db.txQueryRow(ctx, tx, `SELECT gen, manifest, mac FROM rotation_head WHERE id = 1`+lock).Scan(&h.Gen, &h.Manifest, &h.MAC); err != nil {
		return fmt.Errorf("rotation head: %w", err)
	}
	list := map[string]string{}
	if hk.k.HeadAuthentic(h) && h.Manifest != "" {
		if err := json.Unmarshal([]byte(h.Manifest), &list); err != nil {
			return fmt.Errorf("rotation head: %w", err)
		}
	}
	for name, mac := range changed {
		if len(mac) == 0 {
			delete(list, name)
			continue
		}
		list[name] = RotationMACDigest(mac)
	}
	b, err := json.Marshal(list) // keys sorted: one encoding per list
	if err != nil {
		return fmt.Errorf("rotation head: %w", err)
	}
	gen := hk.k.NextGen(h.Gen)
	_, err = db.exec(ctx, tx, `UPDATE rotation_head SET gen = ?, manifest = ?, mac = ? WHERE id = 1`, gen, string(b), hk.k.SealHead(gen, string(b)))
	return err
}

// SealRotationHead gives a never sealed head (an upgrade from schema 16)
// the list macs (the rotations whose own MAC the caller verified) and
// returns whether it did. A head sealed already is left alone.
func (db *DB) SealRotationHead(ctx context.Context, macs map[string][]byte) (bool, error) {
	if db.rotHead.Load() == nil {
		return false, errors.New("store: seal rotation head: no keeper")
	}
	sealed := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var n int64
		if err := db.txQueryRow(ctx, tx, `SELECT COUNT(mac) FROM rotation_head WHERE id = 1`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		sealed = true
		return db.advanceRotationHead(ctx, tx, macs)
	})
	if err != nil {
		return false, fmt.Errorf("store: seal rotation head: %w", err)
	}
	return sealed, nil
}
