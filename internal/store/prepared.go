package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache keeps prepared statements for the SQLite write connection, so
// the group committer does not parse the same SQL for every write (a third
// of its CPU). Statements are prepared between transactions: the single
// write connection is busy inside one. PostgreSQL needs none of this (pgx
// caches statements per connection itself).
type stmtCache struct {
	db      *sql.DB
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool
}

// maxCached bounds the cache; queries built with a variable number of rows
// would otherwise grow it without end.
const maxCached = 128

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// get returns the prepared statement for q, or nil after noting q to be
// prepared once the connection is free.
func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.stmts[q]; st != nil {
		return st
	}
	if len(c.stmts)+len(c.pending) < maxCached {
		c.pending[q] = true
	}
	return nil
}

// prepare prepares the noted queries; the committer calls it between
// transactions. A query that fails to prepare is simply not cached.
func (c *stmtCache) prepare() {
	c.mu.Lock()
	qs := make([]string, 0, len(c.pending))
	for q := range c.pending {
		qs = append(qs, q)
	}
	c.mu.Unlock()
	// Not under c.mu: preparing waits for the write connection, which a
	// transaction that itself asks the cache may be holding.
	for _, q := range qs {
		st, err := c.db.PrepareContext(context.Background(), q)
		c.mu.Lock()
		delete(c.pending, q)
		if err == nil {
			if old := c.stmts[q]; old != nil {
				old.Close()
			}
			c.stmts[q] = st
		}
		c.mu.Unlock()
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
}

// exec runs q (with ? placeholders) inside tx, prepared when it can be.
func (db *DB) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	q = db.Rebind(q)
	if db.stmts != nil {
		if st := db.stmts.get(q); st != nil {
			return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
		}
	}
	return tx.ExecContext(ctx, q, args...)
}

// txQueryRow runs a one-row query inside tx, prepared when it can be.
func (db *DB) txQueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	q = db.Rebind(q)
	if db.stmts != nil {
		if st := db.stmts.get(q); st != nil {
			return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
		}
	}
	return tx.QueryRowContext(ctx, q, args...)
}

// execOne runs q inside tx and requires it to change a row: errNone
// (ErrNotFound, ErrConflict, ErrExists…) tells the caller it did not.
func (db *DB) execOne(ctx context.Context, tx *sql.Tx, errNone error, q string, args ...any) error {
	res, err := db.exec(ctx, tx, q, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errNone
	}
	return nil
}
