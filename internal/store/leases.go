package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Lease is the stored record of one job token: who it was issued to, what
// it may do, and its life. The token itself is present only as Hash.
type Lease struct {
	ID           string
	Hash         [32]byte
	Issuer       string
	Subject      string
	Job          string
	Claims       map[string]string
	Grants       []string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	Source       string // address the token was exchanged from
	BindSource   bool   // usable only from Source
	JKT          string // DPoP key thumbprint, "" when not key-bound
	Uses         int64
	MaxUses      int64 // 0: unlimited
	RevokedAt    time.Time
	RevokeReason string
	// OnceJTI, when set on insert, records the ID token's jti in the same
	// transaction: the lease is stored only if the jti is new (else
	// ErrReplay), so one ID token yields one lease, in one commit.
	OnceJTI *JTI
	// AtPolicy, when set on insert, is the policy version the lease was
	// decided against: the insert succeeds only if that version is still
	// the one in force when it commits (else ErrPolicyChanged). Applying a
	// version waits for such inserts and they for it, so no lease decided
	// under a replaced version commits after its replacement.
	AtPolicy *int64
	// Note, when set on insert, is the audit record of the issue, written
	// in the insert's own transaction (Changes.Leases: its id).
	Note *Note
}

// ErrPolicyChanged: a lease was decided against a policy version that is
// no longer the one in force.
var ErrPolicyChanged = errors.New("store: the policy version changed")

// JTI is an ID token's single-use key.
type JTI struct {
	Issuer  string
	ID      string
	Expires time.Time
}

// ErrReplay: the ID token's jti was exchanged before.
var ErrReplay = errors.New("store: jti already used")

// LeaseEvent tells other nodes that a lease changed, so their in-memory
// views follow within a poll interval.
type LeaseEvent struct {
	Seq     int64
	LeaseID string
	Kind    string // "renew", "revoke" ("issue" in stores written before 2026-12-06)
}

// LeaseFilter selects leases. Empty fields match anything.
type LeaseFilter struct {
	ID string
	// IDs, when set, selects these leases (at most HashBatch).
	IDs     []string
	Grant   string
	Issuer  string
	Subject string
	Job     string
	// Repository selects leases whose claims name it as their
	// repository (GitHub) or project_path (GitLab).
	Repository string
	// LiveAt, when set, keeps only leases neither revoked nor expired at
	// that time.
	LiveAt time.Time
	Limit  int
	// After, when set, continues a listing: only leases after this position
	// in ListLeases' order (newest first).
	After *LeaseCursor
}

// LeaseCursor is a position in ListLeases' order: issued_at descending,
// then id descending. It names the last lease of the previous page.
type LeaseCursor struct {
	IssuedAt time.Time
	ID       string
}

func (f LeaseFilter) where(postgres bool) (string, []any) {
	var conds []string
	var args []any
	add := func(c string, a any) { conds = append(conds, c); args = append(args, a) }
	if f.ID != "" {
		add("id = ?", f.ID)
	}
	if len(f.IDs) > 0 {
		conds = append(conds, "id IN ("+strings.Repeat("?, ", len(f.IDs)-1)+"?)")
		for _, id := range f.IDs {
			args = append(args, id)
		}
	}
	if f.Grant != "" {
		// Grant names are case-sensitive; SQLite's LIKE is not (it would
		// take "Deploy" for "deploy"), so a plain substring search.
		find := "instr(' ' || grants || ' ', ?) > 0"
		if postgres {
			find = "strpos(' ' || grants || ' ', ?) > 0"
		}
		if strings.ContainsAny(f.Grant, " \t\n\r") {
			// No grant name holds a space; one would match two names of
			// the space-joined list ("read deploy").
			find = "? IS NULL"
		}
		add(find, " "+f.Grant+" ")
	}
	if f.Issuer != "" {
		add("issuer = ?", f.Issuer)
	}
	if f.Subject != "" {
		add("subject = ?", f.Subject)
	}
	if f.Job != "" {
		add("job = ?", f.Job)
	}
	if f.Repository != "" {
		// Through the claim's indexes (migration 11).
		conds = append(conds, "(("+repoExpr(postgres, "repository")+") = ? OR ("+repoExpr(postgres, "project_path")+") = ?)")
		args = append(args, f.Repository, f.Repository)
	}
	if !f.LiveAt.IsZero() {
		// +expires_at keeps SQLite off leases_expires: nearly every stored
		// lease is live, and walking leases_issued in the listing's order
		// finds a page at once, where the expiry index made it sort them all.
		add("revoked_at IS NULL AND +expires_at > ?", nanos(f.LiveAt))
	}
	if c := f.After; c != nil {
		at := nanos(c.IssuedAt)
		// A row value, not "issued_at < ? OR (…)": SQLite seeks
		// leases_issued to it, where the OR made it walk the index from
		// the newest lease to the cursor (80 ms at page 1000 of 100,000).
		add("(issued_at, id) < (?, ?)", at)
		args = append(args, c.ID)
	}
	if len(conds) == 0 {
		return "1 = 1", nil
	}
	return strings.Join(conds, " AND "), args
}

func (f LeaseFilter) selective() bool {
	return f.ID != "" || len(f.IDs) > 0 || f.Grant != "" || f.Issuer != "" || f.Subject != "" || f.Job != "" || f.Repository != ""
}

const leaseCols = `id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoked_at, revoke_reason`

// InsertLease stores a new lease; ErrExists if its id or token hash is
// already taken. It writes no feed event: other nodes read a lease from the
// store when its token first reaches them (lease.Manager.Lookup), so a new
// lease costs them nothing until then.
func (db *DB) InsertLease(ctx context.Context, l Lease) error {
	claims := claimsJSON(l.Claims)
	for _, g := range l.Grants {
		if g == "" || strings.ContainsAny(g, " \t\n") {
			return fmt.Errorf("store: insert lease: bad grant name %q", g)
		}
	}
	bind := 0
	if l.BindSource {
		bind = 1
	}
	// outer is the caller's context: it decides whether the insert is
	// queued (db.tx); once the group commit runs it, the committer decides
	// its fate and the caller waits for that (batcher.do). On SQLite its
	// statements therefore do not watch the caller's context: each watch
	// cost a goroutine and a progress handler in the driver, and one more
	// goroutine in database/sql per query (~3 % of an exchange's CPU).
	// PostgreSQL keeps it: there a statement may wait for a row lock.
	outer := ctx
	if !db.postgres {
		ctx = context.WithoutCancel(ctx)
	}
	err := db.tx(outer, func(tx *sql.Tx) error {
		if db.postgres {
			return db.insertLeaseOne(ctx, tx, l, string(claims), bind)
		}
		if j := l.OnceJTI; j != nil {
			if err := db.execOne(ctx, tx, ErrReplay, `INSERT INTO jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING`,
				j.Issuer, j.ID, nanos(j.Expires)); err != nil {
				return err
			}
		}
		args := []any{l.ID, l.Hash[:], l.Issuer, l.Subject, l.Job, string(claims), strings.Join(l.Grants, " "),
			nanos(l.IssuedAt), nanos(l.ExpiresAt), nanos(l.MaxExpiresAt), l.Source, bind, l.JKT, l.Uses, l.MaxUses,
			optNanos(l.RevokedAt), l.RevokeReason}
		if l.AtPolicy != nil {
			// This transaction holds SQLite's only write lock: the version
			// read here stays in force until it commits. A read and a plain
			// insert, not a conditional insert: for an INSERT … SELECT
			// SQLite keeps a statement journal of every page the insert
			// touches (spilled to a temporary file, two writes a page),
			// which made half of a group commit's writes.
			var v int64
			if err := db.txQueryRow(ctx, tx, `SELECT version FROM policy_head WHERE id = 1`).Scan(&v); err != nil {
				return err
			}
			if v != *l.AtPolicy {
				return ErrPolicyChanged
			}
		}
		if err := db.execOne(ctx, tx, ErrExists, `INSERT INTO leases (`+leaseCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, args...); err != nil {
			return err
		}
		return db.note(ctx, tx, l.Note, Changes{Leases: []string{l.ID}})
	})
	if err != nil {
		return fmt.Errorf("store: insert lease: %w", err)
	}
	return nil
}

// insertLeaseOne is InsertLease's transaction on PostgreSQL as one
// statement: the jti, the lease (only if the jti was new and the policy
// version is the one decided against), its feed event and its audit
// records, chained by data-modifying WITH clauses. Four statements a token
// were four round trips, each a cost to both sides. The records are one
// clause each, so that each id is known to be its record's.
func (db *DB) insertLeaseOne(ctx context.Context, tx *sql.Tx, l Lease, claims string, bind int) error {
	var recs [][]byte
	if n := l.Note; n != nil {
		n.PIDs = n.PIDs[:0]
		if n.Make != nil {
			var err error
			if recs, err = n.Make(Changes{Leases: []string{l.ID}}); err != nil {
				return fmt.Errorf("%w: %w", ErrNoteFailed, err)
			}
		}
	}
	args := []any{l.ID, l.Hash[:], l.Issuer, l.Subject, l.Job, claims, strings.Join(l.Grants, " "),
		nanos(l.IssuedAt), nanos(l.ExpiresAt), nanos(l.MaxExpiresAt), l.Source, bind, l.JKT, l.Uses, l.MaxUses,
		optNanos(l.RevokedAt), l.RevokeReason}
	var q strings.Builder
	q.WriteString(`WITH `)
	var cond []string
	if j := l.OnceJTI; j != nil {
		q.WriteString(`j AS (INSERT INTO jtis (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING RETURNING 1), `)
		args = append([]any{j.Issuer, j.ID, nanos(j.Expires)}, args...)
		cond = append(cond, `EXISTS (SELECT 1 FROM j)`)
	}
	if l.AtPolicy != nil {
		// The key-share lock on policy_head is held until this commit, and
		// a policy apply takes the row for update: one waits for the other.
		cond = append(cond, `EXISTS (SELECT 1 FROM policy_head WHERE id = 1 AND version = ? FOR KEY SHARE)`)
		args = append(args, *l.AtPolicy)
	}
	q.WriteString(`l AS (INSERT INTO leases (` + leaseCols + `) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`)
	if len(cond) > 0 {
		q.WriteString(` WHERE ` + strings.Join(cond, ` AND `))
	}
	q.WriteString(` ON CONFLICT DO NOTHING RETURNING id)`)
	for i, r := range recs {
		fmt.Fprintf(&q, `, p%d AS (INSERT INTO audit_pending (data) SELECT ? WHERE EXISTS (SELECT 1 FROM l) RETURNING id)`, i)
		args = append(args, r)
	}
	q.WriteString(` SELECT `)
	if l.OnceJTI != nil {
		q.WriteString(`(SELECT count(*) FROM j), `)
	} else {
		q.WriteString(`1, `)
	}
	q.WriteString(`(SELECT count(*) FROM l)`)
	var jtis, leases int64
	pids := make([]sql.NullInt64, len(recs))
	dest := []any{&jtis, &leases}
	for i := range recs {
		fmt.Fprintf(&q, `, (SELECT id FROM p%d)`, i)
		dest = append(dest, &pids[i])
	}
	if err := db.txQueryRow(ctx, tx, q.String(), args...).Scan(dest...); err != nil {
		return err
	}
	switch {
	case jtis == 0:
		return ErrReplay
	case leases == 0 && l.AtPolicy != nil:
		var v int64
		if err := db.txQueryRow(ctx, tx, `SELECT version FROM policy_head WHERE id = 1`).Scan(&v); err != nil {
			return err
		}
		if v != *l.AtPolicy {
			return ErrPolicyChanged
		}
		return ErrExists
	case leases == 0:
		return ErrExists
	}
	for _, id := range pids {
		l.Note.PIDs = append(l.Note.PIDs, id.Int64) // a lease inserted: every record was
	}
	return nil
}

// event records a lease change for other nodes. It must follow a write of
// the same transaction (it always does: the lease row it describes): on
// PostgreSQL that write gave the transaction its id before the event took
// its sequence number, which is what lets a poller find the transaction of
// a number it has not seen yet among those in progress.
func (db *DB) event(ctx context.Context, tx *sql.Tx, id, kind string) error {
	_, err := db.exec(ctx, tx, `INSERT INTO lease_events (lease_id, kind, origin) VALUES (?, ?, ?)`, id, kind, db.origin)
	return err
}

type scanner interface{ Scan(...any) error }

func scanLease(r scanner) (Lease, error) {
	var l Lease
	var hash []byte
	var claims, grants string
	var issued, expires, maxExp int64
	var bind int
	var revoked sql.NullInt64
	err := r.Scan(&l.ID, &hash, &l.Issuer, &l.Subject, &l.Job, &claims, &grants, &issued, &expires, &maxExp,
		&l.Source, &bind, &l.JKT, &l.Uses, &l.MaxUses, &revoked, &l.RevokeReason)
	if err != nil {
		return Lease{}, err
	}
	copy(l.Hash[:], hash)
	if err := json.Unmarshal([]byte(claims), &l.Claims); err != nil {
		return Lease{}, fmt.Errorf("lease %s claims: %w", l.ID, err)
	}
	if grants != "" {
		l.Grants = strings.Split(grants, " ")
	}
	l.IssuedAt, l.ExpiresAt, l.MaxExpiresAt = fromNanos(issued), fromNanos(expires), fromNanos(maxExp)
	l.BindSource = bind == 1
	l.RevokedAt = nullNanos(revoked)
	return l, nil
}

// LiveLeaseCounts counts the leases live at now (neither revoked nor
// expired), in all and by grant (a lease with two grants counts for each):
// the whole store's, where a node's view holds only the leases it has met.
func (db *DB) LiveLeaseCounts(ctx context.Context, now time.Time) (int, map[string]int, error) {
	rows, err := db.query(ctx, `SELECT grants, COUNT(*) FROM leases WHERE revoked_at IS NULL AND expires_at > ? GROUP BY grants`, nanos(now))
	if err != nil {
		return 0, nil, fmt.Errorf("store: count live leases: %w", err)
	}
	defer rows.Close()
	total, byGrant := 0, map[string]int{}
	for rows.Next() {
		var grants string
		var n int
		if err := rows.Scan(&grants, &n); err != nil {
			return 0, nil, fmt.Errorf("store: count live leases: %w", err)
		}
		total += n
		for _, g := range strings.Fields(grants) {
			byGrant[g] += n
		}
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("store: count live leases: %w", err)
	}
	return total, byGrant, nil
}

// LeaseByHash finds a lease by its token's keyed hash (live or not).
func (db *DB) LeaseByHash(ctx context.Context, hash [32]byte) (Lease, error) {
	l, err := scanLease(db.queryRow(ctx, `SELECT `+leaseCols+` FROM leases WHERE token_hash = ?`, hash[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, ErrNotFound
	}
	if err != nil {
		return Lease{}, fmt.Errorf("store: find lease: %w", err)
	}
	return l, nil
}

// HashBatch is the most hashes LeasesByHashes and AdminTokensByHashes put
// in one query: well under SQLite's and PostgreSQL's bound-parameter limits.
const HashBatch = 500

// LeasesByHashes finds the leases (live or not) of many token hashes with
// one query per HashBatch hashes: a leak report full of unknown tokens costs
// a few queries, not one per token. Hashes without a lease are absent from
// the map.
func (db *DB) LeasesByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]Lease, error) {
	out := make(map[[32]byte]Lease)
	err := inBatches(hashes, func(in string, args []any) error {
		ls, err := queryAll(ctx, db, scanLease, `SELECT `+leaseCols+` FROM leases WHERE token_hash IN (`+in+`)`, args...)
		for _, l := range ls {
			out[l.Hash] = l
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: find leases by hash: %w", err)
	}
	return out, nil
}

// inBatches calls fn with "?, ?, …" and the arguments for each run of at
// most HashBatch hashes.
func inBatches(hashes [][32]byte, fn func(in string, args []any) error) error {
	for len(hashes) > 0 {
		n := min(len(hashes), HashBatch)
		args := make([]any, n)
		for i := range n {
			args[i] = hashes[i][:]
		}
		if err := fn(strings.Repeat("?, ", n-1)+"?", args); err != nil {
			return err
		}
		hashes = hashes[n:]
	}
	return nil
}

// LeaseByID finds a lease by id.
func (db *DB) LeaseByID(ctx context.Context, id string) (Lease, error) {
	l, err := scanLease(db.queryRow(ctx, `SELECT `+leaseCols+` FROM leases WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, ErrNotFound
	}
	if err != nil {
		return Lease{}, fmt.Errorf("store: find lease %s: %w", id, err)
	}
	return l, nil
}

// ListLeases returns the leases f selects, newest first (ties by id,
// descending, so that a LeaseCursor pages through them exactly once).
func (db *DB) ListLeases(ctx context.Context, f LeaseFilter) ([]Lease, error) {
	where, args := f.where(db.postgres)
	q := `SELECT ` + leaseCols + ` FROM leases WHERE ` + where + ` ORDER BY issued_at DESC, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, db, scanLease, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list leases: %w", err)
	}
	return out, nil
}

// RevokeLeases revokes every unrevoked lease f selects and returns their
// ids. An empty filter is refused: revoking everything must be explicit.
func (db *DB) RevokeLeases(ctx context.Context, f LeaseFilter, at time.Time, reason string) ([]string, error) {
	return db.RevokeLeasesNoted(ctx, f, at, reason, nil)
}

// RevokeLeasesNoted is RevokeLeases with the revocation's audit record n
// (Changes.Leases: the ids revoked) in the same transaction.
func (db *DB) RevokeLeasesNoted(ctx context.Context, f LeaseFilter, at time.Time, reason string, n *Note) ([]string, error) {
	if !f.selective() {
		return nil, errors.New("store: revoke leases: empty filter")
	}
	if len(f.IDs) > HashBatch {
		return nil, fmt.Errorf("store: revoke leases: %d ids (at most %d)", len(f.IDs), HashBatch)
	}
	var ids []string
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if ids, err = db.revokeTx(ctx, tx, f, at, reason); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Leases: ids})
	})
	if err != nil {
		return nil, fmt.Errorf("store: revoke leases: %w", err)
	}
	return ids, nil
}

// revokeTx revokes, inside tx, the unrevoked leases f selects, with their
// events, and returns their ids.
func (db *DB) revokeTx(ctx context.Context, tx *sql.Tx, f LeaseFilter, at time.Time, reason string) ([]string, error) {
	where, args := f.where(db.postgres)
	where += " AND revoked_at IS NULL"
	var ids []string
	rows, err := tx.QueryContext(ctx, db.Rebind(`UPDATE leases SET revoked_at = ?, revoke_reason = ? WHERE `+where+` RETURNING id`),
		append([]any{nanos(at), reason}, args...)...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return ids, db.events(ctx, tx, ids, "revoke")
}

// Leaked is what a leak report revokes: leases by id, admin tokens by
// name, and minted credentials by record id (those a grant shares, which
// no lease holds: they are marked for revocation as RevokeMinted does).
type Leaked struct {
	Leases []string
	// Admins are the admin tokens the report names, as found: each is
	// revoked only while its name is still that token (a revoked name is
	// reused by the next token made under it).
	Admins   []AdminToken
	Minted   []string
	Sessions []string // admin sessions (SSO), by id
}

// RevokeLeaked revokes, in one transaction with the report's audit record
// n, the live leases and admin tokens of a leak report, and returns the
// Changes it made (what was revoked already is left out).
func (db *DB) RevokeLeaked(ctx context.Context, k Leaked, at time.Time, reason string, n *Note) (Changes, error) {
	var c Changes
	err := db.tx(ctx, func(tx *sql.Tx) error {
		c = Changes{}
		for rest := k.Leases; len(rest) > 0; {
			part := rest[:min(len(rest), HashBatch)]
			rest = rest[len(part):]
			ids, err := db.revokeTx(ctx, tx, LeaseFilter{IDs: part}, at, reason)
			if err != nil {
				return err
			}
			c.Leases = append(c.Leases, ids...)
		}
		for _, t := range k.Admins {
			err := db.execOne(ctx, tx, ErrNotFound, `UPDATE admin_tokens SET revoked_at = ? WHERE name = ? AND token_hash = ? AND revoked_at IS NULL`,
				nanos(at), t.Name, t.Hash[:])
			if errors.Is(err, ErrNotFound) {
				continue // revoked meanwhile (and its name perhaps reused)
			}
			if err != nil {
				return err
			}
			c.Admins = append(c.Admins, t.Name)
		}
		for _, id := range k.Minted {
			// Its next attempt is left as it is: a node's worker may hold
			// it (ClaimMinted), as RevokeMinted leaves it.
			err := db.execOne(ctx, tx, ErrNotFound, `UPDATE minted SET state = ?, revoke_reason = ? WHERE id = ? AND state IN (?, ?)`,
				MintRevoking, reason, id, MintPending, MintLive)
			if errors.Is(err, ErrNotFound) {
				continue // revoked meanwhile
			}
			if err != nil {
				return err
			}
			c.Minted = append(c.Minted, id)
		}
		for _, id := range k.Sessions {
			err := db.execOne(ctx, tx, ErrNotFound, `UPDATE admin_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND expires_at > ?`,
				nanos(at), id, nanos(at))
			if errors.Is(err, ErrNotFound) {
				continue // revoked or expired meanwhile
			}
			if err != nil {
				return err
			}
			c.Sessions = append(c.Sessions, id)
		}
		return db.note(ctx, tx, n, c)
	})
	if err != nil {
		return Changes{}, fmt.Errorf("store: revoke leaked tokens: %w", err)
	}
	return c, nil
}

// events inserts one event per id, in multi-row statements.
func (db *DB) events(ctx context.Context, tx *sql.Tx, ids []string, kind string) error {
	const chunk = 300
	for len(ids) > 0 {
		n := min(chunk, len(ids))
		var b strings.Builder
		b.WriteString(`INSERT INTO lease_events (lease_id, kind, origin) VALUES `)
		args := make([]any, 0, 3*n)
		for i, id := range ids[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?, ?)")
			args = append(args, id, kind, db.origin)
		}
		if _, err := db.exec(ctx, tx, b.String(), args...); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// RenewLease moves a live lease's expiry later; ErrNotFound if it is not
// live (revoked, expired, or at its use limit: counted on any node, so a
// node that has not seen the last use must not extend it). An expiry
// already later is kept: two nodes renewing at once may commit in either
// order, and a renewal never shortens a lease.
func (db *DB) RenewLease(ctx context.Context, id string, expires, now time.Time) error {
	return db.RenewLeaseNoted(ctx, id, expires, now, nil)
}

// RenewLeaseNoted is RenewLease with the renewal's audit record n in the
// same transaction.
func (db *DB) RenewLeaseNoted(ctx context.Context, id string, expires, now time.Time, n *Note) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.execOne(ctx, tx, ErrNotFound, `UPDATE leases SET expires_at = CASE WHEN expires_at < ? THEN ? ELSE expires_at END WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND (max_uses <= 0 OR uses < max_uses)`,
			nanos(expires), nanos(expires), id, nanos(now)); err != nil {
			return err
		}
		if err := db.event(ctx, tx, id, "renew"); err != nil {
			return err
		}
		return db.note(ctx, tx, n, Changes{Leases: []string{id}})
	})
	if err != nil {
		return fmt.Errorf("store: renew lease %s: %w", id, err)
	}
	return nil
}

// UseLease counts one use of a lease with a use limit, durably and
// atomically across nodes. ErrConflict: the lease is at its limit, revoked
// or gone; no use was counted.
func (db *DB) UseLease(ctx context.Context, id string) error {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		return db.execOne(ctx, tx, ErrConflict,
			`UPDATE leases SET uses = uses + 1 WHERE id = ? AND revoked_at IS NULL AND uses < max_uses`, id)
	})
	if err != nil {
		return fmt.Errorf("store: use lease: %w", err)
	}
	return nil
}

// AddLeaseUses adds counts of gateway uses to leases (without a limit:
// limited ones count each use with UseLease).
func (db *DB) AddLeaseUses(ctx context.Context, uses map[string]int64) error {
	if len(uses) == 0 {
		return nil
	}
	// One statement per 300 leases, not one per lease: a node flushes
	// the counts of every token used since its last flush.
	ids := make([]string, 0, len(uses))
	for id := range uses {
		ids = append(ids, id)
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.postgres {
			// Nodes flush the counts of the same tokens at once: the rows
			// are locked in one order, by id, first. The update locked them
			// in its plan's order (its VALUES, or where the heap held the
			// rows' versions), which differed between nodes, and PostgreSQL
			// broke each deadlock after a second (deadlock_timeout) by
			// failing a flush, the committer of both nodes stalled meanwhile.
			if _, err := tx.ExecContext(ctx, `SELECT 1 FROM leases WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`, ids); err != nil {
				return err
			}
		}
		for rest := ids; len(rest) > 0; {
			chunk := rest[:min(300, len(rest))]
			rest = rest[len(chunk):]
			var b strings.Builder
			args := make([]any, 0, 2*len(chunk))
			// VALUES columns are column1, column2 on both backends.
			b.WriteString(`UPDATE leases SET uses = uses + v.column2 FROM (VALUES `)
			for i, id := range chunk {
				if i > 0 {
					b.WriteString(", ")
				}
				if db.postgres {
					b.WriteString("(?, ?::bigint)")
				} else {
					b.WriteString("(?, ?)")
				}
				args = append(args, id, uses[id])
			}
			b.WriteString(`) AS v WHERE leases.id = v.column1`)
			if _, err := db.exec(ctx, tx, b.String(), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: add lease uses: %w", err)
	}
	return nil
}

// LeaseEvents returns up to limit events after seq, in order.
func (db *DB) LeaseEvents(ctx context.Context, after int64, limit int) ([]LeaseEvent, error) {
	out, err := queryAll(ctx, db, func(r scanner) (LeaseEvent, error) {
		var e LeaseEvent
		return e, r.Scan(&e.Seq, &e.LeaseID, &e.Kind)
	}, `SELECT seq, lease_id, kind FROM lease_events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("store: lease events: %w", err)
	}
	return out, nil
}

// LastLeaseEvent returns the newest event's seq (0 when none).
func (db *DB) LastLeaseEvent(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := db.queryRow(ctx, `SELECT MAX(seq) FROM lease_events`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: last lease event: %w", err)
	}
	return n.Int64, nil
}

// SweepLeases deletes leases (and their events) that expired before t.
func (db *DB) SweepLeases(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := db.exec(ctx, tx, `DELETE FROM lease_events WHERE lease_id IN (SELECT id FROM leases WHERE expires_at < ?)`, nanos(t)); err != nil {
			return err
		}
		res, err := db.exec(ctx, tx, `DELETE FROM leases WHERE expires_at < ?`, nanos(t))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: sweep leases: %w", err)
	}
	return n, nil
}
