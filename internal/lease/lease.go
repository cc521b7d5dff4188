// Package lease issues, looks up, renews and revokes job tokens, and keeps
// the in-memory view of live tokens that the gateway consults on every
// request without a store round trip. The same code path that revokes in the
// store updates the view, and a poller follows other nodes' changes to the
// leases in it. A node reads another node's lease from the store when its
// token first reaches it, so a new lease costs the other nodes of a cluster
// nothing until then.
//
// It never keeps or returns a token in the clear after minting it: the view
// and the store are keyed by the token's keyed hash.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Errors from Lookup; the API maps all of them to 401 invalid_token. (A
// store that fails while Lookup reads a lease the view lacks is an error
// wrapping failclosed.ErrUnavailable instead: 503.)
var (
	ErrUnknown = errors.New("unknown token")
	ErrExpired = errors.New("token expired")
	ErrRevoked = errors.New("token revoked")
	ErrUsedUp  = errors.New("token use limit reached")
)

// Store is what the manager needs of the store.
type Store interface {
	InsertLease(ctx context.Context, l store.Lease) error
	LeaseByID(ctx context.Context, id string) (store.Lease, error)
	LeaseByHash(ctx context.Context, hash [32]byte) (store.Lease, error)
	LiveLeaseCounts(ctx context.Context, now time.Time) (int, map[string]int, error)
	LeasesByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]store.Lease, error)
	ListLeases(ctx context.Context, f store.LeaseFilter) ([]store.Lease, error)
	RevokeLeasesNoted(ctx context.Context, f store.LeaseFilter, at time.Time, reason string, n *store.Note) ([]string, error)
	RevokeLeaked(ctx context.Context, k store.Leaked, at time.Time, reason string, n *store.Note) (store.Changes, error)
	RenewLeaseNoted(ctx context.Context, id string, expires, now time.Time, n *store.Note) error
	AddLeaseUses(ctx context.Context, uses map[string]int64) error
	UseLease(ctx context.Context, id string) error
	LeaseFeedStart(ctx context.Context) (int64, store.FeedSnapshot, error)
	LeaseFeedRead(ctx context.Context, r store.LeaseFeedRequest) (store.LeaseFeed, error)
	SweepLeases(ctx context.Context, before time.Time) (int64, error)
}

// Notifier pushes lease changes to the other nodes of a cluster and hears
// theirs. A Store that has one (PostgreSQL) is used through it; the feed
// stays the record and the poll its safety net.
type Notifier interface {
	Notifies() bool
	NotifyLeases(ctx context.Context, payload string) error
	ListenLeases(ctx context.Context, fn func(payload string), onErr func(error))
}

// Live is a lease as the gateway sees it. Its identity fields never change;
// expiry and revocation are read through methods because renewals and
// revocations update them concurrently.
type Live struct {
	ID           string
	Issuer       string
	Subject      string
	Job          string
	Claims       map[string]string
	Grants       []string
	IssuedAt     time.Time
	MaxExpiresAt time.Time
	Source       netip.Addr
	BindSource   bool
	JKT          string
	MaxUses      int64

	hash    [32]byte
	expires atomic.Int64 // unix nanos
	revoked atomic.Bool
	uses    atomic.Int64 // all uses known on this node
	pending atomic.Int64 // uses not yet written to the store
}

// ExpiresAt is the lease's current expiry.
func (l *Live) ExpiresAt() time.Time { return time.Unix(0, l.expires.Load()).UTC() }

// extend moves the lease's expiry to e unless it is already later: a
// renewal here and one from another node (through the feed) may land in
// either order, and the store keeps the later.
func (l *Live) extend(e int64) {
	for {
		cur := l.expires.Load()
		if e <= cur || l.expires.CompareAndSwap(cur, e) {
			return
		}
	}
}

// Revoked reports whether the lease is revoked.
func (l *Live) Revoked() bool { return l.revoked.Load() }

// Uses is the number of gateway uses seen.
func (l *Live) Uses() int64 { return l.uses.Load() }

// Options tune a Manager.
type Options struct {
	Now          func() time.Time
	Logger       *slog.Logger
	PollInterval time.Duration // how often to follow other nodes (default 250ms)
	Retention    time.Duration // how long expired leases stay listable (default 24h)
	// PageSize is how many events one read of the feed takes (default
	// 5000): a mass revocation is followed in pages, not in one read.
	PageSize int
}

// Manager owns job tokens and their leases.
type Manager struct {
	st     Store
	hasher *token.Hasher
	opts   Options

	mu   sync.RWMutex
	live map[[32]byte]*Live
	byID map[string]*Live

	// unseen counts changes to leases that were not in the view when they
	// were applied (a revocation or renewal of another node's lease). It
	// moves under mu (read-locked at least); fetch compares it under the
	// write lock, so that a lease read from the store before such a change
	// is read again rather than put in the view without it.
	unseen atomic.Uint64
	// absent remembers token hashes the store has no lease for (at most
	// maxAbsent, then forgotten at once): tokens are random, so a hash
	// unknown now stays unknown, and a token sent again and again costs
	// one read. Under mu.
	absent map[[32]byte]struct{}

	pollMu sync.Mutex
	cursor int64 // the highest sequence number read
	// inProgress holds the transactions in progress when the feed was
	// last read, and xmax the first xid that had not ended then and is
	// not in it (0: none): events of theirs, and of every transaction
	// from xmax on, below the cursor may still appear.
	inProgress map[uint64]bool
	xmax       uint64
	// back holds ended transactions whose events below the cursor are
	// (re)read, one page a poll.
	back []store.BackRead

	notifier Notifier      // nil: no push (embedded store)
	origin   string        // names this node in notifications
	kick     chan struct{} // a notification asks for a poll
	changed  atomic.Bool   // this node renewed since it last told the others
}

// New returns a Manager over st hashing tokens with hasher. Call Load
// before serving and Run to follow other nodes and sweep.
func New(st Store, hasher *token.Hasher, opts Options) *Manager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Retention == 0 {
		opts.Retention = 24 * time.Hour
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 5000
	}
	m := &Manager{st: st, hasher: hasher, opts: opts, live: map[[32]byte]*Live{}, byID: map[string]*Live{},
		absent: map[[32]byte]struct{}{}, inProgress: map[uint64]bool{}, kick: make(chan struct{}, 1)}
	if n, ok := st.(Notifier); ok && n.Notifies() {
		m.notifier = n
		var b [6]byte
		rand.Read(b[:])
		m.origin = hex.EncodeToString(b[:])
	}
	return m
}

// Load fills the view with every live lease in the store.
func (m *Manager) Load(ctx context.Context) error {
	// Where the feed starts is read before the leases: a change committed
	// in between is then both loaded and read again (harmless), never
	// neither.
	seq, snap, err := m.st.LeaseFeedStart(ctx)
	if err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}
	ls, err := m.st.ListLeases(ctx, store.LeaseFilter{LiveAt: m.opts.Now()})
	if err != nil {
		return fmt.Errorf("lease: load: %w", err)
	}
	m.mu.Lock()
	for _, l := range ls {
		m.putLocked(fromStore(l))
	}
	m.mu.Unlock()
	m.pollMu.Lock()
	m.cursor = seq
	clear(m.inProgress)
	for _, x := range snap.InProgress {
		m.inProgress[x] = true
	}
	m.xmax = snap.Xmax
	m.back = nil
	m.pollMu.Unlock()
	return nil
}

func fromStore(s store.Lease) *Live {
	l := &Live{ID: s.ID, Issuer: s.Issuer, Subject: s.Subject, Job: s.Job, Claims: s.Claims, Grants: s.Grants,
		IssuedAt: s.IssuedAt, MaxExpiresAt: s.MaxExpiresAt, BindSource: s.BindSource, JKT: s.JKT, MaxUses: s.MaxUses, hash: s.Hash}
	l.Source, _ = netip.ParseAddr(s.Source)
	l.expires.Store(s.ExpiresAt.UnixNano())
	l.revoked.Store(!s.RevokedAt.IsZero())
	l.uses.Store(s.Uses)
	return l
}

func (m *Manager) putLocked(l *Live) {
	if old, ok := m.byID[l.ID]; ok {
		delete(m.live, old.hash)
	}
	m.live[l.hash] = l
	m.byID[l.ID] = l
}

// Filter selects leases to list or revoke, and Cursor is where a listing
// resumes: the store's types, named here so that callers above the
// capabilities (api) need not reach down to the store.
type (
	Filter = store.LeaseFilter
	Cursor = store.LeaseCursor
)

// Request describes a token to issue. The caller (the exchange) has
// already verified the identity and decided the grants and lifetimes.
type Request struct {
	Issuer, Subject, Job string
	Claims               map[string]string
	Grants               []string
	TTL                  time.Duration // this token's life
	MaxTTL               time.Duration // the most renewals may extend it to, from now
	Source               netip.Addr
	BindSource           bool
	JKT                  string
	MaxUses              int64
	// JTI, when set, is recorded with the lease in one commit; a jti seen
	// before fails the issue with store.ErrReplay.
	JTI *store.JTI
	// AtPolicy, when set, is the policy version the issue was decided
	// against: it commits only while that version is in force (else
	// store.ErrPolicyChanged, and nothing is issued).
	AtPolicy *int64
	// Note, when set, is the issue's audit record, written in the lease
	// insert's own transaction (Changes.Leases: its id; Changes.Hint: the
	// token's hint).
	Note *store.Note
}

// Issue mints a job token, stores its lease durably and adds it to the
// view. The token is returned once and never kept.
func (m *Manager) Issue(ctx context.Context, r Request) (string, *Live, error) {
	if r.TTL <= 0 || r.MaxTTL < r.TTL {
		return "", nil, fmt.Errorf("lease: issue: bad lifetimes ttl=%v max=%v", r.TTL, r.MaxTTL)
	}
	tok, err := token.New(token.Job)
	if err != nil {
		return "", nil, fmt.Errorf("lease: issue: %w", err)
	}
	now := m.opts.Now().UTC()
	id, err := newID(now)
	if err != nil {
		return "", nil, fmt.Errorf("lease: issue: %w", err)
	}
	sl := store.Lease{ID: id, Hash: m.hasher.Sum(tok), Issuer: r.Issuer, Subject: r.Subject, Job: r.Job, Claims: r.Claims,
		Grants: r.Grants, IssuedAt: now, ExpiresAt: now.Add(r.TTL), MaxExpiresAt: now.Add(r.MaxTTL),
		BindSource: r.BindSource, JKT: r.JKT, MaxUses: r.MaxUses, OnceJTI: r.JTI, AtPolicy: r.AtPolicy}
	if r.Source.IsValid() {
		sl.Source = r.Source.String()
	}
	if n := r.Note; n != nil {
		hint := token.Hint(tok)
		sl.Note = &store.Note{Make: func(c store.Changes) ([][]byte, error) {
			c.Hint = hint
			return n.Make(c)
		}}
		defer func() { n.PIDs, n.Records = sl.Note.PIDs, sl.Note.Records }()
	}
	// Into the view before the store: once the lease is committed, a
	// revocation by filter (on this node, or on another one and applied by
	// the poller) must find it here. Put after the commit, it would replace
	// a revocation made in between. Nobody holds the token yet.
	l := fromStore(sl)
	m.mu.Lock()
	m.putLocked(l)
	m.mu.Unlock()
	if err := m.st.InsertLease(ctx, sl); err != nil {
		m.mu.Lock()
		if m.byID[l.ID] == l {
			delete(m.byID, l.ID)
			delete(m.live, l.hash)
		}
		m.mu.Unlock()
		return "", nil, fmt.Errorf("lease: issue: %w", err)
	}
	return tok, l, nil
}

// newID makes a lease id: the issue second (4 bytes, big-endian) and 8
// random bytes, in hex. Ids in issue order keep the store's indexes on
// them (the lease's key, the audit index by lease) appending to their last
// pages, where random ids made every exchange rewrite a page of each.
func newID(now time.Time) (string, error) {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(now.Unix()))
	if _, err := rand.Read(b[4:]); err != nil {
		return "", err
	}
	return "lse_" + hex.EncodeToString(b[:]), nil
}

// Lookup finds the live lease of a token. It is the gateway's hot path:
// one keyed hash and one map read. A token the view does not hold (another
// node issued it since this one loaded, or the sweep dropped it) is read
// from the store once and kept in the view.
func (m *Manager) Lookup(ctx context.Context, tok string) (*Live, error) {
	if k, err := token.Parse(tok); err != nil || k != token.Job {
		return nil, ErrUnknown
	}
	h := m.hasher.Sum(tok)
	m.mu.RLock()
	l := m.live[h]
	m.mu.RUnlock()
	if l == nil {
		var err error
		if l, err = m.fetch(ctx, h); err != nil {
			return nil, err
		}
	}
	if err := m.check(l); err != nil {
		return l, err
	}
	return l, nil
}

// maxAbsent bounds the hashes remembered as having no lease.
const maxAbsent = 4096

// fetch reads the lease of token hash h from the store into the view, as
// it is stored (revoked or expired ones too: a leaked token sent again and
// again is then refused from memory until the sweep).
//
// A revocation of a lease the view lacks changes nothing in it, so one
// applied while the lease is being read would be lost when the read is
// put in. It is not: such changes move unseen, and a read that overlapped
// one is read again (it sees the change, which committed before it was
// applied here).
func (m *Manager) fetch(ctx context.Context, h [32]byte) (*Live, error) {
	m.mu.RLock()
	_, absent := m.absent[h]
	m.mu.RUnlock()
	if absent {
		return nil, ErrUnknown
	}
	for range 4 {
		seen := m.unseen.Load()
		s, err := m.st.LeaseByHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			m.mu.Lock()
			if len(m.absent) >= maxAbsent {
				clear(m.absent)
			}
			m.absent[h] = struct{}{}
			m.mu.Unlock()
			return nil, ErrUnknown
		}
		if err != nil {
			return nil, fmt.Errorf("lease: %w: reading a token's lease: %w", failclosed.ErrUnavailable, err)
		}
		m.mu.Lock()
		if l := m.live[h]; l != nil { // put in meanwhile (its own lookup, or an issue)
			m.mu.Unlock()
			return l, nil
		}
		if m.unseen.Load() == seen {
			l := fromStore(s)
			m.putLocked(l)
			m.mu.Unlock()
			return l, nil
		}
		m.mu.Unlock()
	}
	return nil, fmt.Errorf("lease: %w: reading a token's lease: changed at every read", failclosed.ErrUnavailable)
}

func (m *Manager) check(l *Live) error {
	if err := m.Ended(l); err != nil {
		return err
	}
	if l.MaxUses > 0 && l.uses.Load() >= l.MaxUses {
		return ErrUsedUp
	}
	return nil
}

// Ended reports whether l was revoked (ErrRevoked) or expired (ErrExpired)
// since it was looked up, by this manager's clock: for a request or an
// upgraded connection that outlives its Lookup. It reads the view only (two
// atomic loads), so a gateway may call it before every forward.
func (m *Manager) Ended(l *Live) error {
	if l.revoked.Load() {
		return ErrRevoked
	}
	if m.opts.Now().UnixNano() >= l.expires.Load() {
		return ErrExpired
	}
	return nil
}

// Use counts one gateway use of l, refusing when its use limit is reached.
// A lease with a limit counts each use in the store before it returns, so
// that the limit holds across nodes and restarts (a store failure is
// returned as such: the caller answers 503); others are counted here and
// written in the background.
func (m *Manager) Use(ctx context.Context, l *Live) error {
	if l.MaxUses <= 0 {
		l.uses.Add(1)
		l.pending.Add(1)
		return nil
	}
	if l.uses.Load() >= l.MaxUses {
		return ErrUsedUp
	}
	if err := m.st.UseLease(ctx, l.ID); err != nil {
		if errors.Is(err, store.ErrConflict) {
			l.uses.Store(l.MaxUses) // used up elsewhere (or revoked: the poller says so)
			return ErrUsedUp
		}
		return fmt.Errorf("lease: counting a use: %w", err)
	}
	l.uses.Add(1)
	return nil
}

// Renew extends a live token by ttl from now, never past its max. It
// returns the lease with its new expiry.
func (m *Manager) Renew(ctx context.Context, tok string, ttl time.Duration) (*Live, error) {
	return m.RenewWith(ctx, tok, ttl, nil)
}

// RenewWith is Renew with the renewal's audit record: note, when set, is
// called with the lease and its new expiry before anything changes, and
// the Note it returns is written in the renewal's own transaction; an
// error from it, or from the Note, leaves the lease as it was.
func (m *Manager) RenewWith(ctx context.Context, tok string, ttl time.Duration, note func(l *Live, exp time.Time) (*store.Note, error)) (*Live, error) {
	l, err := m.Lookup(ctx, tok)
	if err != nil {
		return nil, err
	}
	now := m.opts.Now().UTC()
	exp := now.Add(ttl)
	if exp.After(l.MaxExpiresAt) {
		exp = l.MaxExpiresAt
	}
	if exp.UnixNano() <= l.expires.Load() {
		return l, nil // already at its max: nothing to extend
	}
	var n *store.Note
	if note != nil {
		if n, err = note(l, exp); err != nil {
			return nil, err
		}
		// The note may take a while (the lease's minted credentials are
		// extended upstream): the token must still be live when the
		// renewal is written, not only when it was asked for. Meanwhile
		// an expired token was refused, and its credentials revoked.
		now = m.opts.Now().UTC()
	}
	if err := m.st.RenewLeaseNoted(ctx, l.ID, exp, now, n); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, m.notRenewed(ctx, l, now)
		}
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	l.extend(exp.UnixNano())
	m.changed.Store(true)
	return l, nil
}

// notRenewed says why the store refused to renew l at now: revoked,
// expired, or used up. The view may not know yet (another node revoked it,
// or counted its last use), so the store's row decides; the view is then
// brought up to date with it.
func (m *Manager) notRenewed(ctx context.Context, l *Live, now time.Time) error {
	s, err := m.st.LeaseByID(ctx, l.ID)
	switch {
	case err != nil:
		// Gone (swept) or unreadable: the renewal did not happen either way.
		if !l.revoked.Load() && now.UnixNano() >= l.expires.Load() {
			return ErrExpired
		}
		return ErrRevoked
	case !s.RevokedAt.IsZero():
		l.revoked.Store(true)
		return ErrRevoked
	case !s.ExpiresAt.After(now):
		return ErrExpired
	case s.MaxUses > 0 && s.Uses >= s.MaxUses:
		l.uses.Store(max(l.uses.Load(), s.Uses))
		return ErrUsedUp
	}
	return ErrRevoked
}

// RevokeToken revokes the lease of a token. It reports the lease (nil when
// the token is unknown) and whether this call revoked it.
func (m *Manager) RevokeToken(ctx context.Context, tok, reason string) (*Live, bool, error) {
	return m.RevokeTokenNoted(ctx, tok, reason, nil)
}

// RevokeTokenNoted is RevokeToken with the revocation's audit record:
// note, when set, is called with the lease about to be revoked, and the
// Note it returns is written in the revocation's own transaction.
func (m *Manager) RevokeTokenNoted(ctx context.Context, tok, reason string, note func(l *Live) *store.Note) (*Live, bool, error) {
	if k, err := token.Parse(tok); err != nil || k != token.Job {
		return nil, false, nil
	}
	h := m.hasher.Sum(tok)
	m.mu.RLock()
	l := m.live[h]
	m.mu.RUnlock()
	if l == nil {
		// Not in the view: swept after expiry or revocation, or never issued.
		s, err := m.st.LeaseByHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("lease: revoke: %w", err)
		}
		l = fromStore(s)
		if !s.RevokedAt.IsZero() || !s.ExpiresAt.After(m.opts.Now()) {
			return l, false, nil
		}
	}
	if l.revoked.Load() {
		return l, false, nil
	}
	var n *store.Note
	if note != nil {
		n = note(l)
	}
	ids, err := m.RevokeNoted(ctx, store.LeaseFilter{ID: l.ID}, reason, n)
	if err != nil {
		return l, false, err
	}
	return l, len(ids) == 1, nil
}

// TokenRevocation is what RevokeTokens did with one token.
type TokenRevocation struct {
	// Lease is the token's lease, nil when the token is unknown.
	Lease *Live
	// Revoked is true when this call revoked it (false: it was already
	// revoked or expired, or is unknown).
	Revoked bool
}

// RevokeTokens revokes the leases of many tokens at once (a leak report)
// and returns one result per token, in order. Tokens that are not job
// tokens are unknown at no cost; the others missing from the view are
// looked up in the store together, a few queries in all rather than one
// per token, so a report full of made-up tokens costs little. What also
// names (leases, admin tokens, minted credentials) is revoked in the same
// transaction, and the report's audit records, which note makes from what
// it revoked, are written there too: all of it commits, or none. It
// returns what the transaction changed and the store.Note that wrote the
// records (nil without note).
func (m *Manager) RevokeTokens(ctx context.Context, toks []string, also store.Leaked, reason string, note RevocationNote) ([]TokenRevocation, store.Changes, *store.Note, error) {
	out := make([]TokenRevocation, len(toks))
	hashes := make([][32]byte, len(toks))
	job := make([]bool, len(toks))
	var missing [][32]byte
	m.mu.RLock()
	for i, tok := range toks {
		if k, err := token.Parse(tok); err != nil || k != token.Job {
			continue
		}
		job[i] = true
		hashes[i] = m.hasher.Sum(tok)
		if l := m.live[hashes[i]]; l != nil {
			out[i].Lease = l
		} else {
			missing = append(missing, hashes[i])
		}
	}
	m.mu.RUnlock()
	var stored map[[32]byte]store.Lease
	if len(missing) > 0 {
		var err error
		if stored, err = m.st.LeasesByHashes(ctx, missing); err != nil {
			return nil, store.Changes{}, nil, fmt.Errorf("lease: revoke: %w", err)
		}
	}
	now := m.opts.Now()
	var ids []string
	for i := range toks {
		if !job[i] {
			continue
		}
		l := out[i].Lease
		if l == nil {
			s, ok := stored[hashes[i]]
			if !ok {
				continue
			}
			l = fromStore(s)
			out[i].Lease = l
			if !s.RevokedAt.IsZero() || !s.ExpiresAt.After(now) {
				continue
			}
		}
		if !l.revoked.Load() && !slices.Contains(ids, l.ID) {
			ids = append(ids, l.ID)
		}
	}
	for _, id := range also.Leases {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	also.Leases = ids
	if len(ids) == 0 && len(also.Admins) == 0 && len(also.Minted) == 0 && len(also.Sessions) == 0 && note == nil {
		return out, store.Changes{}, nil, nil
	}
	// Which tokens this call revoked, from what the transaction did: the
	// note's records say it, so they are made inside it.
	settle := func(c store.Changes) {
		done := make(map[string]bool, len(c.Leases))
		for _, id := range c.Leases {
			done[id] = true
		}
		for i := range out {
			out[i].Revoked = false
			if l := out[i].Lease; l != nil && done[l.ID] {
				out[i].Revoked = true
				delete(done, l.ID) // a token given twice is revoked once
			}
		}
	}
	var n *store.Note
	if note != nil {
		n = &store.Note{Make: func(c store.Changes) ([][]byte, error) {
			settle(c)
			return note(out, c)
		}}
	}
	c, err := m.st.RevokeLeaked(ctx, also, now.UTC(), reason, n)
	if err != nil {
		return nil, store.Changes{}, nil, fmt.Errorf("lease: revoke: %w", err)
	}
	settle(c)
	m.Revoked(ctx, c.Leases)
	return out, c, n, nil
}

// RevocationNote makes a leak report's audit records inside its
// transaction, from what it revoked: res has one result per token (Revoked
// set), c all the transaction changed.
type RevocationNote func(res []TokenRevocation, c store.Changes) ([][]byte, error)

// Revoked brings the view up to date with leases revoked in the store by
// someone else on this node (a policy apply), and tells the other nodes.
func (m *Manager) Revoked(ctx context.Context, ids []string) {
	m.markRevoked(ids)
	m.tellRevoked(ctx, ids)
}

// Revoke revokes every lease f selects, in the store and then in the view,
// and returns their ids. An empty filter is refused.
func (m *Manager) Revoke(ctx context.Context, f store.LeaseFilter, reason string) ([]string, error) {
	return m.RevokeNoted(ctx, f, reason, nil)
}

// RevokeNoted is Revoke with the revocation's audit record n, written in
// its own transaction (Changes.Leases: the ids revoked).
func (m *Manager) RevokeNoted(ctx context.Context, f store.LeaseFilter, reason string, n *store.Note) ([]string, error) {
	ids, err := m.st.RevokeLeasesNoted(ctx, f, m.opts.Now().UTC(), reason, n)
	if err != nil {
		return nil, fmt.Errorf("lease: revoke: %w", err)
	}
	m.markRevoked(ids)
	m.tellRevoked(ctx, ids)
	return ids, nil
}

func (m *Manager) markRevoked(ids []string) {
	m.mu.RLock()
	missed := false
	for _, id := range ids {
		if l := m.byID[id]; l != nil {
			l.revoked.Store(true)
		} else {
			missed = true
		}
	}
	if missed {
		m.unseen.Add(1) // see fetch
	}
	m.mu.RUnlock()
}

// Get returns a lease by id from the view.
func (m *Manager) Get(id string) (*Live, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	l, ok := m.byID[id]
	return l, ok
}

// LiveCount is the number of leases in the view.
func (m *Manager) LiveCount() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byID)
}

// Active is the number of leases in the view that are neither revoked nor
// expired: the tokens that would work right now on this node without a
// store read. It walks the view, so it is for metrics, not for a request
// path. In a cluster the view holds the leases this node issued, met or
// found at its start: Counts gives the whole store's.
func (m *Manager) Active() int {
	now := m.opts.Now().UnixNano()
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for _, l := range m.byID {
		if !l.revoked.Load() && now < l.expires.Load() {
			n++
		}
	}
	return n
}

// List returns stored leases (never tokens) that f selects.
func (m *Manager) List(ctx context.Context, f store.LeaseFilter) ([]store.Lease, error) {
	ls, err := m.st.ListLeases(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("lease: list: %w", err)
	}
	return ls, nil
}

// Run follows other nodes' lease changes, flushes use counts and sweeps
// expired leases until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if m.notifier != nil {
		wg.Go(func() {
			m.notifier.ListenLeases(ctx, m.heard, func(err error) {
				m.opts.Logger.Warn("lease notifications: listener failed; polling meanwhile", "err", err)
			})
		})
		wg.Go(func() { m.tellChanges(ctx) })
	}
	poll := time.NewTicker(m.opts.PollInterval)
	defer poll.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			m.flushUses(context.Background())
			return
		case <-m.kick:
			// Polls asked for by notifications are spaced by 25ms, so
			// that what a node reads per second does not grow with the
			// number of nodes telling it.
			if d := notifySpacing - time.Since(last); d > 0 {
				select {
				case <-ctx.Done():
					continue
				case <-time.After(d):
				}
			}
			last = time.Now()
			if err := m.Poll(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("lease poll failed", "err", err)
			}
		case <-poll.C:
			last = time.Now()
			if err := m.Poll(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("lease poll failed", "err", err)
			}
			m.flushUses(ctx)
		case <-sweep.C:
			m.Sweep(ctx)
		}
	}
}

// Poll applies the lease events written by other nodes since the last
// poll to the view, page by page until it has caught up. It never skips
// an event: those of a transaction that was still running when the feed
// was read past them are read once it has ended, however long it runs,
// without holding up later events meanwhile.
//
// One read a page: each read also asks for the events at or below the
// cursor of every transaction that had not ended at the last read (those
// it listed in progress and every one from its xmax on). In the read's
// own snapshot those that have ended show them (and the snapshot says they
// have ended), those still running show none and are asked again next
// time. So a transaction's end costs no read of its own: under steady
// writes some transaction ends between any two reads, and reading its
// events in a second read made every poll two.
func (m *Manager) Poll(ctx context.Context) error {
	m.pollMu.Lock()
	defer m.pollMu.Unlock()
	for {
		before := m.cursor
		back := slices.Clip(m.back) // ended transactions with events left to page through
		for x := range m.inProgress {
			back = append(back, store.BackRead{Xact: x, Upto: before})
		}
		page, err := m.st.LeaseFeedRead(ctx, store.LeaseFeedRequest{After: m.cursor, Limit: m.opts.PageSize,
			Back: back, BackLimit: m.opts.PageSize, Above: m.xmax, AboveUpto: before})
		if err != nil {
			return fmt.Errorf("lease: poll: %w", err)
		}
		m.applyChanges(page.Head)
		if n := len(page.Head); n > 0 {
			m.cursor = page.Head[n-1].Seq
		}
		more := len(page.Head) == m.opts.PageSize
		var left []store.BackRead
		for _, b := range back {
			cs := page.Back[b.Xact]
			delete(page.Back, b.Xact)
			m.applyChanges(cs)
			if len(cs) == m.opts.PageSize {
				b.After = cs[len(cs)-1].Seq
				left = append(left, b)
				more = true
			}
		}
		// The rest are transactions from the last read's xmax on that
		// have ended since: their events at or below before, first page.
		for x, cs := range page.Back {
			m.applyChanges(cs)
			if len(cs) == m.opts.PageSize {
				left = append(left, store.BackRead{Xact: x, After: cs[len(cs)-1].Seq, Upto: before})
				more = true
			}
		}
		m.back = left
		if page.InProgress != nil {
			// A transaction in progress then and not now ended before this
			// read's snapshot: its events at or below before were asked
			// for above (and are paged through from m.back if there were
			// more), those above before were in the head.
			now := make(map[uint64]bool, len(page.InProgress))
			for _, x := range page.InProgress {
				now[x] = true
			}
			m.inProgress = now
			m.xmax = page.Xmax
		}
		if !more {
			return nil
		}
	}
}

func (m *Manager) applyChanges(cs []store.LeaseChange) {
	if len(cs) == 0 {
		return
	}
	// Under the read lock: revocations and renewals only store into
	// atomics, so lookups (and revocations pushed by notifications) go on
	// while a page of a mass revocation is applied.
	m.mu.RLock()
	defer m.mu.RUnlock()
	missed := false
	for _, c := range cs {
		if c.Own || c.Kind == "issue" {
			// Made on this node, which updated its view then; or an issue
			// event of an older mayfly: a lease is read when first used.
			continue
		}
		l := m.byID[c.LeaseID]
		if l == nil {
			missed = true // read from the store if ever looked up
			continue
		}
		if c.Kind == "revoke" {
			l.revoked.Store(true)
			continue
		}
		s := c.Lease
		if s == nil {
			continue // swept already
		}
		l.extend(s.ExpiresAt.UnixNano())
		if !s.RevokedAt.IsZero() {
			l.revoked.Store(true)
		}
	}
	if missed {
		m.unseen.Add(1) // see fetch
	}
}

// Notifications: "r ORIGIN ID…" names leases revoked (applied on receipt,
// no read), "c ORIGIN" says leases were renewed (a poll reads them). A revocation of more leases than fit a few notifications is
// announced as "c": the feed carries it.
const maxNotifyIDs = 256

func (m *Manager) tellRevoked(ctx context.Context, ids []string) {
	if m.notifier == nil || len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if len(ids) > maxNotifyIDs {
		m.notify(ctx, "c "+m.origin)
		return
	}
	var b strings.Builder
	for _, id := range ids {
		if b.Len()+1+len(id) > store.MaxNotifyPayload {
			m.notify(ctx, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString("r " + m.origin)
		}
		b.WriteString(" " + id)
	}
	m.notify(ctx, b.String())
}

func (m *Manager) notify(ctx context.Context, payload string) {
	if err := m.notifier.NotifyLeases(ctx, payload); err != nil {
		m.opts.Logger.Warn("lease notification not sent; other nodes will poll", "err", err)
	}
}

// notifySpacing is the least time between two "c" notifications of a
// node, and between two polls they ask for: a renewal on one node is known
// to the others within about twice that, and the reads it costs do not
// grow with the rate of renewals or the number of nodes.
const notifySpacing = 25 * time.Millisecond

// tellChanges sends "c" at most every notifySpacing while this node
// renews, so that other nodes holding the lease extend it soon.
func (m *Manager) tellChanges(ctx context.Context) {
	t := time.NewTicker(notifySpacing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.changed.Swap(false) {
				nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				m.notify(nctx, "c "+m.origin)
				cancel()
			}
		}
	}
}

// heard takes one notification (or "" after the listener connected:
// whatever was sent before is read from the feed).
func (m *Manager) heard(payload string) {
	n, ok := ParseNotification(payload)
	switch {
	case payload != "" && !ok:
		m.opts.Logger.Warn("lease notification not understood; polling", "bytes", len(payload))
	case ok && n.Origin == m.origin:
		return
	case ok && len(n.Revoked) > 0:
		m.markRevoked(n.Revoked)
		return
	}
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Notification is a parsed lease notification.
type Notification struct {
	Origin  string
	Revoked []string // lease ids; empty: poll
}

// ParseNotification parses a notification payload. It accepts only
// well-formed lease ids: a payload is outside input (anyone who may
// connect to the database may send one).
func ParseNotification(p string) (Notification, bool) {
	f := strings.Fields(p)
	if len(f) < 2 || len(p) > store.MaxNotifyPayload || !isHex(f[1], 12) {
		return Notification{}, false
	}
	n := Notification{Origin: f[1]}
	switch f[0] {
	case "c":
		return n, len(f) == 2
	case "r":
		if len(f) == 2 {
			return Notification{}, false
		}
		for _, id := range f[2:] {
			if !strings.HasPrefix(id, "lse_") || !isHex(id[4:], 24) {
				return Notification{}, false
			}
			n.Revoked = append(n.Revoked, id)
		}
		return n, true
	}
	return Notification{}, false
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Counts returns the number of live leases in the store (every node's),
// in all and by grant (a lease with two grants counts for each).
func (m *Manager) Counts(ctx context.Context) (int, map[string]int, error) {
	n, byGrant, err := m.st.LiveLeaseCounts(ctx, m.opts.Now())
	if err != nil {
		return 0, nil, fmt.Errorf("lease: %w", err)
	}
	return n, byGrant, nil
}

// ForgetGrant marks every lease of grant revoked in the view, for a
// grant the policy in force no longer has: the store revoked them (here
// or on the node that applied the version), and this node must not wait
// for the feed to stop honouring them.
func (m *Manager) ForgetGrant(grant string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, l := range m.byID {
		if slices.Contains(l.Grants, grant) {
			l.revoked.Store(true)
		}
	}
}

// StaleGrants returns the grants of live leases in the view for which has
// is false: after a policy version removed them, their tokens must die on
// every node, whichever node applied it and whether or not it lived to
// revoke them.
func (m *Manager) StaleGrants(has func(grant string) bool) []string {
	now := m.opts.Now().UnixNano()
	seen := map[string]bool{}
	var out []string
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, l := range m.byID {
		if l.revoked.Load() || now >= l.expires.Load() {
			continue
		}
		for _, g := range l.Grants {
			if !seen[g] && !has(g) {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	return out
}

func (m *Manager) flushUses(ctx context.Context) {
	uses := map[string]int64{}
	m.mu.RLock()
	for id, l := range m.byID {
		if n := l.pending.Swap(0); n > 0 {
			uses[id] = n
		}
	}
	m.mu.RUnlock()
	if err := m.st.AddLeaseUses(ctx, uses); err != nil {
		m.opts.Logger.Warn("lease use counts not saved", "err", err)
		m.mu.RLock()
		for id, n := range uses {
			if l := m.byID[id]; l != nil {
				l.pending.Add(n)
			}
		}
		m.mu.RUnlock()
	}
}

// Sweep drops expired and revoked leases from the view and deletes leases
// past retention from the store.
func (m *Manager) Sweep(ctx context.Context) {
	now := m.opts.Now()
	m.flushUses(ctx)
	m.mu.Lock()
	for id, l := range m.byID {
		if l.revoked.Load() || now.UnixNano() >= l.expires.Load() {
			if l.pending.Load() == 0 {
				delete(m.byID, id)
				delete(m.live, l.hash)
			}
		}
	}
	m.mu.Unlock()
	if _, err := m.st.SweepLeases(ctx, now.Add(-m.opts.Retention)); err != nil {
		m.opts.Logger.Warn("lease sweep failed", "err", err)
	}
}
