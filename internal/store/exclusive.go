package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// exclusiveLock is the first advisory lock key of named exclusive rights;
// the second hashes the name and the schema (tests keep clusters in
// separate schemas of one database).
const exclusiveLock = 7303887

// Exclusive is a named right that one process at a time holds among the
// nodes sharing a database, for work that must not run twice (delivering
// alerts, say). On PostgreSQL it is a session-level advisory lock on a
// connection of its own: it passes to another node when the holder
// releases it or its session dies. On SQLite, whose one writer is this
// process, it is always granted.
type Exclusive struct {
	db       *DB
	conn     *sql.Conn
	name     string
	released bool
}

// TryExclusive takes the right called name if no other node holds it, and
// returns nil, nil if one does.
func (db *DB) TryExclusive(ctx context.Context, name string) (*Exclusive, error) {
	if err := db.SchemaNewer(); err != nil {
		return nil, fmt.Errorf("store: exclusive %s: %w", name, err)
	}
	if !db.postgres {
		return &Exclusive{name: name}, nil
	}
	if err := db.takeRight(false); err != nil {
		return nil, fmt.Errorf("store: exclusive %s: %w", name, err)
	}
	conn, err := db.write.Conn(ctx)
	if err != nil {
		db.dropRight(false)
		return nil, fmt.Errorf("store: exclusive %s: connecting: %w", name, err)
	}
	var ok bool
	q := `SELECT pg_try_advisory_lock($1, hashtext(current_schema() || ':' || $2))`
	if err := conn.QueryRowContext(ctx, q, exclusiveLock, name).Scan(&ok); err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn }) // its session's state is unknown: drop it
		conn.Close()
		db.dropRight(false)
		return nil, fmt.Errorf("store: exclusive %s: locking: %w", name, err)
	}
	if !ok {
		conn.Close()
		db.dropRight(false)
		return nil, nil
	}
	return &Exclusive{db: db, conn: conn, name: name}, nil
}

// Alive reports whether the right is still held: on PostgreSQL, whether
// the session holding it still answers, and whether this node may still
// work (SchemaNewer). A holder that gets an error must stop the work and
// Release.
func (x *Exclusive) Alive(ctx context.Context) error {
	if x.conn == nil {
		return nil
	}
	if err := x.db.SchemaNewer(); err != nil {
		return fmt.Errorf("store: exclusive %s: %w", x.name, err)
	}
	if err := x.conn.PingContext(ctx); err != nil {
		return fmt.Errorf("store: exclusive %s: its session is gone: %w", x.name, err)
	}
	return nil
}

// Release gives the right up. It unlocks first, so that the right is
// free when Release returns (closing the connection alone frees it only
// once the server's backend has exited, some time later). The connection
// is then dropped rather than returned to the pool, so that a failed
// unlock can never leave the lock held by an idle pooled session.
func (x *Exclusive) Release() error {
	if x.conn == nil || x.released {
		return nil
	}
	x.released = true
	defer x.db.dropRight(false)
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	q := `SELECT pg_advisory_unlock($1, hashtext(current_schema() || ':' || $2))`
	var unlocked bool
	unlockErr := x.conn.QueryRowContext(ctx, q, exclusiveLock, x.name).Scan(&unlocked)
	x.conn.Raw(func(any) error { return driver.ErrBadConn }) // marks it for closing
	if err := x.conn.Close(); err != nil && !errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("store: exclusive %s: releasing: %w", x.name, err)
	}
	if unlockErr != nil && !errors.Is(unlockErr, sql.ErrConnDone) {
		// The session is closed all the same, which frees the right soon.
		return fmt.Errorf("store: exclusive %s: unlocking: %w", x.name, unlockErr)
	}
	return nil
}

// releaseTimeout bounds the unlock; past it the closed session frees the
// right on its own.
const releaseTimeout = 5 * time.Second
