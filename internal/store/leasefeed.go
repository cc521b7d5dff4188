package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// The lease feed is how the nodes sharing a database follow each other's
// changes to the leases they hold: every renewal and revocation writes an
// event with a sequence number, and each node reads the events after the
// last it saw. Issues write none: a node reads another node's lease when
// its token first reaches it (lease.Manager.Lookup).
//
// On PostgreSQL sequence numbers are taken before commit, so a transaction
// can commit a lower number after a higher one was read: a reader that
// moved past it would skip it. The feed never lets that happen: each page
// says which transactions had not ended when it was read (the only ones
// that can still commit a number the reader moved past): those in progress
// below its snapshot's xmax, listed, and every one from its xmax on, which
// the snapshot does not list (a transaction that took its xid after one
// that has ended since, or that has no xid yet). Once such a transaction
// has ended the reader re-reads its events below its cursor (BackRead and
// Above). Nothing is given up after a timeout, and a long transaction (a
// mass revocation) delays only its own events, never later ones.
//
// On SQLite there is one writer and numbers are taken in commit order:
// there are no such gaps and InProgress is always empty.

// feedReaderBudget is the smallest connection budget with a connection of
// its own for the lease feed's reads (below it they take the pool's).
const feedReaderBudget = 6

// newFeedReader opens the lease feed's connection. Its one query is
// planned once per connection (generic plans) instead of at every read
// (0.3-0.6 ms a plan, more than it takes to run), and never as a scan of
// all of lease_events, which grows until swept: while the table is young
// and not yet analysed, PostgreSQL chose sequential scans for it, and a
// generic plan made then would keep one. The settings are the session's,
// so they cannot be given to the shared pool.
func newFeedReader(dsn string) (*sql.DB, error) {
	return ownConn(dsn, map[string]string{"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"})
}

// LeaseChange is one lease event as a following node needs it.
type LeaseChange struct {
	Seq     int64
	Kind    string // "renew", "revoke" ("issue" in stores written before 2026-12-06)
	LeaseID string
	// Own: written through this handle, whose view has it already.
	Own bool
	// Lease is the lease as stored now, for another handle's renew events
	// (nil for other kinds, own events, swept leases).
	Lease *Lease
}

// BackRead asks for the events of a transaction that has ended, with a
// sequence number in (After, Upto].
type BackRead struct {
	Xact        uint64
	After, Upto int64
}

// LeaseFeedRequest is one read of the feed.
type LeaseFeedRequest struct {
	After     int64 // events with a higher sequence number, in order
	Limit     int
	Back      []BackRead // PostgreSQL only
	BackLimit int        // the most events read per BackRead, and per Above transaction
	// Above (PostgreSQL only, 0 for none) asks also for the events with a
	// sequence number at or below AboveUpto of every transaction whose
	// xid is at or above it: the last read's FeedSnapshot.Xmax, and its
	// cursor. They come in LeaseFeed.Back by their xid, which is never a
	// BackRead's (those are below it).
	Above     uint64
	AboveUpto int64
}

// FeedSnapshot says which transactions had not ended when the feed was
// read: those in InProgress and every one with an xid at or above Xmax
// (PostgreSQL xid8 values). Both are empty on SQLite.
type FeedSnapshot struct {
	InProgress []uint64 // nil on SQLite
	Xmax       uint64
}

// LeaseFeed is one page of the feed, read in one snapshot.
type LeaseFeed struct {
	Head []LeaseChange
	// Back holds the events asked for by Back and Above, by transaction,
	// in sequence order.
	Back map[uint64][]LeaseChange
	FeedSnapshot
}

// LeaseFeedStart returns where a reader that has just loaded the live
// leases starts: the newest sequence number, and the transactions that had
// not ended when it was read (their events below it are not visible yet).
// Read it before loading the leases.
func (db *DB) LeaseFeedStart(ctx context.Context) (int64, FeedSnapshot, error) {
	if !db.postgres {
		n, err := db.LastLeaseEvent(ctx)
		return n, FeedSnapshot{}, err
	}
	var n sql.NullInt64
	var snap string
	var schema []byte
	if err := db.read.QueryRowContext(ctx, `SELECT (SELECT MAX(seq) FROM lease_events), pg_current_snapshot()::text, (SELECT value FROM meta WHERE key = 'schema_version')`).Scan(&n, &snap, &schema); err != nil {
		return 0, FeedSnapshot{}, fmt.Errorf("store: lease feed start: %w", err)
	}
	db.noteSchema(schema)
	fs, err := parseSnapshot(snap)
	if err != nil {
		return 0, FeedSnapshot{}, fmt.Errorf("store: lease feed start: %w", err)
	}
	return n.Int64, fs, nil
}

// LeaseFeedRead reads one page of the feed. Another handle's renew events
// come with their lease as stored now, in the same statement: no read per
// event. On PostgreSQL the statement also reads the schema version: every
// node polls the feed (lease.Manager.Run), so each learns within a poll
// that a newer mayfly migrated the database (SchemaNewer).
func (db *DB) LeaseFeedRead(ctx context.Context, r LeaseFeedRequest) (LeaseFeed, error) {
	if r.Limit <= 0 {
		r.Limit = 1000
	}
	if r.BackLimit <= 0 {
		r.BackLimit = r.Limit
	}
	// The limits are written into the query, not bound: with a bound
	// LIMIT a cached generic plan cannot know it is small. The lease of
	// an event is looked up by its key, per event (LIMIT 1 keeps the
	// planner from hashing the whole leases table for every page), and
	// only for another handle's renewals.
	var out LeaseFeed
	var rows *sql.Rows
	var err error
	if db.postgres {
		q := db.read
		if db.feed != nil {
			q = db.feed
		}
		xs, afters, uptos := make([]int64, len(r.Back)), make([]int64, len(r.Back)), make([]int64, len(r.Back))
		for i, b := range r.Back {
			xs[i], afters[i], uptos[i] = int64(b.Xact), b.After, b.Upto
		}
		rows, err = q.QueryContext(ctx, `
WITH snap AS (SELECT pg_current_snapshot()::text AS s, (SELECT value FROM meta WHERE key = 'schema_version') AS v),
head AS (SELECT 0::bigint AS x, seq, lease_id, kind, origin FROM lease_events WHERE seq > $1 ORDER BY seq LIMIT `+strconv.Itoa(r.Limit)+`),
back AS (SELECT r.x, e.seq, e.lease_id, e.kind, e.origin
	FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS r(x, after, upto)
	CROSS JOIN LATERAL (SELECT seq, lease_id, kind, origin FROM lease_events
		WHERE xid = r.x::text::xid8 AND seq > r.after AND seq <= r.upto ORDER BY seq LIMIT `+strconv.Itoa(r.BackLimit)+`) e),
above AS (SELECT a.x::text::bigint, e.seq, e.lease_id, e.kind, e.origin
	FROM (SELECT DISTINCT xid FROM lease_events WHERE $6::bigint > 0 AND xid >= $6::bigint::text::xid8 AND seq <= $7) AS a(x)
	CROSS JOIN LATERAL (SELECT seq, lease_id, kind, origin FROM lease_events
		WHERE xid = a.x AND seq <= $7 ORDER BY seq LIMIT `+strconv.Itoa(r.BackLimit)+`) e),
ev AS (SELECT * FROM head UNION ALL SELECT * FROM back UNION ALL SELECT * FROM above)
SELECT snap.s, snap.v, ev.x, ev.seq, ev.lease_id, ev.kind, ev.origin = $5, `+prefixed("l.", leaseCols)+`
FROM snap LEFT JOIN (ev LEFT JOIN LATERAL (SELECT * FROM leases
	WHERE leases.id = ev.lease_id AND ev.kind = 'renew' AND ev.origin <> $5 LIMIT 1) l ON true) ON true
ORDER BY ev.x NULLS FIRST, ev.seq`, r.After, xs, afters, uptos, db.origin, int64(r.Above), r.AboveUpto)
	} else {
		rows, err = db.read.QueryContext(ctx, `
SELECT '', NULL, 0, e.seq, e.lease_id, e.kind, e.origin = ?, `+prefixed("l.", leaseCols)+`
FROM lease_events e LEFT JOIN leases l ON l.id = e.lease_id AND e.kind = 'renew' AND e.origin <> ?
WHERE e.seq > ? ORDER BY e.seq LIMIT ?`, db.origin, db.origin, r.After, r.Limit)
	}
	if err != nil {
		return out, fmt.Errorf("store: lease feed: %w", err)
	}
	defer rows.Close()
	snapSeen := false
	for rows.Next() {
		var snap string
		var schema []byte
		var x, seq sql.NullInt64
		var id, kind sql.NullString
		var own sql.NullBool
		var nl nullLease
		dest := append([]any{&snap, &schema, &x, &seq, &id, &kind, &own}, nl.dest()...)
		if err := rows.Scan(dest...); err != nil {
			return out, fmt.Errorf("store: lease feed: %w", err)
		}
		if db.postgres && !snapSeen {
			snapSeen = true
			if out.FeedSnapshot, err = parseSnapshot(snap); err != nil {
				return out, fmt.Errorf("store: lease feed: %w", err)
			}
			db.noteSchema(schema)
		}
		if !seq.Valid {
			continue // the snapshot's row of an empty page
		}
		c := LeaseChange{Seq: seq.Int64, Kind: kind.String, LeaseID: id.String, Own: own.Bool}
		if nl.id.Valid {
			l, err := nl.lease()
			if err != nil {
				return out, fmt.Errorf("store: lease feed: %w", err)
			}
			c.Lease = &l
		}
		if x.Int64 == 0 {
			out.Head = append(out.Head, c)
			continue
		}
		if out.Back == nil {
			out.Back = map[uint64][]LeaseChange{}
		}
		out.Back[uint64(x.Int64)] = append(out.Back[uint64(x.Int64)], c)
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("store: lease feed: %w", err)
	}
	return out, nil
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = p + parts[i]
	}
	return strings.Join(parts, ", ")
}

// nullLease scans a lease from an outer join, where every column may be
// NULL.
type nullLease struct {
	id, issuer, subject, job, claims, grants, source, jkt, reason sql.NullString
	hash                                                          []byte
	issued, expires, maxExp, bind, uses, maxUses, revoked         sql.NullInt64
}

func (n *nullLease) dest() []any {
	return []any{&n.id, &n.hash, &n.issuer, &n.subject, &n.job, &n.claims, &n.grants, &n.issued, &n.expires, &n.maxExp,
		&n.source, &n.bind, &n.jkt, &n.uses, &n.maxUses, &n.revoked, &n.reason}
}

func (n *nullLease) lease() (Lease, error) {
	l := Lease{ID: n.id.String, Issuer: n.issuer.String, Subject: n.subject.String, Job: n.job.String,
		IssuedAt: fromNanos(n.issued.Int64), ExpiresAt: fromNanos(n.expires.Int64), MaxExpiresAt: fromNanos(n.maxExp.Int64),
		Source: n.source.String, BindSource: n.bind.Int64 == 1, JKT: n.jkt.String, Uses: n.uses.Int64, MaxUses: n.maxUses.Int64,
		RevokedAt: nullNanos(n.revoked), RevokeReason: n.reason.String}
	copy(l.Hash[:], n.hash)
	if err := json.Unmarshal([]byte(n.claims.String), &l.Claims); err != nil {
		return Lease{}, fmt.Errorf("lease %s claims: %w", l.ID, err)
	}
	if n.grants.String != "" {
		l.Grants = strings.Split(n.grants.String, " ")
	}
	return l, nil
}

// parseSnapshot returns the xmax and the in-progress list of a
// pg_snapshot's text form, xmin:xmax:xip,xip…
func parseSnapshot(s string) (FeedSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return FeedSnapshot{}, fmt.Errorf("snapshot %q: not xmin:xmax:xip", s)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return FeedSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
	}
	if xmax == 0 { // would ask for no transaction above it (LeaseFeedRequest.Above)
		return FeedSnapshot{}, fmt.Errorf("snapshot %q: xmax 0", s)
	}
	out := FeedSnapshot{InProgress: []uint64{}, Xmax: xmax}
	if parts[2] == "" {
		return out, nil
	}
	for _, f := range strings.Split(parts[2], ",") {
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return FeedSnapshot{}, fmt.Errorf("snapshot %q: %w", s, err)
		}
		out.InProgress = append(out.InProgress, x)
	}
	return out, nil
}
