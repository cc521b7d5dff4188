package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Nodes that share PostgreSQL do not give audit entries their tree
// positions themselves (two nodes appending at once would both claim the
// next index): each records its entries in audit_pending, durably and
// without a position, and one node at a time, the sequencer, moves them
// into audit_entries in batches. The sequencer holds a session-level
// advisory lock on a connection of its own and commits its batches on that
// connection, so that when its process or its session dies, the lock and
// with it the right to sequence pass to another node.

// auditSequencerLock is the first advisory lock key of the audit
// sequencer; the second is a hash of the schema, so that logs in separate
// schemas of one database (tests) have separate sequencers.
const auditSequencerLock = 7303886

// AddAuditPending stores records (opaque to the store) in audit_pending in
// one transaction, committed as mode says (as AppendAudit), and returns
// their pending ids, in order. On PostgreSQL with an audit writer, written
// mode is one INSERT statement on that connection.
func (db *DB) AddAuditPending(ctx context.Context, records [][]byte, mode AuditCommit) ([]int64, error) {
	if mode == AuditWritten && db.auditW != nil && len(records) <= auditWriterRows {
		ids, err := db.auditW.add(ctx, db, records)
		if err != nil {
			return nil, fmt.Errorf("store: recording %d pending audit entries: %w", len(records), err)
		}
		return ids, nil
	}
	txf, err := db.txFunc(mode)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(records))
	err = txf(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		for off := 0; off < len(records); off += 500 {
			var err error
			if ids, err = db.insertPending(ctx, tx, records[off:min(off+500, len(records))], ids); err != nil {
				return err
			}
		}
		if len(ids) != len(records) {
			return fmt.Errorf("%d ids for %d rows", len(ids), len(records))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: recording %d pending audit entries: %w", len(records), err)
	}
	return ids, nil
}

// auditWriterBudget is the smallest connection budget that has an audit
// writer: below it, pending records go through the pool's transactions.
const auditWriterBudget = 5

// auditWriterRows bounds the records of one audit writer statement (two
// PostgreSQL parameters short of its limit of 65,535 per statement, with
// room); larger batches take the pool's transaction path.
const auditWriterRows = 10000

// auditWriter is the connection of a node's budget that records its
// written-mode pending audit entries (the forwarded requests' decisions and
// outcomes, the requests' refusals). Its session commits without waiting
// for the disk (synchronous_commit off), so a group commit of pending
// records is one autocommitted INSERT: no BEGIN, SET LOCAL or COMMIT, and
// no wait for the store's write lock, which leases' commits hold. A crash
// of this process cannot lose what it returned (the server has it); the
// batcher makes it durable within Config.SyncDelay as it does its own
// written commits (noteUnsynced). After a failure the next statement opens
// a new session (database/sql): a node recovers with its database.
type auditWriter struct {
	mu     sync.Mutex
	closed bool
	conn   *sql.DB // one connection
}

func newAuditWriter(dsn string) (*auditWriter, error) {
	c, err := ownConn(dsn, map[string]string{"synchronous_commit": "off"})
	if err != nil {
		return nil, err
	}
	return &auditWriter{conn: c}, nil
}

// add inserts records in one statement and tells db's batcher, whose
// flush makes them durable.
func (w *auditWriter) add(ctx context.Context, db *DB, records [][]byte) ([]int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, errClosed
	}
	if err := db.SchemaNewer(); err != nil {
		return nil, err
	}
	ids, err := db.insertPending(ctx, w.conn, records, make([]int64, 0, len(records)))
	if err != nil {
		return nil, err
	}
	if len(ids) != len(records) {
		return nil, fmt.Errorf("%d ids for %d rows", len(ids), len(records))
	}
	db.batch.noteUnsynced()
	return ids, nil
}

// insertPending inserts records into audit_pending in one statement on q
// (a transaction or a connection) and appends their pending ids, in order,
// to ids.
func (db *DB) insertPending(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, records [][]byte, ids []int64) ([]int64, error) {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_pending (data) VALUES `)
	args := make([]any, len(records))
	for i, r := range records {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?)")
		args[i] = r
	}
	// The ids come back in the order of the VALUES list, which is the
	// order the rows are inserted and numbered in.
	b.WriteString(` RETURNING id`)
	rows, err := q.QueryContext(ctx, db.Rebind(b.String()), args...)
	if err != nil {
		return ids, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// close waits for a statement in progress and closes the connection.
func (w *auditWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		w.conn.Close()
	}
}

// AuditSequenced returns the indexes and pending ids of up to limit
// entries from start on, in index order; an entry that was never pending
// has pid -1.
func (db *DB) AuditSequenced(ctx context.Context, start int64, limit int) (idx, pids []int64, err error) {
	rows, err := db.query(ctx, `SELECT idx, pid FROM audit_entries WHERE idx >= ? ORDER BY idx LIMIT ?`, start, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("store: sequenced audit entries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var i int64
		var p sql.NullInt64
		if err := rows.Scan(&i, &p); err != nil {
			return nil, nil, fmt.Errorf("store: sequenced audit entries: %w", err)
		}
		if !p.Valid {
			p.Int64 = -1
		}
		idx, pids = append(idx, i), append(pids, p.Int64)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: sequenced audit entries: %w", err)
	}
	return idx, pids, nil
}

// AuditSequencer is the right to sequence pending audit entries, held by
// one node at a time.
type AuditSequencer struct {
	db     *DB
	conn   *sql.Conn // PostgreSQL: the session holding the lock
	pid    int64     // that session's backend pid
	closed bool
}

// TryAuditSequencer takes the right to sequence if no other node holds it,
// and returns nil, nil if one does. On SQLite, whose one writer is this
// process, it always succeeds.
func (db *DB) TryAuditSequencer(ctx context.Context) (*AuditSequencer, error) {
	if err := db.SchemaNewer(); err != nil {
		return nil, fmt.Errorf("store: audit sequencer: %w", err)
	}
	if !db.postgres {
		return &AuditSequencer{db: db}, nil
	}
	if err := db.takeRight(true); err != nil {
		return nil, fmt.Errorf("store: audit sequencer: %w", err)
	}
	conn, err := db.write.Conn(ctx)
	if err != nil {
		db.dropRight(true)
		return nil, fmt.Errorf("store: audit sequencer: connecting: %w", err)
	}
	var ok bool
	var pid int64
	q := `SELECT pg_try_advisory_lock($1, hashtext(current_schema())), pg_backend_pid()`
	if err := conn.QueryRowContext(ctx, q, auditSequencerLock).Scan(&ok, &pid); err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn }) // drop it: the session's state is unknown
		conn.Close()
		db.dropRight(true)
		return nil, fmt.Errorf("store: audit sequencer: locking: %w", err)
	}
	if !ok {
		conn.Close()
		db.dropRight(true)
		return nil, nil
	}
	// The sequencer's statements read and delete pending records by id,
	// always through the primary key: planned once (generic plans; custom
	// ones cost more than running the read), and never as a scan of
	// audit_pending, whose dead rows pile up between vacuums. Once
	// analysed while small, PostgreSQL chose a sequential scan for the
	// batch's DELETE, which then took ~2 ms a batch and made the
	// sequencer a cluster's first limit. Session settings: Close drops
	// this session instead of returning it to the pool.
	if _, err := conn.ExecContext(ctx, `SELECT set_config('plan_cache_mode', 'force_generic_plan', false), set_config('enable_seqscan', 'off', false)`); err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
		db.dropRight(true)
		return nil, fmt.Errorf("store: audit sequencer: configuring its session: %w", err)
	}
	return &AuditSequencer{db: db, conn: conn, pid: pid}, nil
}

// SessionPID is the PostgreSQL backend pid of the session holding the
// lock (0 on SQLite), for logs and for tests that end that session.
func (s *AuditSequencer) SessionPID() int64 { return s.pid }

// Pending returns up to limit pending records whose id is above after,
// oldest id first, with their ids, leaving out those of skip (records the
// caller holds already: the shared sequencer's held decisions). A reader
// that keeps after close behind what it has read starts in the index
// where its records are, not at the deleted records' entries that pile up
// below them until a vacuum (a read from the start walked ~300 µs of them
// at 100,000).
func (s *AuditSequencer) Pending(ctx context.Context, after int64, limit int, skip []int64) (ids []int64, records [][]byte, err error) {
	if err := s.db.SchemaNewer(); err != nil {
		return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
	}
	if s.conn != nil {
		if skip == nil {
			skip = []int64{} // an empty array, not NULL (<> ALL of NULL is never true)
		}
		// Each row carries the schema version, read in the records'
		// snapshot: a record a newer node wrote after migrating is never
		// handed to this older sequencer, which would refuse it as not
		// sealed its way.
		q := `SELECT id, data, (SELECT value FROM meta WHERE key = 'schema_version') FROM audit_pending WHERE id > $1 AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $3`
		rows, err := s.conn.QueryContext(ctx, q, after, skip, limit)
		if err != nil {
			return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
		}
		var schema []byte
		ids, records, err = scanPending(rows, nil, &schema)
		s.db.noteSchema(schema)
		if err := s.db.SchemaNewer(); err != nil {
			return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
		}
		return ids, records, err
	}
	// SQLite (one process, local): read past them and drop them here.
	rows, err := s.db.query(ctx, `SELECT id, data FROM audit_pending WHERE id > ? ORDER BY id LIMIT ?`, after, limit+len(skip))
	if err != nil {
		return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
	}
	var drop map[int64]bool
	if len(skip) > 0 {
		drop = make(map[int64]bool, len(skip))
		for _, id := range skip {
			drop[id] = true
		}
	}
	ids, records, err = scanPending(rows, drop, nil)
	if len(ids) > limit {
		ids, records = ids[:limit], records[:limit]
	}
	return ids, records, err
}

// scanPending reads the rows of a pending records query, leaving out the
// ids in drop, and closes them. With schema, each row has a third column,
// the schema version, read into it.
func scanPending(rows *sql.Rows, drop map[int64]bool, schema *[]byte) (ids []int64, records [][]byte, err error) {
	defer rows.Close()
	for rows.Next() {
		var id int64
		var data []byte
		dest := []any{&id, &data}
		if schema != nil {
			dest = append(dest, schema)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
		}
		if !drop[id] {
			ids, records = append(ids, id), append(records, data)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: pending audit entries: %w", err)
	}
	return ids, records, nil
}

// Sequence stores entries at [start, start+len(entries)), entry i made
// from the pending record pids[i], the stored hashes at [firstHash, …), and
// deletes those pending records and the merged ones (records folded into
// another's entry: a gateway decision into its request's one entry), in
// one transaction (durable on PostgreSQL; on SQLite written, made durable
// by the next commit within Config.SyncDelay). ErrConflict if the log's
// size is not start or a pending record is gone (another sequencer took
// it): then nothing changes.
func (s *AuditSequencer) Sequence(ctx context.Context, start int64, entries [][]byte, pids, merged []int64, firstHash int64, hashes [][32]byte) error {
	if len(pids) != len(entries) {
		return fmt.Errorf("store: sequence audit: %d pending ids for %d entries", len(pids), len(entries))
	}
	db := s.db
	if err := db.SchemaNewer(); err != nil {
		return fmt.Errorf("store: sequence audit at %d: %w", start, err)
	}
	if s.conn != nil {
		if err := s.sequencePostgres(ctx, start, entries, pids, merged, firstHash, hashes); err != nil {
			return fmt.Errorf("store: sequence audit at %d: %w", start, err)
		}
		return nil
	}
	fn := func(tx *sql.Tx) error {
		if err := db.appendFromPending(ctx, tx, start, entries, pids); err != nil {
			return err
		}
		for _, id := range merged {
			res, err := db.exec(ctx, tx, `DELETE FROM audit_pending WHERE id = ?`, id)
			if err != nil {
				return err
			}
			if got, err := res.RowsAffected(); err != nil || got != 1 {
				return ErrConflict
			}
		}
		return db.insertHashRuns(ctx, tx, firstHash, hashes)
	}
	// SQLite, one writer: the records are durable already (pending), so
	// their sequencing is written without its own fsync. Losing it to a
	// power cut loses nothing: the records stay pending, and the WAL is
	// durable in order, so no later durable commit survives it.
	if err := db.batch.direct(ctx, fn, true, false); err != nil {
		return fmt.Errorf("store: sequence audit at %d: %w", start, err)
	}
	return nil
}

// sequencePostgres is Sequence on PostgreSQL as one autocommitted
// statement (arrays, data-modifying WITH clauses) on the sequencer's own
// session, which every node's entries go through: the size check, the
// entries, the pending records' deletion and the stored hashes were four
// statements and a begin and commit a batch. Every write is conditional on
// the size check, and the last clause divides by zero unless the size was
// right and every pending record was deleted, so that the statement, and
// with it all it wrote, fails (PostgreSQL folds no constant here: the
// divisor depends on the rows). A session that lost the lock (it died)
// cannot run it.
func (s *AuditSequencer) sequencePostgres(ctx context.Context, start int64, entries [][]byte, pids, merged []int64, firstHash int64, hashes [][32]byte) error {
	firsts, runs := hashRuns(firstHash, hashes)
	if merged == nil {
		merged = []int64{} // an empty array, not NULL
	}
	var one int
	err := s.conn.QueryRowContext(ctx, `WITH chk AS (SELECT COALESCE(MAX(idx) + 1, 0) = $1 AS ok FROM audit_entries),
del AS (DELETE FROM audit_pending WHERE id = ANY($3::bigint[] || $7::bigint[]) AND (SELECT ok FROM chk) RETURNING 1),
ins AS (INSERT INTO audit_entries (idx, data, pid)
	SELECT $1 + u.o - 1, u.d, u.p FROM unnest($2::bytea[], $3::bigint[]) WITH ORDINALITY AS u(d, p, o) WHERE (SELECT ok FROM chk)),
runs AS (INSERT INTO audit_hash_runs (first_id, hashes)
	SELECT r.f, r.h FROM unnest($4::bigint[], $5::bytea[]) AS r(f, h) WHERE (SELECT ok FROM chk))
SELECT 1 / CASE WHEN (SELECT ok FROM chk) AND (SELECT count(*) FROM del) = $6 THEN 1 ELSE 0 END`,
		start, entries, pids, firsts, runs, len(pids)+len(merged), merged).Scan(&one)
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "22012" { // division_by_zero: the guard above
		return ErrConflict
	}
	return err
}

// Close gives up the right to sequence.
func (s *AuditSequencer) Close() error {
	if s.conn == nil || s.closed {
		return nil
	}
	s.closed = true
	defer s.db.dropRight(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, auditSequencerLock)
	// Never back to the pool: the session has the sequencer's settings,
	// and after a failure it may hold the lock still.
	s.conn.Raw(func(any) error { return driver.ErrBadConn })
	if cerr := s.conn.Close(); cerr != nil && !errors.Is(cerr, sql.ErrConnDone) {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("store: audit sequencer: unlocking: %w", err)
	}
	return nil
}

// AppendAuditFrom is AppendAudit for entries
// some of which were made from pending records, pids[i] for entry i (-1:
// none): those records are deleted in the same transaction, and
// ErrConflict (nothing changes) if one is gone. It is for a log that has
// its store to itself (the audit journal folding what it sequenced).
func (db *DB) AppendAuditFrom(ctx context.Context, start int64, entries [][]byte, pids []int64, firstHash int64, hashes [][32]byte, mode AuditCommit) error {
	if len(pids) != len(entries) {
		return fmt.Errorf("store: append audit: %d pending ids for %d entries", len(pids), len(entries))
	}
	txf, err := db.txFunc(mode)
	if err != nil {
		return err
	}
	err = txf(ctx, func(tx *sql.Tx) error {
		if err := db.appendFromPending(ctx, tx, start, entries, pids); err != nil {
			return err
		}
		return db.insertHashRuns(ctx, tx, firstHash, hashes)
	})
	if err != nil {
		return fmt.Errorf("store: append audit at %d: %w", start, err)
	}
	return nil
}

// appendFromPending writes entries at [start, …) in tx, entry i made from
// the pending record pids[i] (-1: none), and deletes those records:
// ErrConflict if the log's size is not start or a record is gone (another
// sequencer took it).
func (db *DB) appendFromPending(ctx context.Context, tx *sql.Tx, start int64, entries [][]byte, pids []int64) error {
	var n sql.NullInt64
	if err := db.txQueryRow(ctx, tx, `SELECT MAX(idx) FROM audit_entries`).Scan(&n); err != nil {
		return err
	}
	if size := n.Int64 + 1; !n.Valid && start != 0 || n.Valid && size != start {
		return ErrConflict
	}
	var from []any
	for off := 0; off < len(entries); off += 256 {
		end := min(off+256, len(entries))
		var b strings.Builder
		b.WriteString(`INSERT INTO audit_entries (idx, data, pid) VALUES `)
		args := make([]any, 0, 3*(end-off))
		for i := off; i < end; i++ {
			if i > off {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			var pid any
			if pids[i] >= 0 {
				pid = pids[i]
				from = append(from, pids[i])
			}
			args = append(args, start+int64(i), entries[i], pid)
		}
		if _, err := db.exec(ctx, tx, b.String(), args...); err != nil {
			return err
		}
	}
	for off := 0; off < len(from); off += 256 {
		part := from[off:min(off+256, len(from))]
		res, err := db.exec(ctx, tx, `DELETE FROM audit_pending WHERE id IN (`+strings.Repeat("?, ", len(part)-1)+`?)`, part...)
		if err != nil {
			return err
		}
		if got, err := res.RowsAffected(); err != nil || got != int64(len(part)) {
			return ErrConflict
		}
	}
	return nil
}
