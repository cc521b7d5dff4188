// Package lease issues, looks up, renews and revokes job tokens, and keeps
// the in-memory view of live tokens that the gateway consults on every
// request without a store round trip. The same code path that revokes in the
// store updates the view, and a poller follows other nodes' changes.
//
// It never keeps or returns a token in the clear after minting it: the view
// and the store are keyed by the token's keyed hash.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Errors from Lookup; the API maps all of them to 401 invalid_token.
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
	ListLeases(ctx context.Context, f store.LeaseFilter) ([]store.Lease, error)
	RevokeLeases(ctx context.Context, f store.LeaseFilter, at time.Time, reason string) ([]string, error)
	RenewLease(ctx context.Context, id string, expires, now time.Time) error
	AddLeaseUses(ctx context.Context, uses map[string]int64) error
	UseLease(ctx context.Context, id string) error
	LeaseEvents(ctx context.Context, after int64, limit int) ([]store.LeaseEvent, error)
	LastLeaseEvent(ctx context.Context) (int64, error)
	SweepLeases(ctx context.Context, before time.Time) (int64, error)
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
}

// Manager owns job tokens and their leases.
type Manager struct {
	st     Store
	hasher *token.Hasher
	opts   Options

	mu   sync.RWMutex
	live map[[32]byte]*Live
	byID map[string]*Live

	pollMu  sync.Mutex
	lastSeq int64
	holes   map[int64]time.Time // seqs skipped by a poll that may still commit
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
	return &Manager{st: st, hasher: hasher, opts: opts, live: map[[32]byte]*Live{}, byID: map[string]*Live{}, holes: map[int64]time.Time{}}
}

// Load fills the view with every live lease in the store.
func (m *Manager) Load(ctx context.Context) error {
	seq, err := m.st.LastLeaseEvent(ctx)
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
	m.lastSeq = seq
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
	id, err := newID()
	if err != nil {
		return "", nil, fmt.Errorf("lease: issue: %w", err)
	}
	now := m.opts.Now().UTC()
	sl := store.Lease{ID: id, Hash: m.hasher.Sum(tok), Issuer: r.Issuer, Subject: r.Subject, Job: r.Job, Claims: r.Claims,
		Grants: r.Grants, IssuedAt: now, ExpiresAt: now.Add(r.TTL), MaxExpiresAt: now.Add(r.MaxTTL),
		BindSource: r.BindSource, JKT: r.JKT, MaxUses: r.MaxUses, OnceJTI: r.JTI}
	if r.Source.IsValid() {
		sl.Source = r.Source.String()
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

func newID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "lse_" + hex.EncodeToString(b[:]), nil
}

// Lookup finds the live lease of a token in memory. It is the gateway's
// hot path: one keyed hash and one map read.
func (m *Manager) Lookup(tok string) (*Live, error) {
	if k, err := token.Parse(tok); err != nil || k != token.Job {
		return nil, ErrUnknown
	}
	h := m.hasher.Sum(tok)
	m.mu.RLock()
	l := m.live[h]
	m.mu.RUnlock()
	if l == nil {
		return nil, ErrUnknown
	}
	if err := m.check(l); err != nil {
		return l, err
	}
	return l, nil
}

func (m *Manager) check(l *Live) error {
	if l.revoked.Load() {
		return ErrRevoked
	}
	if m.opts.Now().UnixNano() >= l.expires.Load() {
		return ErrExpired
	}
	if l.MaxUses > 0 && l.uses.Load() >= l.MaxUses {
		return ErrUsedUp
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

// RenewWith is Renew with a gate: before, when set, is called with the
// lease and its new expiry before anything changes, and an error from it
// leaves the lease as it was (so the caller can record the renewal first).
func (m *Manager) RenewWith(ctx context.Context, tok string, ttl time.Duration, before func(l *Live, exp time.Time) error) (*Live, error) {
	l, err := m.Lookup(tok)
	if err != nil {
		return nil, err
	}
	now := m.opts.Now().UTC()
	exp := now.Add(ttl)
	if exp.After(l.MaxExpiresAt) {
		exp = l.MaxExpiresAt
	}
	if before != nil {
		if err := before(l, exp); err != nil {
			return nil, err
		}
	}
	if exp.UnixNano() <= l.expires.Load() {
		return l, nil // already at its max: nothing to extend
	}
	if err := m.st.RenewLease(ctx, l.ID, exp, now); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, ErrRevoked
		}
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	l.expires.Store(exp.UnixNano())
	return l, nil
}

// RevokeToken revokes the lease of a token. It reports the lease (nil when
// the token is unknown) and whether this call revoked it.
func (m *Manager) RevokeToken(ctx context.Context, tok, reason string) (*Live, bool, error) {
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
	ids, err := m.Revoke(ctx, store.LeaseFilter{ID: l.ID}, reason)
	if err != nil {
		return l, false, err
	}
	return l, len(ids) == 1, nil
}

// Revoke revokes every lease f selects, in the store and then in the view,
// and returns their ids. An empty filter is refused.
func (m *Manager) Revoke(ctx context.Context, f store.LeaseFilter, reason string) ([]string, error) {
	ids, err := m.st.RevokeLeases(ctx, f, m.opts.Now().UTC(), reason)
	if err != nil {
		return nil, fmt.Errorf("lease: revoke: %w", err)
	}
	m.mu.RLock()
	for _, id := range ids {
		if l := m.byID[id]; l != nil {
			l.revoked.Store(true)
		}
	}
	m.mu.RUnlock()
	return ids, nil
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
	poll := time.NewTicker(m.opts.PollInterval)
	defer poll.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			m.flushUses(context.Background())
			return
		case <-poll.C:
			if err := m.Poll(ctx); err != nil && ctx.Err() == nil {
				m.opts.Logger.Warn("lease poll failed", "err", err)
			}
			m.flushUses(ctx)
		case <-sweep.C:
			m.Sweep(ctx)
		}
	}
}

// Poll applies lease events written since the last poll (by any node) to
// the view. Sequence numbers skipped by a poll are re-read for a few
// seconds: on PostgreSQL a transaction can commit a lower number after a
// higher one was seen.
func (m *Manager) Poll(ctx context.Context) error {
	m.pollMu.Lock()
	defer m.pollMu.Unlock()
	from := m.lastSeq
	now := time.Now()
	for seq, seen := range m.holes {
		if now.Sub(seen) > 5*time.Second {
			delete(m.holes, seq)
		} else if seq-1 < from {
			from = seq - 1
		}
	}
	for {
		evs, err := m.st.LeaseEvents(ctx, from, 1000)
		if err != nil {
			return fmt.Errorf("lease: poll: %w", err)
		}
		for _, e := range evs {
			if e.Seq <= m.lastSeq {
				if _, ok := m.holes[e.Seq]; !ok {
					continue // applied already
				}
				delete(m.holes, e.Seq)
			}
			for s := m.lastSeq + 1; s < e.Seq; s++ {
				m.holes[s] = now
			}
			if err := m.apply(ctx, e); err != nil {
				return err
			}
			if e.Seq > m.lastSeq {
				m.lastSeq = e.Seq
			}
		}
		if len(evs) < 1000 {
			return nil
		}
		from = evs[len(evs)-1].Seq
	}
}

func (m *Manager) apply(ctx context.Context, e store.LeaseEvent) error {
	s, err := m.st.LeaseByID(ctx, e.LeaseID)
	if errors.Is(err, store.ErrNotFound) {
		return nil // swept already
	}
	if err != nil {
		return fmt.Errorf("lease: poll: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.byID[s.ID]; ok {
		l.expires.Store(s.ExpiresAt.UnixNano())
		if !s.RevokedAt.IsZero() {
			l.revoked.Store(true)
		}
		return nil
	}
	if s.RevokedAt.IsZero() {
		m.putLocked(fromStore(s))
	}
	return nil
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
