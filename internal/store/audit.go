package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// AuditSize returns the number of audit entries stored.
func (db *DB) AuditSize(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := db.queryRow(ctx, `SELECT MAX(idx) FROM audit_entries`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: audit size: %w", err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

// AuditCommit says when an audit append returns, and how soon it is on
// disk. The audit log picks it from its own options; only it appends.
type AuditCommit int

const (
	// AuditDurable: the commit is fsynced before AppendAudit returns.
	AuditDurable AuditCommit = iota
	// AuditWritten: AppendAudit returns once a crash of this process can
	// no longer lose the entries (the WAL file through the OS, or the
	// PostgreSQL server); a crash of the machine can, until the durable
	// commit that follows within Config.SyncDelay (see txDirectWritten).
	AuditWritten
	// AuditKept: AuditWritten for entries a write-ahead journal keeps
	// until a durable commit covers them (the audit log's journal): it
	// sets no deadline for that commit, which spares an fsync every
	// SyncDelay.
	AuditKept
)

// txFunc is the transaction commit mode runs in.
func (db *DB) txFunc(mode AuditCommit) (func(context.Context, func(*sql.Tx) error) error, error) {
	switch mode {
	case AuditDurable:
		return db.txDirect, nil
	case AuditWritten:
		return db.txDirectWritten, nil
	case AuditKept:
		return db.txDirectKept, nil
	}
	return nil, fmt.Errorf("store: unknown audit commit mode %d", mode)
}

// AppendAudit stores entries at [start, start+len(entries)) and tlog stored
// hashes at [firstHash, firstHash+len(hashes)) in one transaction,
// committed as mode says (an unknown mode is refused, never weakened).
// ErrConflict if the log's size is not start.
func (db *DB) AppendAudit(ctx context.Context, start int64, entries [][]byte, firstHash int64, hashes [][32]byte, mode AuditCommit) error {
	txf, err := db.txFunc(mode)
	if err != nil {
		return err
	}
	return db.appendAudit(ctx, txf, start, entries, firstHash, hashes)
}

func (db *DB) appendAudit(ctx context.Context, txf func(context.Context, func(*sql.Tx) error) error, start int64, entries [][]byte, firstHash int64, hashes [][32]byte) error {
	err := txf(ctx, func(tx *sql.Tx) error {
		var n sql.NullInt64
		if err := db.txQueryRow(ctx, tx, `SELECT MAX(idx) FROM audit_entries`).Scan(&n); err != nil {
			return err
		}
		size := int64(0)
		if n.Valid {
			size = n.Int64 + 1
		}
		if size != start {
			return ErrConflict
		}
		if err := db.insertPairs(ctx, tx, `INSERT INTO audit_entries (idx, data) VALUES `, start, len(entries), func(i int) any { return entries[i] }); err != nil {
			return err
		}
		return db.insertHashRuns(ctx, tx, firstHash, hashes)
	})
	if err != nil {
		return fmt.Errorf("store: append audit at %d: %w", start, err)
	}
	return nil
}

// insertHashRuns stores hashes at [firstHash, …) in runs of hashRunMax.
func (db *DB) insertHashRuns(ctx context.Context, tx *sql.Tx, firstHash int64, hashes [][32]byte) error {
	firsts, runs := hashRuns(firstHash, hashes)
	for i, run := range runs {
		if _, err := db.exec(ctx, tx, `INSERT INTO audit_hash_runs (first_id, hashes) VALUES (?, ?)`, firsts[i], run); err != nil {
			return err
		}
	}
	return nil
}

// hashRuns cuts hashes at [firstHash, …) into the rows of audit_hash_runs:
// runs of hashRunMax (the last shorter), each its first id and its hashes
// end to end. The runs share one buffer.
func hashRuns(firstHash int64, hashes [][32]byte) (firsts []int64, runs [][]byte) {
	buf := make([]byte, 0, 32*len(hashes))
	for off := 0; off < len(hashes); off += hashRunMax {
		start := len(buf)
		for _, h := range hashes[off:min(off+hashRunMax, len(hashes))] {
			buf = append(buf, h[:]...)
		}
		firsts, runs = append(firsts, firstHash+int64(off)), append(runs, buf[start:len(buf):len(buf)])
	}
	return firsts, runs
}

// insertPairs inserts (first+i, value(i)) rows in multi-row statements of
// a few fixed sizes, so that the statements stay prepared: a statement
// for each batch size was parsed anew for almost every batch, a third of
// the cost of folding the audit journal into SQLite.
func (db *DB) insertPairs(ctx context.Context, tx *sql.Tx, prefix string, first int64, n int, value func(int) any) error {
	for off := 0; off < n; {
		m := 1
		for _, size := range [...]int{128, 32, 8} {
			if n-off >= size {
				m = size
				break
			}
		}
		var b strings.Builder
		b.WriteString(prefix)
		args := make([]any, 0, 2*m)
		for i := 0; i < m; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, first+int64(off+i), value(off+i))
		}
		if _, err := db.exec(ctx, tx, b.String(), args...); err != nil {
			return err
		}
		off += m
	}
	return nil
}

// AuditEntries returns up to limit entries from start, in index order.
func (db *DB) AuditEntries(ctx context.Context, start int64, limit int) ([][]byte, error) {
	return audit.ReadEntries(ctx, db, start, limit, 0)
}

// ScanAuditEntries calls fn with each of up to limit entries from start,
// in index order; data is valid only during the call (the driver's own
// copy, not copied again: verification reads every row once).
func (db *DB) ScanAuditEntries(ctx context.Context, start int64, limit int, fn func(data []byte) error) error {
	rows, err := db.query(ctx, `SELECT data FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?`, start, limit)
	if err != nil {
		return fmt.Errorf("store: audit entries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var data sql.RawBytes
		if err := rows.Scan(&data); err != nil {
			return fmt.Errorf("store: audit entries: %w", err)
		}
		if err := fn(data); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: audit entries: %w", err)
	}
	return nil
}

// AuditHashes returns the stored hashes at the given tlog indexes;
// ErrNotFound if any is missing. They are read from the runs appends
// write (audit_hash_runs) and, for logs written by earlier versions, from
// audit_hashes.
func (db *DB) AuditHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	out := make([][32]byte, len(indexes))
	if len(indexes) == 0 {
		return out, nil
	}
	found := make([]bool, len(indexes))
	var err error
	if contiguous(indexes) {
		err = db.hashRunsRange(ctx, indexes[0], out, found)
	} else {
		err = db.hashRunsAt(ctx, indexes, out, found)
	}
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	var rest []int64
	for i, ok := range found {
		if !ok {
			rest = append(rest, indexes[i])
		}
	}
	if len(rest) == 0 {
		return out, nil
	}
	old, err := db.legacyHashes(ctx, rest)
	if err != nil {
		return nil, err
	}
	for i, ok := range found {
		if !ok {
			out[i], old = old[0], old[1:]
		}
	}
	return out, nil
}

// hashRunMax bounds the hashes in one run: 3,840 bytes stay within one
// SQLite page, so reading one hash of a run does not walk a chain of
// overflow pages (a proof reads one hash from each of ~log n runs).
const hashRunMax = 120

// run is one row of audit_hash_runs.
type run struct {
	first  int64
	hashes []byte
}

func (r run) has(x int64) bool { return x >= r.first && x < r.first+int64(len(r.hashes)/32) }

func (r run) copyTo(x int64, dst *[32]byte) { copy(dst[:], r.hashes[(x-r.first)*32:]) }

func scanRuns(rows *sql.Rows) ([]run, error) {
	defer rows.Close()
	var runs []run
	for rows.Next() {
		var r run
		if err := rows.Scan(&r.first, &r.hashes); err != nil {
			return nil, err
		}
		if len(r.hashes)%32 != 0 {
			return nil, fmt.Errorf("hash run at %d has %d bytes", r.first, len(r.hashes))
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// hashRunsRange fills out with the hashes at [first, first+len(out)) that
// runs hold, with one range scan (verification reads whole pages this
// way), and marks them found.
func (db *DB) hashRunsRange(ctx context.Context, first int64, out [][32]byte, found []bool) error {
	end := first + int64(len(out))
	rows, err := db.query(ctx, `SELECT first_id, hashes FROM audit_hash_runs
		WHERE first_id < ? AND first_id >= COALESCE((SELECT MAX(first_id) FROM audit_hash_runs WHERE first_id <= ?), ?)
		ORDER BY first_id`, end, first, first)
	if err != nil {
		return err
	}
	runs, err := scanRuns(rows)
	if err != nil {
		return err
	}
	for _, r := range runs {
		for x := max(first, r.first); x < end && r.has(x); x++ {
			r.copyTo(x, &out[x-first])
			found[x-first] = true
		}
	}
	return nil
}

// hashRunsAt fills out with the hashes at indexes that runs hold, with
// one query: for each index, the 32 bytes at its place in the last run
// that starts at or before it (found by the primary key, read without the
// rest of the run), and marks them found.
func (db *DB) hashRunsAt(ctx context.Context, indexes []int64, out [][32]byte, found []bool) error {
	var q strings.Builder
	args := make([]any, 0, len(indexes))
	q.WriteString(`WITH want(x) AS (VALUES `)
	for i, x := range indexes {
		if i > 0 {
			q.WriteString(", ")
		}
		if db.postgres {
			q.WriteString("(?::bigint)")
		} else {
			q.WriteString("(?)")
		}
		args = append(args, x)
	}
	if db.postgres {
		q.WriteString(`) SELECT x, (SELECT substring(hashes from ((x - first_id) * 32 + 1)::int for 32) FROM audit_hash_runs WHERE first_id <= x ORDER BY first_id DESC LIMIT 1) FROM want`)
	} else {
		q.WriteString(`) SELECT x, (SELECT substr(hashes, (x - first_id) * 32 + 1, 32) FROM audit_hash_runs WHERE first_id <= x ORDER BY first_id DESC LIMIT 1) FROM want`)
	}
	rows, err := db.query(ctx, q.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	got := make(map[int64][]byte, len(indexes))
	for rows.Next() {
		var x int64
		var h []byte
		if err := rows.Scan(&x, &h); err != nil {
			return err
		}
		if len(h) == 32 { // shorter: past the end of that run
			got[x] = h
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, x := range indexes {
		if h, ok := got[x]; ok {
			copy(out[i][:], h)
			found[i] = true
		}
	}
	return nil
}

// legacyHashes reads hashes, one row each, from audit_hashes (written by
// earlier versions); ErrNotFound if any is missing.
func (db *DB) legacyHashes(ctx context.Context, indexes []int64) ([][32]byte, error) {
	out := make([][32]byte, len(indexes))
	if contiguous(indexes) {
		return db.auditHashRange(ctx, indexes[0], out)
	}
	pos := make(map[int64][]int, len(indexes))
	args := make([]any, 0, len(indexes))
	for i, x := range indexes {
		if _, ok := pos[x]; !ok {
			args = append(args, x)
		}
		pos[x] = append(pos[x], i)
	}
	q := `SELECT id, hash FROM audit_hashes WHERE id IN (?` + strings.Repeat(", ?", len(args)-1) + `)`
	rows, err := db.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	defer rows.Close()
	found := 0
	for rows.Next() {
		var id int64
		var h []byte
		if err := rows.Scan(&id, &h); err != nil {
			return nil, fmt.Errorf("store: audit hashes: %w", err)
		}
		if len(h) != 32 {
			return nil, fmt.Errorf("store: audit hash %d has %d bytes", id, len(h))
		}
		for _, i := range pos[id] {
			copy(out[i][:], h)
		}
		found++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	if found != len(args) {
		return nil, ErrNotFound
	}
	return out, nil
}

// PutAuditCheckpoint stores a signed checkpoint for size; a second one for
// the same size is ignored.
func (db *DB) PutAuditCheckpoint(ctx context.Context, size int64, note []byte) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO audit_checkpoints (size, note) VALUES (?, ?) ON CONFLICT (size) DO NOTHING`, size, note)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put audit checkpoint %d: %w", size, err)
	}
	return nil
}

// LatestAuditCheckpoint returns the largest checkpoint, or ErrNotFound.
func (db *DB) LatestAuditCheckpoint(ctx context.Context) (int64, []byte, error) {
	var size int64
	var note []byte
	err := db.queryRow(ctx, `SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).Scan(&size, &note)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("store: latest audit checkpoint: %w", err)
	}
	return size, note, nil
}

// AuditCheckpoint returns the checkpoint for size, or ErrNotFound.
func (db *DB) AuditCheckpoint(ctx context.Context, size int64) ([]byte, error) {
	var note []byte
	err := db.queryRow(ctx, `SELECT note FROM audit_checkpoints WHERE size = ?`, size).Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: audit checkpoint %d: %w", size, err)
	}
	return note, nil
}

// AuditCursor returns the next index a sink should deliver (0 when new).
func (db *DB) AuditCursor(ctx context.Context, name string) (int64, error) {
	var n int64
	err := db.queryRow(ctx, `SELECT next FROM audit_cursors WHERE name = ?`, name).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: audit cursor %s: %w", name, err)
	}
	return n, nil
}

// SetAuditCursor records the next index a sink should deliver.
func (db *DB) SetAuditCursor(ctx context.Context, name string, next int64) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO audit_cursors (name, next) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET next = excluded.next`, name, next)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set audit cursor %s: %w", name, err)
	}
	return nil
}

func contiguous(xs []int64) bool {
	for i := 1; i < len(xs); i++ {
		if xs[i] != xs[i-1]+1 {
			return false
		}
	}
	return len(xs) > 1
}

// auditHashRange reads len(out) consecutive stored hashes from first with
// one range scan (verification reads whole pages this way).
func (db *DB) auditHashRange(ctx context.Context, first int64, out [][32]byte) ([][32]byte, error) {
	rows, err := db.query(ctx, `SELECT id, hash FROM audit_hashes WHERE id >= ? AND id < ? ORDER BY id`, first, first+int64(len(out)))
	if err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id int64
		var h []byte
		if err := rows.Scan(&id, &h); err != nil {
			return nil, fmt.Errorf("store: audit hashes: %w", err)
		}
		if len(h) != 32 || id != first+int64(n) {
			if len(h) != 32 {
				return nil, fmt.Errorf("store: audit hash %d has %d bytes", id, len(h))
			}
			return nil, ErrNotFound // a gap: some hash is missing
		}
		copy(out[n][:], h)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit hashes: %w", err)
	}
	if n != len(out) {
		return nil, ErrNotFound
	}
	return out, nil
}
