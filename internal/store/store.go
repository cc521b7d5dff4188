// Package store owns mayfly's durable state: one DB type over embedded
// SQLite (the default) or PostgreSQL (for several nodes), the schema and its
// migrations, and group commit of writes.
//
// It holds no business rules: it never decides who may do what, never sees a
// token in the clear and never decrypts anything. Callers hand it keyed hashes
// and sealed bytes. It never writes to a database whose schema is newer than
// this binary's (SchemaNewer).
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"           // registers the "sqlite" database/sql driver
)

// notFound is ErrNotFound. It also matches fs.ErrNotExist, so that
// layers which must not import the store (api) can tell "no such thing"
// from a failure.
type notFound struct{}

func (notFound) Error() string        { return "store: not found" }
func (notFound) Is(target error) bool { return target == fs.ErrNotExist }

// Errors callers test with errors.Is.
var (
	ErrNotFound error = notFound{}
	ErrConflict       = errors.New("store: conflict")
	ErrExists         = errors.New("store: already exists")
	// ErrKeyVersionGone: a sealed row names a keyring version that no
	// longer exists (the writer missed a master-key rotation); nothing
	// was written.
	ErrKeyVersionGone = errors.New("store: keyring version no longer exists")
	// ErrConnBudget: a right (TryExclusive, TryAuditSequencer) was
	// refused because the session it holds would take a pooled
	// connection the rest of the node needs.
	ErrConnBudget = errors.New("store: the connection budget has no pooled connection to spare for this right")
	// ErrSecretChanged: a write made from one version of a secret (a
	// rotation's) found that version no longer live: the secret was
	// replaced or deleted since it was read. Nothing was written.
	ErrSecretChanged = errors.New("store: the secret was replaced or deleted since the version the write was made from")
)

// Config chooses a backend: PostgresDSN when set, else SQLite at Path.
type Config struct {
	Path        string // SQLite database file
	PostgresDSN string // PostgreSQL DSN (pgx syntax)
	// BusyTimeout bounds how long a SQLite statement waits for a lock.
	BusyTimeout time.Duration
	// ObserveCommit, when set, is told each group commit's duration, how
	// many writes it carried and whether it failed (for metrics).
	ObserveCommit func(d time.Duration, writes int, err error)
	// SyncDelay bounds how long a written-mode commit (AuditWritten)
	// waits before a durable commit covers it (default 5ms).
	SyncDelay time.Duration
	// MaxConns is the most PostgreSQL connections this handle opens: the
	// pool, the lease listener, the lease notifier, from 5 on the audit
	// writer and from 6 on the lease feed's reader together (default
	// DefaultMaxConns, at least 4). The audit sequencer's session and
	// exclusive rights' sessions are pooled connections (takeRight).
	// Every node of a cluster holds up to this many: their sum must stay
	// below the server's max_connections (100 by default).
	MaxConns int
	// ReadMmap, for SQLite, lets the read connections map up to this many
	// bytes of the database file instead of reading it a page per system
	// call (PRAGMA mmap_size): for a one-off scan of the whole file such
	// as offline verification. 0 keeps SQLite's default (no mapping).
	ReadMmap int64
}

// DefaultMaxConns is a node's PostgreSQL connection budget when none is
// configured: nine nodes fit a default server (max_connections 100, 3 of
// them reserved for superusers).
const DefaultMaxConns = 10

// DB is mayfly's storage. It is safe for concurrent use.
type DB struct {
	postgres bool
	dsn      string // PostgreSQL: for the lease listener's own connection
	origin   string // names the lease events this handle writes (one node)
	channel  string // PostgreSQL: the NOTIFY channel of this schema's lease events

	notifyMu sync.Mutex
	notifier *pgx.Conn // PostgreSQL: sends lease notifications (opened on first use)
	write    *sql.DB   // SQLite: one connection; Postgres: the shared pool
	read     *sql.DB   // SQLite: a pool of readers; Postgres: the shared pool
	batch    *batcher
	stmts    *stmtCache   // SQLite only
	auditW   *auditWriter // PostgreSQL with a budget of 5 or more: records written-mode pending audit entries
	feed     *sql.DB      // PostgreSQL with a budget of 6 or more: the lease feed's reader (feedReaderBudget)

	// PostgreSQL: the pool's size, and the pooled connections that
	// rights hold for as long as they are held (takeRight).
	pool     int
	rightsMu sync.Mutex
	seqs     int // the audit sequencer's sessions
	excls    int // exclusive rights' sessions

	// newer is the schema version, newer than this binary's, that a read
	// made anyway (the lease poll, the readiness ping, the sequencer's
	// round) found recorded: a newer mayfly migrated the database under
	// this node, which from then on writes nothing (SchemaNewer). 0: none.
	newer atomic.Int64

	rotHead atomic.Pointer[headKeeper] // KeepRotationHead's
}

// Open opens (creating if needed) the database and applies migrations. It
// refuses a database whose schema is newer than this binary knows.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	var db *DB
	var err error
	if cfg.PostgresDSN != "" {
		db, err = openPostgres(ctx, cfg.PostgresDSN, cfg.MaxConns)
	} else {
		db, err = openSQLite(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.closeConns()
		return nil, err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		db.closeConns()
		return nil, fmt.Errorf("store: origin: %w", err)
	}
	db.origin = hex.EncodeToString(rnd[:])
	if db.postgres {
		// LISTEN/NOTIFY channels are per database, not per schema: name
		// the channel after the schema so that two installations in one
		// database never wake each other.
		var schema string
		if err := db.read.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			db.closeConns()
			return nil, fmt.Errorf("store: current schema: %w", err)
		}
		db.channel = leaseChannel(schema)
	}
	var between func()
	if !db.postgres {
		db.stmts = newStmtCache(db.write)
		between = db.stmts.prepare
	}
	if cfg.SyncDelay <= 0 {
		cfg.SyncDelay = 5 * time.Millisecond
	}
	db.batch = newBatcher(db.write, db.postgres, 512, cfg.SyncDelay, cfg.ObserveCommit, between)
	return db, nil
}

func openSQLite(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: open sqlite: no path")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	abs, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	// Create the file owner-only before SQLite opens it: SQLite makes it
	// 0644 (less the umask), and a chmod after would leave a window in
	// which another local user opens it and keeps it open. Its -wal and
	// -shm files take this file's mode. One left readable is closed up.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	err = f.Chmod(0o600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	for _, side := range []string{abs + "-wal", abs + "-shm"} {
		if err := os.Chmod(side, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: open sqlite: %w", err)
		}
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = 5 * time.Second
	}
	// WAL with synchronous=FULL: a commit is on disk before it returns, and a
	// crash at any moment leaves the last committed state. fullfsync: on
	// macOS fsync leaves the data in the drive's cache, and only
	// F_FULLFSYNC, which SQLite uses with it, does not (a no-op elsewhere).
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "fullfsync(1)")
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	// Deleted or overwritten bytes are zeroed, not left in a page's free
	// space or on the freelist: a destroyed secret version's sealed bytes
	// must not outlive it in the file (a later backup of it would open
	// with the master key).
	q.Add("_pragma", "secure_delete(1)")
	q.Add("_txlock", "immediate")
	dsn := sqliteURI(abs) + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", cfg.Path, err)
	}
	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	rq.Add("_pragma", "query_only(1)")
	if cfg.ReadMmap > 0 {
		rq.Add("_pragma", "mmap_size("+strconv.FormatInt(cfg.ReadMmap, 10)+")")
	}
	r, err := sql.Open("sqlite", sqliteURI(abs)+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open sqlite readers: %w", err)
	}
	r.SetMaxOpenConns(4)
	// Keep every reader open: with database/sql's default of two idle
	// connections, a third concurrent read closed its connection after
	// use, throwing away its page cache (offline verify, reading pages
	// three at a time, spent a quarter of its CPU in that churn).
	r.SetMaxIdleConns(4)
	return &DB{write: w, read: r}, nil
}

func openPostgres(ctx context.Context, dsn string, maxConns int) (*DB, error) {
	if maxConns == 0 {
		maxConns = DefaultMaxConns
	}
	if maxConns < 4 {
		// A pool of one was the audit sequencer's whenever this node
		// sequenced, and every other read and write (a revocation) of
		// the node waited for it.
		return nil, fmt.Errorf("store: open postgres: a connection budget of %d is too small (at least 4: two pooled, one for the audit sequencer and one for everything else, the lease listener and notifier)", maxConns)
	}
	cfg, err := pgConfig(dsn)
	if err != nil {
		return nil, err
	}
	p := stdlib.OpenDB(*cfg)
	// Two connections of the budget are the lease listener's and
	// notifier's, from 5 on one is the audit writer's and from 6 on one
	// the lease feed reader's (the pool keeps at least 2: the audit
	// sequencer holds one while it is).
	pool := maxConns - 2
	var aw *auditWriter
	if maxConns >= auditWriterBudget {
		if aw, err = newAuditWriter(dsn); err != nil {
			p.Close()
			return nil, err
		}
		pool--
	}
	var feed *sql.DB
	if maxConns >= feedReaderBudget {
		if feed, err = newFeedReader(dsn); err != nil {
			p.Close()
			if aw != nil {
				aw.close()
			}
			return nil, err
		}
		pool--
	}
	p.SetMaxOpenConns(pool)
	p.SetMaxIdleConns(pool)
	p.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.PingContext(pctx); err != nil {
		p.Close()
		if aw != nil {
			aw.close()
		}
		if feed != nil {
			feed.Close()
		}
		return nil, fmt.Errorf("store: connect postgres: %w", redactDSNErr(err, dsn))
	}
	return &DB{postgres: true, dsn: dsn, write: p, read: p, auditW: aw, feed: feed, pool: pool}, nil
}

// minFree is how many pooled connections the rights held for long (the
// audit sequencer's session, exclusive rights' sessions) always leave to
// everything else: every read, and the committer's transactions.
const minFree = 1

// takeRight counts a pooled connection about to be held for as long as a
// right is (seq: the audit sequencer's; else an exclusive right's), or
// refuses it: the rights must leave minFree connections to everything
// else, and exclusive rights also one for the audit sequencer, which a
// node may have to become at any time. A node whose pool the rights held
// whole stalled every read and write, revocations included, until one was
// given up (never, for an exclusive right whose session stayed up).
// SQLite holds no connection for a right.
func (db *DB) takeRight(seq bool) error {
	if !db.postgres {
		return nil
	}
	db.rightsMu.Lock()
	defer db.rightsMu.Unlock()
	seqs, excls := db.seqs, db.excls
	if seq {
		seqs++
	} else {
		excls++
		seqs = max(seqs, 1)
	}
	if seqs+excls+minFree > db.pool {
		return fmt.Errorf("%w: a pool of %d connections keeps one for the audit sequencer and %d for everything else, and %d are held by rights already: raise postgres_max_conns", ErrConnBudget, db.pool, minFree, db.seqs+db.excls)
	}
	if seq {
		db.seqs++
	} else {
		db.excls++
	}
	return nil
}

// dropRight gives back what takeRight counted.
func (db *DB) dropRight(seq bool) {
	if !db.postgres {
		return
	}
	db.rightsMu.Lock()
	defer db.rightsMu.Unlock()
	if seq {
		db.seqs--
	} else {
		db.excls--
	}
}

// pgConfig parses dsn into the configuration of every session a node
// opens: the DSN's own settings, and server-side TCP keepalives unless it
// sets them. They ask PostgreSQL to probe a session's connection after
// 10 s of silence and to drop it after three unanswered probes 5 s apart:
// without them, a node cut off from the database by the network (no FIN,
// no RST) kept its sessions on the server, and with them the audit
// sequencer's and the exclusive rights' advisory locks, for the operating
// system's default of two hours, so no other node could take over the
// log. Unix sockets ignore them.
func pgConfig(dsn string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open postgres: %w", redactDSNErr(err, dsn))
	}
	for _, kv := range [...][2]string{
		{"tcp_keepalives_idle", "10"},
		{"tcp_keepalives_interval", "5"},
		{"tcp_keepalives_count", "3"},
	} {
		if _, set := cfg.RuntimeParams[kv[0]]; !set {
			cfg.RuntimeParams[kv[0]] = kv[1]
		}
	}
	return cfg, nil
}

// ownConn opens a connection of its own (a pool of one) whose session has
// settings the shared pool's sessions must not have.
func ownConn(dsn string, settings map[string]string) (*sql.DB, error) {
	cfg, err := pgConfig(dsn)
	if err != nil {
		return nil, err
	}
	maps.Copy(cfg.RuntimeParams, settings)
	c := stdlib.OpenDB(*cfg)
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	c.SetConnMaxIdleTime(5 * time.Minute)
	return c, nil
}

// redactDSNErr keeps a DSN's password out of an error message.
func redactDSNErr(err error, dsn string) error {
	u, perr := url.Parse(dsn)
	if perr != nil || u.User == nil {
		return err
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
	}
	return err
}

// Backend names the database in use: "sqlite" or "postgres".
func (db *DB) Backend() string {
	if db.postgres {
		return "postgres"
	}
	return "sqlite"
}

// Close stops the committer after pending writes and closes connections.
func (db *DB) Close() error {
	if db.auditW != nil {
		// First: what it wrote is then made durable by the batcher's
		// last flush.
		db.auditW.close()
	}
	if db.batch != nil {
		db.batch.close()
	}
	if db.stmts != nil {
		db.stmts.close()
	}
	return db.closeConns()
}

func (db *DB) closeConns() error {
	db.closeNotifier()
	if db.auditW != nil {
		db.auditW.close()
	}
	err := db.write.Close()
	if db.feed != nil {
		err = errors.Join(err, db.feed.Close())
	}
	if db.read != db.write {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// SQL exposes the underlying pool, for tests that tamper with rows.
func (db *DB) SQL() *sql.DB { return db.write }

// Rebind turns ? placeholders into $1, $2… on PostgreSQL.
func (db *DB) Rebind(q string) string {
	if !db.postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// Ping checks, for readiness, that the store answers and would accept a
// write, without writing: a probe must not cost a durable commit on every
// node every few seconds. On PostgreSQL the server must be a primary that
// accepts writes; on SQLite the last group commit must not have failed.
func (db *DB) Ping(ctx context.Context) error {
	var schema []byte
	if db.postgres {
		var recovery bool
		var readOnly string
		if err := db.read.QueryRowContext(ctx, `SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'), (SELECT value FROM meta WHERE key = 'schema_version')`).Scan(&recovery, &readOnly, &schema); err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
		if recovery || readOnly == "on" {
			return errors.New("store: ping: the PostgreSQL server does not accept writes")
		}
	} else {
		if err := db.read.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&schema); err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
	}
	db.noteSchema(schema)
	if err := db.SchemaNewer(); err != nil {
		return err
	}
	if err := db.batch.lastError(); err != nil {
		return fmt.Errorf("store: ping: the last commit failed: %w", err)
	}
	return nil
}

// tx runs fn in a transaction shared with other concurrent writers (group
// commit). fn's effects are kept only if fn returns nil, and only once the
// commit is durable does tx return.
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := db.SchemaNewer(); err != nil {
		return err
	}
	return db.batch.do(ctx, fn)
}

// txDirect is tx for a caller that group-commits by itself (the audit
// log): fn runs in a transaction of its own, in the caller's goroutine,
// without a hand-off to the committer.
func (db *DB) txDirect(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := db.SchemaNewer(); err != nil {
		return err
	}
	return db.batch.direct(ctx, fn, false, false)
}

// txDirectWritten is txDirect for records that must survive a crash of
// this process but may wait up to Config.SyncDelay to survive a crash of
// the machine: it returns once the commit is written (to the WAL file
// through the OS, or to the PostgreSQL server), without waiting for the
// disk.
func (db *DB) txDirectWritten(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := db.SchemaNewer(); err != nil {
		return err
	}
	return db.batch.direct(ctx, fn, true, false)
}

// txDirectKept is txDirectWritten for records another file already keeps
// against a crash of the machine (the audit journal): it sets no deadline
// for a durable commit; the next durable one covers it.
func (db *DB) txDirectKept(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := db.SchemaNewer(); err != nil {
		return err
	}
	return db.batch.direct(ctx, fn, true, true)
}

func (db *DB) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, db.Rebind(q), args...)
}

func (db *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, db.Rebind(q), args...)
}

// queryAll runs q and reads every row it returns with scan (scanLease,
// scanAdmin, …): the one loop of every listing, so that none forgets
// rows.Err or returns part of a listing with its error.
func queryAll[T any](ctx context.Context, db *DB, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := db.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// isUniqueViolation tells a duplicate key from other failures on both
// backends, so racing writers on separate nodes get ErrConflict/ErrExists
// rather than a driver error.
func isUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	msg := err.Error()
	return strings.Contains(msg, "UNIQUE constraint failed") || strings.Contains(msg, "constraint failed: UNIQUE")
}

// nanos is t as Unix nanoseconds, saturated at the int64 range (years
// 1678 to 2262): UnixNano wraps beyond it, and a time far ahead (an ID
// token's exp in 2300, remembered until then) would come back as one in
// the past and be swept early.
func nanos(t time.Time) int64 {
	const maxSec = math.MaxInt64 / int64(time.Second)
	switch sec := t.Unix(); {
	case t.IsZero():
		return 0
	case sec >= maxSec:
		return math.MaxInt64
	case sec <= -maxSec:
		return math.MinInt64
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func nullNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return fromNanos(n.Int64)
}

func optNanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}
