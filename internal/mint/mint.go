// Package mint owns the upstream credentials mayfly mints (SPEC section 9):
// the record of each one — its value's keyed hash (never the value), its
// lease, upstream, kind, external name, expiry, state and revocation
// attempts — the order that leaves none unaccounted for (record first,
// create second), lookup by keyed hash for leak reports, and revocation
// when its lease ends for any reason (revoked, leaked, exec ended, expired,
// its grant removed), retried with backoff until the upstream confirms,
// with metrics and audit entries for every outcome.
//
// It never speaks an upstream's protocol: credential sources (Source)
// create, renew and revoke. It never writes a credential's value to a row,
// log, error, metric or audit entry: what revoking needs that is secret
// (a GitHub installation token) is sealed with AES-GCM under a server key.
package mint

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Store is what the manager needs of the store.
type Store interface {
	InsertMinted(ctx context.Context, m store.Minted) error
	MintedCreated(ctx context.Context, id string, hash, sealed []byte, expires time.Time, n *store.Note) error
	RevokeMinted(ctx context.Context, ids, leaseIDs []string, reason string) (int64, error)
	RevokeSharedMinted(ctx context.Context, grants []string, reason string) ([]string, error)
	MintedDue(ctx context.Context, now, staleBefore time.Time, limit int) ([]store.Minted, error)
	ClaimMinted(ctx context.Context, id string, next, until time.Time) (bool, error)
	MintedRevoked(ctx context.Context, id, reason string, at time.Time, n *store.Note) error
	MintedRevokeFailed(ctx context.Context, id, reason, lastErr string, next time.Time, n *store.Note) error
	MintedRefused(ctx context.Context, id, lastErr string, n *store.Note) error
	SetMintedExpiry(ctx context.Context, id string, expires time.Time, n *store.Note) error
	MintedByHashes(ctx context.Context, hashes [][32]byte) (map[[32]byte]store.Minted, error)
	MintedByLease(ctx context.Context, leaseID string) ([]store.Minted, error)
	MintedByID(ctx context.Context, id string) (store.Minted, error)
	SweepMinted(ctx context.Context, before time.Time) (int64, error)
}

// Auditor records events (*auditlog.Log): a refusal or failure that
// changed nothing waits for its entry (Future.Wait), which the log makes
// durable before answering. A credential's creation, renewal and
// revocation are written by the store transaction that records them
// instead (Record, then Settle for its index: see auditlog's pending
// records), so that neither stands without the other.
type Auditor interface {
	Add(ctx context.Context, ev audit.Event) auditlog.Future
	Size() int64
	Record(ev audit.Event) ([]byte, error)
	Settle(ctx context.Context, since int64, note *store.Note) error
}

// Request asks a source for one credential.
type Request struct {
	ID        string // the record's id
	LeaseID   string // "" for a credential a grant shares (deliver: gateway)
	Upstream  *policy.Upstream
	Grant     *policy.Grant
	ExpiresAt time.Time // the lease's expiry: the credential must not outlive it
}

// Plan is what a source will create, decided before it creates anything so
// that the record can name it: Name is its external name (a role name; ""
// when the upstream names it), Params what revoking it needs that is not
// secret (the source's own encoding; stored as is).
type Plan struct {
	Name   string
	Params []byte
}

// Credential is what the job (deliver: job) or the gateway gets.
type Credential struct {
	Token     string // GitHub
	DSN       string // PostgreSQL
	Username  string
	Password  string
	ExpiresAt time.Time
}

// Minted is a credential a source created.
type Minted struct {
	Credential Credential
	// Secret is the value whose keyed hash finds the record when it leaks
	// (the token, the password).
	Secret string
	// Material is what revoking needs that is secret (e.g. the token
	// itself); the manager seals it before it is stored.
	Material []byte
	// ExpiresAt is when the credential dies by itself (at most the lease's).
	ExpiresAt time.Time
}

// Record is a stored credential with its material opened, for a source.
// Authenticated says its fields are the ones mayfly wrote (its tag
// verified under the seal key, or it never left memory); a record without
// (one stored before records were tagged, or written by someone without
// the key) must be acted on only as the policy in force says, never as
// its own fields say.
type Record struct {
	store.Minted
	Material      []byte
	Authenticated bool
}

// Source mints one kind of credential. Revoke must be idempotent: a
// credential that is already gone (or was never created) is revoked.
// Errors must not contain a credential's value. Mint may return, beside
// its error, a credential it made but refuses to hand out (Material and
// Secret, no Credential): the manager records it and revokes it, retried
// until confirmed.
type Source interface {
	Plan(ctx context.Context, r Request) (Plan, error)
	Mint(ctx context.Context, r Request, p Plan) (Minted, error)
	Renew(ctx context.Context, rec Record, expires time.Time) error
	Revoke(ctx context.Context, rec Record) error
}

// Error is a refusal to mint that names its cause, with the HTTP status
// and OAuth-style code the exchange answers with.
type Error struct {
	Status      int
	Code        string
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// Errorf returns an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

// Config wires a Manager.
type Config struct {
	Store   Store
	Sources map[string]Source // by policy upstream kind (policy.KindGitHubApp, policy.KindPostgres)
	Hasher  *token.Hasher     // the keyed hash of tokens, for values too
	SealKey []byte            // 32 bytes: seals revocation material
	Audit   Auditor
	// Registerer, when set, gets the manager's metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time

	Interval     time.Duration // how often the worker looks for due revocations (default 1s)
	StalePending time.Duration // a pending record older than this was left by a crash (default 2m)
	MaxBackoff   time.Duration // the longest wait between attempts (default 5m)
	Parallel     int           // revocations at once (default 16)
	Timeout      time.Duration // one source call (default 30s)
	Retention    time.Duration // how long revoked records stay (default 24h)
}

// Manager is safe for concurrent use.
type Manager struct {
	cfg  Config
	aead cipher.AEAD
	kick chan struct{}
	m    metrics

	hooksMu sync.RWMutex
	onGone  []func(rec store.Minted)

	shared sharedCache
}

type metrics struct {
	minted, mintFailed, revoked, revokeFailed *prometheus.CounterVec
}

// New returns a Manager. Call Run to revoke in the background.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Hasher == nil || cfg.Audit == nil {
		return nil, errors.New("mint: store, hasher and auditor are required")
	}
	if len(cfg.SealKey) != 32 {
		return nil, errors.New("mint: the seal key must be 32 bytes")
	}
	block, err := aes.NewCipher(cfg.SealKey)
	if err != nil {
		return nil, fmt.Errorf("mint: seal key: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("mint: seal key: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.StalePending <= 0 {
		cfg.StalePending = 2 * time.Minute
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"kind"})
	}
	m := metrics{
		minted:       vec("mayfly_minted_credentials_total", "Upstream credentials minted, by kind."),
		mintFailed:   vec("mayfly_mint_failures_total", "Upstream credentials that could not be minted, by kind."),
		revoked:      vec("mayfly_minted_revocations_total", "Minted upstream credentials confirmed revoked, by kind."),
		revokeFailed: vec("mayfly_minted_revoke_failures_total", "Failed attempts to revoke a minted upstream credential (retried), by kind."),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.minted, m.mintFailed, m.revoked, m.revokeFailed} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("mint: metrics: %w", err)
			}
		}
	}
	return &Manager{cfg: cfg, aead: aead, kick: make(chan struct{}, 1), m: m}, nil
}

// Handles reports whether the manager has a source for the upstream.
func (m *Manager) Handles(up *policy.Upstream) bool {
	return up != nil && m.cfg.Sources[up.Kind()] != nil
}

// Source returns the source of a kind, or nil.
func (m *Manager) Source(kind string) Source { return m.cfg.Sources[kind] }

// OnGone registers fn to be told of every credential marked for
// revocation or revoked (a gateway drops it from its cache).
func (m *Manager) OnGone(fn func(rec store.Minted)) {
	m.hooksMu.Lock()
	m.onGone = append(m.onGone, fn)
	m.hooksMu.Unlock()
}

func (m *Manager) gone(rec store.Minted) {
	m.shared.dropID(rec.ID)
	m.hooksMu.RLock()
	defer m.hooksMu.RUnlock()
	for _, fn := range m.onGone {
		fn(rec)
	}
}

// Issued is a credential minted for a lease or grant.
type Issued struct {
	ID         string
	Upstream   string
	Kind       string
	Credential Credential
	Secret     string // the value to mask
}

func newID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "mnt_" + hex.EncodeToString(b[:]), nil
}

// seal seals a credential's revocation material to its record: to
// everything a source reads beside it (kind, upstream, grant, lease,
// external name, params), not its id alone. A database writer who points
// a record elsewhere (a GitHub record's api_url at their own server) then
// gets a record that does not open, rather than the material sent there.
// It seals even no material: the result is then the record's tag, which
// authenticates those fields (a PostgreSQL record's admin DSN secret and
// revocation statements), so every record has one from its insertion on.
func (m *Manager) seal(rec store.Minted, material []byte) []byte {
	return m.aead.Seal(nil, nil, material, sealAAD(rec))
}

// open returns rec's material, and whether its fields are authenticated
// (sealed to them). A record with nothing sealed, or sealed to its id
// alone, was stored by an earlier version (or by someone without the
// key): it opens, unauthenticated.
func (m *Manager) open(rec store.Minted) ([]byte, bool, error) {
	if len(rec.Sealed) == 0 {
		return nil, false, nil
	}
	b, err := m.aead.Open(nil, nil, rec.Sealed, sealAAD(rec))
	if err == nil {
		return b, true, nil
	}
	// Sealed by an earlier version, to the id alone: still opened (such
	// records live no longer than their credential).
	if b, err = m.aead.Open(nil, nil, rec.Sealed, []byte("mint:"+rec.ID)); err != nil {
		return nil, false, fmt.Errorf("open the revocation material of %s (changed in the store, or sealed under another key): %w", rec.ID, err)
	}
	return b, false, nil
}

// sealAAD is the additional data binding sealed material to its record:
// each field length-prefixed, so that no two records share it.
func sealAAD(rec store.Minted) []byte {
	b := []byte("mint v2")
	for _, f := range [][]byte{[]byte(rec.ID), []byte(rec.Kind), []byte(rec.Upstream), []byte(rec.Grant), []byte(rec.LeaseID),
		[]byte(rec.ExternalName), rec.Params} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// For is whom a credential is minted for, for its audit entry: a lease
// and the identity holding it (all empty for one a grant shares).
type For struct {
	Lease, Issuer, Subject, Job, Repository string
}

// Mint is MintFor with only the lease known.
func (m *Manager) Mint(ctx context.Context, leaseID string, up *policy.Upstream, g *policy.Grant, expires time.Time) (*Issued, error) {
	return m.MintFor(ctx, For{Lease: leaseID}, up, g, expires)
}

// MintFor creates one credential of up for a lease (f.Lease "" for one the
// grant shares): it is recorded before it is created, its creation's audit
// entry commits with the record of it (a credential whose entry cannot be
// written is revoked, never handed out), and a failure after creation
// revokes it at once (and again, by the worker, until confirmed). Every
// refusal and failure has an entry too. A refusal is an *Error naming the
// cause.
func (m *Manager) MintFor(ctx context.Context, f For, up *policy.Upstream, g *policy.Grant, expires time.Time) (*Issued, error) {
	kind := up.Kind()
	leaseID := f.Lease
	ev := audit.Event{Type: audit.TypeCredentialMint, Lease: leaseID, Issuer: f.Issuer, Subject: f.Subject, Job: f.Job, Repository: f.Repository,
		Upstream: up.Name, Grant: g.Name, Detail: map[string]any{"kind": kind}}
	if leaseID == "" {
		// Shared: the cache entry it serves, named by a digest of what
		// shapes it (upstream, url, grant, App, scope: no secret).
		key := sha256.Sum256([]byte(sharedKey(up, g)))
		ev.Detail["deliver"], ev.Detail["cache_key"], ev.Detail["url"] = policy.DeliverGateway, hex.EncodeToString(key[:8]), up.URL
	} else {
		ev.Detail["deliver"] = policy.DeliverJob
	}
	src := m.cfg.Sources[kind]
	if src == nil {
		err := Errorf(500, "upstream_misconfigured", "upstream %s: this server cannot mint %s credentials", up.Name, kind)
		m.mintFailed(ctx, ev, err)
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("mint: id: %w", err)
	}
	ev.Detail["credential"] = id
	req := Request{ID: id, LeaseID: leaseID, Upstream: up, Grant: g, ExpiresAt: expires}
	plan, err := src.Plan(ctx, req)
	if err != nil {
		m.m.mintFailed.WithLabelValues(kind).Inc()
		m.mintFailed(ctx, ev, err)
		return nil, err
	}
	if plan.Name != "" {
		ev.Detail["name"] = plan.Name
	}
	rec := store.Minted{ID: id, LeaseID: leaseID, Upstream: up.Name, Grant: g.Name, Kind: kind, ExternalName: plan.Name,
		Params: plan.Params, State: store.MintPending, CreatedAt: m.cfg.Now(), ExpiresAt: expires}
	// Tagged from the start: a record left pending is revoked as it says.
	rec.Sealed = m.seal(rec, nil)
	if err := m.cfg.Store.InsertMinted(ctx, rec); err != nil {
		m.m.mintFailed.WithLabelValues(kind).Inc()
		err = fmt.Errorf("mint: record %s credential: %w", kind, err)
		m.mintFailed(ctx, ev, err)
		return nil, err
	}
	mctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	got, err := src.Mint(mctx, req, plan)
	cancel()
	if err != nil {
		m.m.mintFailed.WithLabelValues(kind).Inc()
		m.mintFailed(ctx, ev, err)
		if len(got.Material) > 0 {
			m.keepRefused(context.WithoutCancel(ctx), rec, got)
		}
		// Nothing half-made may stay upstream: undo now, and let the
		// worker retry until the source confirms.
		m.abandon(context.WithoutCancel(ctx), rec, got.Material, "mint failed")
		return nil, err
	}
	if got.ExpiresAt.IsZero() || got.ExpiresAt.After(expires) {
		got.ExpiresAt = expires
	}
	if got.Credential.ExpiresAt.IsZero() || got.Credential.ExpiresAt.After(got.ExpiresAt) {
		got.Credential.ExpiresAt = got.ExpiresAt
	}
	var hash []byte
	if got.Secret != "" {
		h := m.cfg.Hasher.Sum(got.Secret)
		hash = h[:]
	}
	ev.Status = 200
	ev.Detail["expires_at"] = got.ExpiresAt.UTC().Format(time.RFC3339)
	since := m.cfg.Audit.Size()
	note := m.noted(ev)
	if err := m.cfg.Store.MintedCreated(ctx, id, hash, m.seal(rec, got.Material), got.ExpiresAt, note); err != nil {
		m.m.mintFailed.WithLabelValues(kind).Inc()
		// Not on record (or its entry not written): never handed out.
		m.abandon(context.WithoutCancel(ctx), rec, got.Material, "not recorded")
		err = fmt.Errorf("mint: record created %s credential: %w", kind, err)
		if errors.Is(err, store.ErrNoteFailed) {
			err = fmt.Errorf("%w: %w", failclosed.ErrUnavailable, err)
		}
		return nil, err
	}
	m.settle(ctx, since, note)
	m.m.minted.WithLabelValues(kind).Inc()
	return &Issued{ID: id, Upstream: up.Name, Kind: kind, Credential: got.Credential, Secret: got.Secret}, nil
}

// keepRefused records what revoking a credential the source made and
// refused to hand out needs (its sealed material, and its keyed hash so a
// leak of it is found), marked for revocation first so that it is never
// live: without it the worker's retries had nothing to revoke with, and
// the credential stayed alive upstream on a record saying revoked. A
// failure is logged: abandon's own attempt still has the material.
func (m *Manager) keepRefused(ctx context.Context, rec store.Minted, got Minted) {
	if _, err := m.cfg.Store.RevokeMinted(ctx, []string{rec.ID}, nil, "mint failed"); err != nil {
		m.cfg.Logger.Warn("mint: a refused credential was not marked for revocation", "id", rec.ID, "err", err)
		return
	}
	var hash []byte
	if got.Secret != "" {
		h := m.cfg.Hasher.Sum(got.Secret)
		hash = h[:]
	}
	exp := got.ExpiresAt
	if exp.IsZero() || exp.After(rec.ExpiresAt) {
		exp = rec.ExpiresAt
	}
	if err := m.cfg.Store.MintedCreated(ctx, rec.ID, hash, m.seal(rec, got.Material), exp, nil); err != nil {
		m.cfg.Logger.Warn("mint: a refused credential's revocation material was not recorded; only the attempt now can revoke it", "id", rec.ID, "err", err)
	}
}

// mintFailed records a refused or failed creation. Nothing was handed out,
// so there is nothing to undo when the entry cannot be written: that is
// logged.
func (m *Manager) mintFailed(ctx context.Context, ev audit.Event, cause error) {
	m.auditFailure(ctx, ev, cause, 503, "creation")
}

// auditFailure writes ev as the entry of a failed step (what), with the
// cause's status (status when it names none) and its clipped text.
func (m *Manager) auditFailure(ctx context.Context, ev audit.Event, cause error, status int, what string) {
	ev.Status, ev.Reason = status, errText(cause.Error())
	var me *Error
	if errors.As(cause, &me) {
		ev.Status = me.Status
	}
	if _, err := m.cfg.Audit.Add(context.WithoutCancel(ctx), ev).Wait(context.WithoutCancel(ctx)); err != nil {
		m.cfg.Logger.Warn("mint: a failed "+what+"'s audit entry was not written", "upstream", ev.Upstream, "grant", ev.Grant, "lease", ev.Lease, "err", err)
	}
}

// abandon revokes a credential that will not be handed out: once now, and
// marked so the worker retries until confirmed. Marked, it is due on every
// node: the attempt now is made under a claim (ClaimMinted), as the
// worker's are, so that no other node's worker revokes it at the same
// time; a failed one gives the claim back for the worker to retry at once.
func (m *Manager) abandon(ctx context.Context, rec store.Minted, material []byte, reason string) {
	defer m.Kick()
	claimed := time.Time{}
	if _, err := m.cfg.Store.RevokeMinted(ctx, []string{rec.ID}, nil, reason); err != nil {
		m.cfg.Logger.Warn("mint: could not mark an abandoned credential for revocation; the stale sweep will", "id", rec.ID, "err", err)
	} else {
		until := m.cfg.Now().Add(m.cfg.Timeout + 5*time.Second)
		ok, err := m.cfg.Store.ClaimMinted(ctx, rec.ID, rec.NextAttempt, until)
		if err == nil && !ok && len(material) == 0 {
			// Another node's worker is revoking it. (With material
			// this node alone holds, never stored, that one cannot
			// revoke it as well: this attempt goes ahead.)
			return
		}
		if ok {
			claimed = until
		}
	}
	rec.Reason = reason
	// Never stored and read back: its fields are the ones written.
	if m.attempt(ctx, Record{Minted: rec, Material: material, Authenticated: true}, false) || claimed.IsZero() {
		return
	}
	if _, err := m.cfg.Store.ClaimMinted(ctx, rec.ID, claimed, time.Time{}); err != nil {
		m.cfg.Logger.Warn("mint: could not give back the claim on an abandoned credential; the worker retries once it runs out", "id", rec.ID, "err", err)
	}
}

// RevokeLeases marks every credential of the leases for revocation and
// wakes the worker. The worker would find them anyway (it looks at the
// leases); this makes it immediate.
func (m *Manager) RevokeLeases(ctx context.Context, leaseIDs []string, reason string) error {
	if len(leaseIDs) == 0 {
		return nil
	}
	n, err := m.cfg.Store.RevokeMinted(ctx, nil, leaseIDs, reason)
	if err != nil {
		return err
	}
	if n > 0 {
		m.Kick()
	}
	return nil
}

// RevokeGrants marks the shared credentials (deliver: gateway) of grants a
// policy version removed or reshaped (Reshaped) for revocation, drops them from this node's
// cache and wakes the worker: they belong to no lease, so no lease's end
// revokes them, and they would live upstream until they expire (up to an
// hour). Every node may call it for one version: each is marked once, and
// revoked once (claimed per credential).
func (m *Manager) RevokeGrants(ctx context.Context, grants []string, reason string) error {
	if len(grants) == 0 {
		return nil
	}
	ids, err := m.cfg.Store.RevokeSharedMinted(ctx, grants, reason)
	if err != nil {
		return err
	}
	for _, id := range ids {
		m.gone(store.Minted{ID: id, State: store.MintRevoking, Reason: reason})
	}
	if len(ids) > 0 {
		m.Kick()
	}
	return nil
}

// Renew extends the live credentials of a lease to expires, each with its
// entry (credential.renew) in the transaction that records it; a refusal
// upstream has an entry too.
func (m *Manager) Renew(ctx context.Context, leaseID string, expires time.Time) error {
	recs, err := m.cfg.Store.MintedByLease(ctx, leaseID)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		if rec.State != store.MintLive {
			continue
		}
		ev := audit.Event{Type: audit.TypeCredentialRenew, Lease: rec.LeaseID, Upstream: rec.Upstream, Grant: rec.Grant,
			Detail: map[string]any{"credential": rec.ID, "kind": rec.Kind, "expires_at": expires.UTC().Format(time.RFC3339)}}
		if rec.ExternalName != "" {
			ev.Detail["name"] = rec.ExternalName
		}
		src := m.cfg.Sources[rec.Kind]
		if src == nil {
			err := Errorf(500, "upstream_misconfigured", "upstream %s: this server cannot renew %s credentials", rec.Upstream, rec.Kind)
			m.renewFailed(ctx, ev, err)
			return err
		}
		mat, authed, err := m.open(rec)
		if err != nil {
			m.renewFailed(ctx, ev, err)
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		err = src.Renew(rctx, Record{Minted: rec, Material: mat, Authenticated: authed}, expires)
		cancel()
		if err != nil {
			m.renewFailed(ctx, ev, err)
			return err
		}
		ev.Status = 200
		since := m.cfg.Audit.Size()
		note := m.noted(ev)
		if err := m.cfg.Store.SetMintedExpiry(ctx, rec.ID, expires, note); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue // revoked meanwhile: nothing extended on record
			}
			return err
		}
		m.settle(ctx, since, note)
	}
	return nil
}

// renewFailed records a renewal the upstream (or this server) refused:
// the credential keeps its expiry, and so does its lease.
func (m *Manager) renewFailed(ctx context.Context, ev audit.Event, cause error) {
	m.auditFailure(ctx, ev, cause, 502, "renewal")
}

// Found is a minted credential a leak report named.
type Found struct {
	Value  string // as reported (for its hint; never stored)
	Record store.Minted
}

// Lookup finds which of values are credentials mayfly minted, by keyed
// hash, with one query per store.HashBatch values.
func (m *Manager) Lookup(ctx context.Context, values []string) ([]Found, error) {
	if len(values) == 0 {
		return nil, nil
	}
	hashes := make([][32]byte, len(values))
	for i, v := range values {
		hashes[i] = m.cfg.Hasher.Sum(v)
	}
	recs, err := m.cfg.Store.MintedByHashes(ctx, hashes)
	if err != nil {
		return nil, err
	}
	var out []Found
	for i, h := range hashes {
		if r, ok := recs[h]; ok {
			out = append(out, Found{Value: values[i], Record: r})
		}
	}
	return out, nil
}

// RevokeRecords marks credentials for revocation by id (a leak of one that
// a grant shares) and wakes the worker.
func (m *Manager) RevokeRecords(ctx context.Context, recs []store.Minted, reason string) error {
	if len(recs) == 0 {
		return nil
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	if _, err := m.cfg.Store.RevokeMinted(ctx, ids, nil, reason); err != nil {
		return err
	}
	for _, r := range recs {
		m.gone(r)
	}
	m.Kick()
	return nil
}

// Kick wakes the worker.
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run revokes due credentials until ctx ends: at once when kicked, else
// every Interval. Several nodes may run it on one database: each credential
// is claimed before an attempt.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	lastSweep := time.Time{}
	for {
		m.RevokeDue(ctx)
		if now := m.cfg.Now(); now.Sub(lastSweep) > time.Minute {
			lastSweep = now
			if _, err := m.cfg.Store.SweepMinted(ctx, now.Add(-m.cfg.Retention)); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Warn("mint: sweep revoked records", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-t.C:
		}
	}
}

const dueBatch = 256

// RevokeDue makes one attempt at every credential whose revocation is due
// now, and returns how many it confirmed revoked.
func (m *Manager) RevokeDue(ctx context.Context) int {
	done := 0
	for ctx.Err() == nil {
		now := m.cfg.Now()
		due, err := m.cfg.Store.MintedDue(ctx, now, now.Add(-m.cfg.StalePending), dueBatch)
		if err != nil {
			if ctx.Err() == nil {
				m.cfg.Logger.Warn("mint: read due revocations", "err", err)
			}
			return done
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, m.cfg.Parallel)
		claimed := 0
		for _, rec := range due {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				// Claimed for the length of one attempt: another node
				// skips it. Claims run in parallel too: one at a time,
				// a thousand leases ending together wait on the store.
				// From now, not from the read: attempts ahead of this
				// one in the batch took time, and a claim that ran out
				// before its attempt began let another node's worker
				// revoke it at the same time.
				ok, err := m.cfg.Store.ClaimMinted(ctx, rec.ID, rec.NextAttempt, m.cfg.Now().Add(m.cfg.Timeout+5*time.Second))
				if err != nil || !ok {
					return
				}
				mu.Lock()
				claimed++
				mu.Unlock()
				if rec.Reason == "" {
					rec.Reason = m.reasonOf(rec, now)
				}
				// A record whose tag does not verify is never acted on:
				// it is refused (metric, log, audit entry) and left,
				// marked so that it is not refused again.
				mat, authed, err := m.open(rec)
				if err != nil {
					m.refused(ctx, rec, err)
					return
				}
				if m.attempt(ctx, Record{Minted: rec, Material: mat, Authenticated: authed}, true) {
					mu.Lock()
					done++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(due) < dueBatch || claimed == 0 {
			return done
		}
	}
	return done
}

func (m *Manager) reasonOf(rec store.Minted, now time.Time) string {
	switch {
	case rec.State == store.MintPending:
		return "left pending"
	case !rec.ExpiresAt.After(now):
		return "expired"
	}
	return "lease ended"
}

// attempt revokes rec once and records the outcome; it reports success.
// recordFailure says whether a failure is recorded (the worker's attempts);
// an inline attempt leaves that to the worker.
func (m *Manager) attempt(ctx context.Context, rec Record, recordFailure bool) bool {
	src := m.cfg.Sources[rec.Kind]
	if src == nil {
		if recordFailure {
			m.failed(ctx, rec, fmt.Errorf("this server cannot revoke %s credentials", rec.Kind))
		}
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	err := src.Revoke(rctx, rec)
	cancel()
	if err != nil {
		if recordFailure {
			m.failed(ctx, rec, err)
		} else {
			m.cfg.Logger.Warn("mint: revocation failed; retried by the worker", "id", rec.ID, "upstream", rec.Upstream, "err", err)
		}
		return false
	}
	now := m.cfg.Now()
	ev := audit.Event{Type: audit.TypeCredentialRevoke, Lease: rec.LeaseID, Upstream: rec.Upstream, Grant: rec.Grant, Status: 200,
		Reason: rec.Reason, Detail: map[string]any{"credential": rec.ID, "kind": rec.Kind}}
	if rec.ExternalName != "" {
		ev.Detail["name"] = rec.ExternalName
	}
	// Marked revoked only with its entry: when the entry cannot be
	// written, the credential stays due and is revoked (idempotently) and
	// recorded again.
	since := m.cfg.Audit.Size()
	note := m.noted(ev)
	if err := m.cfg.Store.MintedRevoked(ctx, rec.ID, rec.Reason, now, note); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			m.cfg.Logger.Warn("mint: revoked upstream but not recorded; it will be revoked again", "id", rec.ID, "err", err)
		}
		return false
	}
	m.settle(ctx, since, note)
	m.m.revoked.WithLabelValues(rec.Kind).Inc()
	m.gone(rec.Minted)
	return true
}

// noted is the store.Note that writes ev in the transaction of the action
// it records.
func (m *Manager) noted(ev audit.Event) *store.Note {
	return &store.Note{Make: func(store.Changes) ([][]byte, error) {
		rec, err := m.cfg.Audit.Record(ev)
		if err != nil {
			return nil, err
		}
		return [][]byte{rec}, nil
	}}
}

// settle waits for the index of the entry note wrote (Settle). The entry
// is durable already (its action's commit made it so): a failure only
// delays its index, logged, never returned.
func (m *Manager) settle(ctx context.Context, since int64, note *store.Note) {
	if err := m.cfg.Audit.Settle(context.WithoutCancel(ctx), since, note); err != nil {
		m.cfg.Logger.Warn("mint: a credential's audit entry is recorded but not in the log yet", "err", err)
	}
}

// failed records a failed revocation attempt: metric, audit entry, next
// attempt after a backoff that doubles up to MaxBackoff, with jitter. An
// unauthenticated record's failed revocation is audited once, at its first
// failed attempt (by record and step, never by the failure's text, which
// may change at every try), and only counted after that: its fields, and
// so whether it can ever succeed, are whoever wrote the row's to choose,
// and an entry per retry let planted rows grow the audit log without
// bound.
func (m *Manager) failed(ctx context.Context, r Record, cause error) {
	rec := r.Minted
	m.m.revokeFailed.WithLabelValues(rec.Kind).Inc()
	backoff := time.Second << min(rec.Attempts, 20)
	if backoff > m.cfg.MaxBackoff || backoff <= 0 {
		backoff = m.cfg.MaxBackoff
	}
	backoff += time.Duration(mrand.Int64N(int64(backoff)/4 + 1))
	msg := errText(cause.Error())
	m.cfg.Logger.Warn("mint: revocation failed; will retry", "id", rec.ID, "upstream", rec.Upstream, "attempt", rec.Attempts+1, "retry_in", backoff, "err", msg)
	ev := audit.Event{Type: audit.TypeCredentialRevoke, Lease: rec.LeaseID, Upstream: rec.Upstream, Grant: rec.Grant, Status: 502,
		Reason: msg, Detail: map[string]any{"credential": rec.ID, "kind": rec.Kind, "attempt": rec.Attempts + 1, "retry_in_s": int64(backoff.Seconds())}}
	// The attempt is counted with its entry: when the entry cannot be
	// written neither is, and the credential is tried again once its
	// claim runs out.
	var note *store.Note
	if r.Authenticated || rec.Attempts == 0 {
		note = m.noted(ev)
	}
	since := m.cfg.Audit.Size()
	if err := m.cfg.Store.MintedRevokeFailed(ctx, rec.ID, rec.Reason, msg, m.cfg.Now().Add(backoff), note); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			m.cfg.Logger.Warn("mint: failed revocation not recorded", "id", rec.ID, "err", err)
		}
		return
	}
	if note != nil {
		m.settle(ctx, since, note)
	}
}

// refused records a record that does not verify: metric, log, and one
// audit entry written with its refused mark, so that it is recorded once
// and never retried (retrying cannot make it verify, and an entry per
// retry let a database writer grow the audit log without bound). When the
// entry cannot be written, neither is the mark: it is refused again once
// its claim runs out.
func (m *Manager) refused(ctx context.Context, rec store.Minted, cause error) {
	m.m.revokeFailed.WithLabelValues(rec.Kind).Inc()
	msg := errText(cause.Error())
	m.cfg.Logger.Error("mint: a credential's record does not verify; refused, left for an admin", "id", rec.ID, "upstream", rec.Upstream, "err", msg)
	ev := audit.Event{Type: audit.TypeCredentialRevoke, Lease: rec.LeaseID, Upstream: rec.Upstream, Grant: rec.Grant, Status: 502,
		Reason: msg, Detail: map[string]any{"credential": rec.ID, "kind": rec.Kind, "refused": true}}
	since := m.cfg.Audit.Size()
	note := m.noted(ev)
	if err := m.cfg.Store.MintedRefused(ctx, rec.ID, msg, note); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			m.cfg.Logger.Warn("mint: refused record not recorded", "id", rec.ID, "err", err)
		}
		return
	}
	m.settle(ctx, since, note)
}

// errText is an error's text (an upstream's words) for an entry, a log
// line and last_error: bounded to about 300 bytes, never cutting a
// credential it quotes in two (token.Clip: cut in its checksum, redaction
// would miss it), and with every mayfly credential as its hint, as the
// audit log and the logs keep it (last_error is a database row).
func errText(s string) string {
	if c := token.Clip(s, 300); len(c) < len(s) {
		s = c + "…"
	}
	return string(token.Redact([]byte(s)))
}
