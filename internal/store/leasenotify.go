package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease notifications push lease changes to the other nodes of a cluster
// (PostgreSQL LISTEN/NOTIFY) so that they need not wait for their next
// poll. They are a hint, never the record: a node that misses one (its
// listener reconnecting) still finds the change in the lease feed.

// MaxNotifyPayload is the longest payload NotifyLeases sends (PostgreSQL
// refuses 8000 bytes and more).
const MaxNotifyPayload = 7900

// leaseChannel names the notification channel of the lease events in one
// schema (channels are per database, and names at most 63 bytes long).
func leaseChannel(schema string) string {
	h := sha256.Sum256([]byte(schema))
	return "mayfly_leases_" + hex.EncodeToString(h[:8])
}

// Notifies reports whether this store pushes lease notifications (only
// PostgreSQL does: an embedded store has one node).
func (db *DB) Notifies() bool { return db.postgres }

// NotifyLeases sends payload to every node listening on this database's
// lease channel. The payload must be at most MaxNotifyPayload bytes of
// [a-z0-9_ ] (lease ids and letters), what the listeners parse. It is
// sent in one statement, prepared once per connection (pgx's statement
// cache; inline, PostgreSQL parsed and planned it at every call), on a
// connection of its own (one of the budget's), whose commits do not wait
// for the disk (a lost notification costs a poll interval, never an
// event).
func (db *DB) NotifyLeases(ctx context.Context, payload string) error {
	if !db.postgres {
		return nil
	}
	if len(payload) > MaxNotifyPayload {
		return fmt.Errorf("store: notify: payload of %d bytes", len(payload))
	}
	for i := 0; i < len(payload); i++ {
		c := payload[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == ' ') {
			return fmt.Errorf("store: notify: payload byte %q not allowed", c)
		}
	}
	db.notifyMu.Lock()
	defer db.notifyMu.Unlock()
	if db.notifier == nil || db.notifier.IsClosed() {
		cfg, err := pgConfig(db.dsn)
		if err != nil {
			return fmt.Errorf("store: notify: %w", err)
		}
		// A notification needs a transaction id, hence a commit record;
		// it need not wait for the disk (a lost one costs a poll).
		cfg.RuntimeParams["synchronous_commit"] = "off"
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		db.notifier, err = pgx.ConnectConfig(cctx, cfg)
		cancel()
		if err != nil {
			db.notifier = nil
			return fmt.Errorf("store: notify: %w", redactDSNErr(err, db.dsn))
		}
	}
	if _, err := db.notifier.Exec(ctx, `SELECT pg_notify($1, $2)`, db.channel, payload); err != nil {
		db.notifier.Close(context.Background())
		db.notifier = nil
		return fmt.Errorf("store: notify: %w", err)
	}
	return nil
}

// closeNotifier closes the notifying connection, if open.
func (db *DB) closeNotifier() {
	db.notifyMu.Lock()
	defer db.notifyMu.Unlock()
	if db.notifier != nil {
		db.notifier.Close(context.Background())
		db.notifier = nil
	}
}

// ListenLeases calls fn with the payload of every lease notification on
// this database until ctx ends, on another connection of its own. After each (re)connection it calls fn with "" first: whatever
// was sent while it was not listening has to be found by reading the feed.
// Connection failures are retried with a growing pause (up to 5 s) and
// reported to onErr.
func (db *DB) ListenLeases(ctx context.Context, fn func(payload string), onErr func(error)) {
	if !db.postgres {
		return
	}
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := db.listenOnce(ctx, fn, func() { pause = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errQuiet) {
			continue // the probe closed the connection: open another
		}
		if onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// errQuiet: the connection was closed by the probe of a quiet channel.
var errQuiet = errors.New("store: listen: quiet channel")

func (db *DB) listenOnce(ctx context.Context, fn func(string), connected func()) error {
	cfg, err := pgConfig(db.dsn)
	if err != nil {
		return fmt.Errorf("store: listen: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("store: listen: %w", redactDSNErr(err, db.dsn))
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{db.channel}.Sanitize()); err != nil {
		return fmt.Errorf("store: listen: %w", err)
	}
	connected()
	fn("")
	for {
		// A quiet channel is probed now and then, so a dead connection
		// is noticed (and replaced) rather than waited on for ever.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed() {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err = conn.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return errQuiet
			}
			return fmt.Errorf("store: listen: %w", err)
		}
		fn(n.Payload)
	}
}
