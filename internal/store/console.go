package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The web console's reads: the audit index, policy history, secret
// versions and node heartbeats. Each listing is a keyset range scan on an
// index, so a page costs the same at a million rows as at a hundred.

// auditIndexIndexes are audit_index's indexes, one per filterable column,
// each ending in idx: a page filtered by that column is a range scan
// newest first.
const auditIndexIndexes = `
CREATE INDEX audit_index_type ON audit_index (type, idx);
CREATE INDEX audit_index_lease ON audit_index (lease, idx);
CREATE INDEX audit_index_subject ON audit_index (subject, idx);
CREATE INDEX audit_index_upstream ON audit_index (upstream, idx);
CREATE INDEX audit_index_status ON audit_index (status, idx);
`

// AuditIndexRow is what an audit entry is filtered by.
type AuditIndexRow struct {
	Index    int64
	Type     string
	Lease    string
	Subject  string
	Upstream string
	Status   int
}

// IndexAudit stores index rows; a row already stored is left as it is
// (the indexer delivers at least once).
func (db *DB) IndexAudit(ctx context.Context, rows []AuditIndexRow) error {
	if len(rows) == 0 {
		return nil
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		for off := 0; off < len(rows); {
			m := 1
			for _, size := range [...]int{64, 16, 4} {
				if len(rows)-off >= size {
					m = size
					break
				}
			}
			var b strings.Builder
			b.WriteString(`INSERT INTO audit_index (idx, type, lease, subject, upstream, status) VALUES `)
			args := make([]any, 0, 6*m)
			for i, r := range rows[off : off+m] {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?, ?, ?, ?, ?)")
				args = append(args, r.Index, r.Type, r.Lease, r.Subject, r.Upstream, r.Status)
			}
			b.WriteString(` ON CONFLICT (idx) DO NOTHING`)
			if _, err := db.exec(ctx, tx, b.String(), args...); err != nil {
				return err
			}
			off += m
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: index audit entries: %w", err)
	}
	return nil
}

// AuditIndexSize is one more than the newest indexed entry (0 when none
// is): filtered listings see entries below it.
func (db *DB) AuditIndexSize(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := db.queryRow(ctx, `SELECT MAX(idx) FROM audit_index`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: audit index size: %w", err)
	}
	if !n.Valid {
		return 0, nil
	}
	return n.Int64 + 1, nil
}

// AuditQuery selects audit entries, newest first. Empty fields match
// anything; StatusMin and StatusMax (inclusive, 0 = unbounded) bound the
// status.
type AuditQuery struct {
	Type, Lease, Subject, Upstream string
	StatusMin, StatusMax           int
	// Before continues a listing: only entries with a smaller index
	// (0: from the newest).
	Before int64
	Limit  int
	// MaxScan bounds the index rows one page reads (default 20000): a
	// filter that matches few entries returns a short page and Next, so
	// that no page costs more than that scan.
	MaxScan int
}

func (q AuditQuery) filtered() bool {
	return q.Type != "" || q.Lease != "" || q.Subject != "" || q.Upstream != "" || q.StatusMin != 0 || q.StatusMax != 0
}

// AuditPage is one page of FindAudit.
type AuditPage struct {
	Indexes []int64  // newest first
	Entries [][]byte // their exact bytes
	// Next, when not 0, is the Before of the following page: older entries
	// remain to be looked at.
	Next int64
	// Scanned is the index rows a short page looked at (-1 for a full page).
	Scanned int
}

// FindAudit returns a page of the entries q selects, newest first. An
// unfiltered query reads the log itself; a filtered one the audit index
// (entries the indexer has not reached yet are not found), along the
// index of its most selective column.
func (db *DB) FindAudit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.MaxScan <= 0 {
		q.MaxScan = 20000
	}
	var page AuditPage
	if !q.filtered() {
		before := q.Before
		if before <= 0 {
			before = 1 << 62
		}
		rows, err := db.query(ctx, `SELECT idx, data FROM audit_entries WHERE idx < ? ORDER BY idx DESC LIMIT ?`, before, q.Limit+1)
		if err != nil {
			return page, fmt.Errorf("store: find audit entries: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var idx int64
			var data []byte
			if err := rows.Scan(&idx, &data); err != nil {
				return page, fmt.Errorf("store: find audit entries: %w", err)
			}
			if len(page.Indexes) == q.Limit {
				page.Next = page.Indexes[len(page.Indexes)-1]
				break
			}
			page.Indexes = append(page.Indexes, idx)
			page.Entries = append(page.Entries, data)
		}
		return page, rows.Err()
	}
	// The column most likely to narrow the scan leads it; the others are
	// checked on the rows it reads.
	col, val := "", any(nil)
	switch {
	case q.Lease != "":
		col, val = "lease", q.Lease
	case q.Subject != "":
		col, val = "subject", q.Subject
	case q.Upstream != "":
		col, val = "upstream", q.Upstream
	case q.Type != "":
		col, val = "type", q.Type
	case q.StatusMin != 0 && q.StatusMin == q.StatusMax:
		col, val = "status", q.StatusMin
	}
	before := q.Before
	if before <= 0 {
		before = 1 << 62
	}
	// The window: at most MaxScan index rows along the leading column's
	// index, newest first; the other filters apply inside it, in SQL.
	window := `SELECT idx, type, lease, subject, upstream, status FROM audit_index WHERE idx < ?`
	wargs := []any{before}
	if col != "" {
		window = `SELECT idx, type, lease, subject, upstream, status FROM audit_index WHERE ` + col + ` = ? AND idx < ?`
		wargs = []any{val, before}
	}
	window += ` ORDER BY idx DESC LIMIT ?`
	wargs = append(wargs, q.MaxScan)
	var conds []string
	var cargs []any
	add := func(cond string, v any) { conds = append(conds, cond); cargs = append(cargs, v) }
	if q.Type != "" && col != "type" {
		add("type = ?", q.Type)
	}
	if q.Lease != "" && col != "lease" {
		add("lease = ?", q.Lease)
	}
	if q.Subject != "" && col != "subject" {
		add("subject = ?", q.Subject)
	}
	if q.Upstream != "" && col != "upstream" {
		add("upstream = ?", q.Upstream)
	}
	if q.StatusMin != 0 && col != "status" {
		add("status >= ?", q.StatusMin)
	}
	if q.StatusMax != 0 && col != "status" {
		add("status <= ?", q.StatusMax)
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	args := append(append(append([]any{}, wargs...), cargs...), q.Limit)
	rows, err := db.query(ctx, `SELECT idx FROM (`+window+`) w`+where+` ORDER BY idx DESC LIMIT ?`, args...)
	if err != nil {
		return page, fmt.Errorf("store: find audit entries: %w", err)
	}
	for rows.Next() {
		var idx int64
		if err := rows.Scan(&idx); err != nil {
			rows.Close()
			return page, fmt.Errorf("store: find audit entries: %w", err)
		}
		page.Indexes = append(page.Indexes, idx)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return page, fmt.Errorf("store: find audit entries: %w", err)
	}
	if len(page.Indexes) == q.Limit {
		page.Next = page.Indexes[len(page.Indexes)-1]
		page.Scanned = -1 // not counted: the page filled
	} else {
		// A short page: had the window more rows before it? If it was
		// full, older entries remain to be looked at from its oldest.
		var n int64
		var oldest sql.NullInt64
		if err := db.queryRow(ctx, `SELECT COUNT(*), MIN(idx) FROM (`+window+`) w`, wargs...).Scan(&n, &oldest); err != nil {
			return page, fmt.Errorf("store: find audit entries: %w", err)
		}
		page.Scanned = int(n)
		if int(n) == q.MaxScan && oldest.Valid {
			page.Next = oldest.Int64
		}
	}
	es, err := db.auditEntriesAt(ctx, page.Indexes)
	if err != nil {
		return page, err
	}
	page.Entries = es
	return page, nil
}

// auditEntriesAt returns the entries at idxs, in that order; ErrNotFound
// if one is missing.
func (db *DB) auditEntriesAt(ctx context.Context, idxs []int64) ([][]byte, error) {
	if len(idxs) == 0 {
		return nil, nil
	}
	args := make([]any, len(idxs))
	for i, x := range idxs {
		args[i] = x
	}
	rows, err := db.query(ctx, `SELECT idx, data FROM audit_entries WHERE idx IN (?`+strings.Repeat(", ?", len(idxs)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("store: audit entries: %w", err)
	}
	defer rows.Close()
	got := make(map[int64][]byte, len(idxs))
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, fmt.Errorf("store: audit entries: %w", err)
		}
		got[idx] = data
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit entries: %w", err)
	}
	out := make([][]byte, len(idxs))
	for i, x := range idxs {
		d, ok := got[x]
		if !ok {
			return nil, fmt.Errorf("store: audit entry %d: %w", x, ErrNotFound)
		}
		out[i] = d
	}
	return out, nil
}

// AuditEntry returns the entry at idx, or ErrNotFound.
func (db *DB) AuditEntry(ctx context.Context, idx int64) ([]byte, error) {
	es, err := db.auditEntriesAt(ctx, []int64{idx})
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// EachPolicyVersion calls f with the applied policy versions, newest
// first, up to limit, each with its source and MAC (to check it), one row
// at a time so that only one source is held at once.
func (db *DB) EachPolicyVersion(ctx context.Context, limit int, f func(PolicyVersion) error) error {
	rows, err := db.query(ctx, `SELECT version, hash, source, applied_at, applied_by, mac FROM policy_versions ORDER BY version DESC LIMIT ?`, limit)
	if err != nil {
		return fmt.Errorf("store: policy versions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p PolicyVersion
		var at int64
		if err := rows.Scan(&p.Version, &p.Hash, &p.Source, &at, &p.AppliedBy, &p.MAC); err != nil {
			return fmt.Errorf("store: policy versions: %w", err)
		}
		p.AppliedAt = fromNanos(at)
		if err := f(p); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: policy versions: %w", err)
	}
	return nil
}

// PolicyVersionAt returns policy version v, or ErrNotFound.
func (db *DB) PolicyVersionAt(ctx context.Context, v int64) (PolicyVersion, error) {
	var p PolicyVersion
	var at int64
	err := db.queryRow(ctx, `SELECT version, hash, source, applied_at, applied_by, mac FROM policy_versions WHERE version = ?`, v).
		Scan(&p.Version, &p.Hash, &p.Source, &at, &p.AppliedBy, &p.MAC)
	if errors.Is(err, sql.ErrNoRows) {
		return PolicyVersion{}, ErrNotFound
	}
	if err != nil {
		return PolicyVersion{}, fmt.Errorf("store: policy version %d: %w", v, err)
	}
	p.AppliedAt = fromNanos(at)
	return p, nil
}

// SecretVersionMeta is one stored version of a secret, without its value.
type SecretVersionMeta struct {
	Version    int
	KEKVersion int
	CreatedAt  time.Time
	DeletedAt  time.Time // zero: not deleted
	RetireAt   time.Time // zero: not replaced (or kept for no grace period)
	Pending    bool      // stored, not in use yet (Secret.Pending)
}

// SecretVersions returns the versions of name still stored, newest first.
func (db *DB) SecretVersions(ctx context.Context, name string) ([]SecretVersionMeta, error) {
	out, err := queryAll(ctx, db, func(r scanner) (SecretVersionMeta, error) {
		var m SecretVersionMeta
		var created int64
		var deleted, retire sql.NullInt64
		var pending int
		if err := r.Scan(&m.Version, &m.KEKVersion, &created, &deleted, &retire, &pending); err != nil {
			return m, err
		}
		m.CreatedAt, m.Pending = fromNanos(created), pending != 0
		if deleted.Valid {
			m.DeletedAt = fromNanos(deleted.Int64)
		}
		if retire.Valid {
			m.RetireAt = fromNanos(retire.Int64)
		}
		return m, nil
	}, `SELECT version, kek_version, created_at, deleted_at, retire_at, pending FROM secrets WHERE name = ? ORDER BY version DESC`, name)
	if err != nil {
		return nil, fmt.Errorf("store: secret versions of %s: %w", name, err)
	}
	return out, nil
}

// Node is one server's heartbeat.
type Node struct {
	ID        string
	Version   string
	StartedAt time.Time
	SeenAt    time.Time
}

// Heartbeat records that node n is up at n.SeenAt.
func (db *DB) Heartbeat(ctx context.Context, n Node) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.exec(ctx, tx, `INSERT INTO nodes (id, started_at, seen_at, version) VALUES (?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, started_at = excluded.started_at, version = excluded.version`,
			n.ID, nanos(n.StartedAt), nanos(n.SeenAt), n.Version)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: heartbeat: %w", err)
	}
	return nil
}

// Nodes returns the nodes seen since since, most recently seen first.
func (db *DB) Nodes(ctx context.Context, since time.Time) ([]Node, error) {
	out, err := queryAll(ctx, db, func(r scanner) (Node, error) {
		var n Node
		var started, seen int64
		err := r.Scan(&n.ID, &started, &seen, &n.Version)
		n.StartedAt, n.SeenAt = fromNanos(started), fromNanos(seen)
		return n, err
	}, `SELECT id, started_at, seen_at, version FROM nodes WHERE seen_at >= ? ORDER BY seen_at DESC LIMIT 100`, nanos(since))
	if err != nil {
		return nil, fmt.Errorf("store: nodes: %w", err)
	}
	return out, nil
}
