package mint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// Shared credentials (deliver: gateway): one per grant, cached, refreshed
// in the background before it expires, recorded like any other (lease id
// "") so that a leak of one revokes it.
const (
	sharedTTL     = time.Hour              // the lifetime asked for (GitHub's cap)
	refreshBefore = 15 * time.Minute       // refresh in the background when less is left
	mustRefresh   = 2 * time.Minute        // mint before answering when less is left
	recheckEvery  = 500 * time.Millisecond // re-read the record in the background (another node may have revoked it)
	recheckWithin = time.Second            // not re-read for this long: re-read before serving it
	retireAfter   = time.Minute            // a replaced credential serves requests in flight this long
	sharedRetry   = 30 * time.Second       // a failed refresh is tried again after this, while the cached one serves
)

type sharedEntry struct {
	mint sync.Mutex // one mint at a time per grant

	mu      sync.RWMutex
	issued  *Issued
	expires time.Time
	checked time.Time
	// retryAt: a mint of this grant's credential failed; none is tried
	// before this (each try is a record and an audit entry). failed is
	// that failure, which requests with nothing valid to serve get
	// meanwhile.
	retryAt time.Time
	failed  error

	busy atomic.Bool // a background refresh or recheck runs
}

func (e *sharedEntry) get() (*Issued, time.Time, time.Time) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.issued, e.expires, e.checked
}

func (e *sharedEntry) set(is *Issued, now time.Time) (old *Issued) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, e.issued, e.expires, e.checked, e.retryAt, e.failed = e.issued, is, is.Credential.ExpiresAt, now, time.Time{}, nil
	return old
}

// pause records a failed mint, err: none is tried again before until.
func (e *sharedEntry) pause(until time.Time, err error) {
	e.mu.Lock()
	e.retryAt, e.failed = until, err
	e.mu.Unlock()
}

// paused reports whether a mint failed less than sharedRetry before now.
func (e *sharedEntry) paused(now time.Time) bool { return e.pausedBy(now) != nil }

// pausedBy is the failure that pauses minting at now; nil when none does.
func (e *sharedEntry) pausedBy(now time.Time) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if !now.Before(e.retryAt) {
		return nil
	}
	return e.failed
}

// drop forgets the entry's credential if it is id.
func (e *sharedEntry) drop(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.issued != nil && e.issued.ID == id {
		e.issued, e.expires = nil, time.Time{}
	}
}

type sharedCache struct {
	mu sync.Mutex
	m  map[string]*sharedEntry
}

func (c *sharedCache) entry(key string) *sharedEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*sharedEntry{}
	}
	e := c.m[key]
	if e == nil {
		e = &sharedEntry{}
		c.m[key] = e
	}
	return e
}

func (c *sharedCache) dropID(id string) {
	c.mu.Lock()
	es := make([]*sharedEntry, 0, len(c.m))
	for _, e := range c.m {
		es = append(es, e)
	}
	c.mu.Unlock()
	for _, e := range es {
		e.drop(id)
	}
}

// retire takes the cache's entries whose keys keep does not keep out of
// it, once no mint of theirs runs, and returns the credentials they held.
func (c *sharedCache) retire(keep func(key string) bool) []string {
	c.mu.Lock()
	stale := map[string]*sharedEntry{}
	for k, e := range c.m {
		if !keep(k) {
			stale[k] = e
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
	var ids []string
	for _, e := range stale {
		// A mint of the old shape running now lands in e, not in a
		// credential nobody holds.
		e.mint.Lock()
		if is, _, _ := e.get(); is != nil {
			ids = append(ids, is.ID)
		}
		e.mint.Unlock()
	}
	return ids
}

// sharedKey names a grant's credential by everything that shapes it, so a
// policy change that alters its scope or source mints a new one. The
// upstream's url is part of it: it is where the gateway sends the
// credential, and the API that mints it when the App names no api_url, so
// a token one API minted is never injected into requests to another host.
func sharedKey(up *policy.Upstream, g *policy.Grant) string {
	b, _ := json.Marshal(struct {
		Up, URL, Grant string
		App            *policy.GitHubApp
		Scope          *policy.GitHubScope
	}{up.Name, up.URL, g.Name, up.Credential.GitHubApp, g.GitHub})
	return string(b)
}

// Shared returns the grant's shared credential (deliver: gateway): from
// the cache while it has more than a few minutes to live (refreshing it in
// the background once it has less than a quarter of an hour), else freshly
// minted. When minting fails (the upstream is down or rate-limits) and the
// cached one is still valid, the cached one is served; either way minting
// is not tried again for sharedRetry, and meanwhile a request with no
// valid cached one gets the failure again. One revoked on another node (a
// leak reported there) is served for at most recheckWithin after: the
// record is re-read in the background while requests come, and before
// serving when it has not been for that long.
func (m *Manager) Shared(ctx context.Context, up *policy.Upstream, g *policy.Grant) (*Issued, error) {
	e := m.shared.entry(sharedKey(up, g))
	now := m.cfg.Now()
	if is, exp, checked := e.get(); is != nil && now.Before(exp.Add(-mustRefresh)) && (now.Sub(checked) <= recheckWithin || m.recheck(ctx, e, is.ID)) {
		switch {
		case now.After(exp.Add(-refreshBefore)) && !e.paused(now):
			m.background(e, func(ctx context.Context) { m.mintShared(ctx, e, up, g, exp) })
		case now.Sub(checked) > recheckEvery:
			m.background(e, func(ctx context.Context) { m.recheck(ctx, e, is.ID) })
		}
		return is, nil
	}
	_, exp, _ := e.get()
	return m.mintShared(ctx, e, up, g, exp)
}

// background runs fn unless one already runs for e, bounded by the
// manager's timeout and never by the request that noticed.
func (m *Manager) background(e *sharedEntry, fn func(ctx context.Context)) {
	if !e.busy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer e.busy.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
		defer cancel()
		fn(ctx)
	}()
}

// mintShared mints e's credential unless another caller did since its
// expiry was seen as seenExp.
func (m *Manager) mintShared(ctx context.Context, e *sharedEntry, up *policy.Upstream, g *policy.Grant, seenExp time.Time) (*Issued, error) {
	e.mint.Lock()
	defer e.mint.Unlock()
	now := m.cfg.Now()
	cur, exp, _ := e.get()
	if cur != nil && exp.After(seenExp) && now.Before(exp.Add(-refreshBefore)) {
		return cur, nil // minted meanwhile
	}
	valid := cur != nil && now.Before(exp)
	if failed := e.pausedBy(now); failed != nil {
		// A mint failed moments ago: tried again after the pause.
		if valid {
			return cur, nil
		}
		return nil, fmt.Errorf("mint: shared credential of %s/%s: not tried again for %s after a failure: %w", up.Name, g.Name, sharedRetry, failed)
	}
	is, err := m.Mint(ctx, "", up, g, now.Add(sharedTTL))
	if err != nil {
		// Tried again after a pause, not at every request: each try is a
		// record, a revocation of what it half-made, and an audit entry.
		// A first try whose request went away says nothing of the
		// upstream.
		if valid || !errors.Is(ctx.Err(), context.Canceled) {
			e.pause(now.Add(sharedRetry), err)
		}
		if valid {
			m.cfg.Logger.Warn("mint: shared credential not refreshed; serving the cached one", "upstream", up.Name, "grant", g.Name, "retry_in", sharedRetry, "err", err)
			return cur, nil
		}
		return nil, err
	}
	if cur != nil && now.Add(retireAfter).Before(exp) {
		// Requests in flight may hold the old one: it retires shortly,
		// when the worker revokes it as expired (never later than it
		// would have). On record before the new one is served, so that
		// whoever sees the new one also finds the old one due (a revoked
		// one, ErrNotFound, needs nothing).
		retire := now.Add(retireAfter)
		ev := audit.Event{Type: audit.TypeCredentialRenew, Upstream: up.Name, Grant: g.Name, Status: 200, Reason: "replaced by " + is.ID,
			Detail: map[string]any{"credential": cur.ID, "kind": cur.Kind, "expires_at": retire.UTC().Format(time.RFC3339)}}
		since := m.cfg.Audit.Size()
		note := m.noted(ev)
		if err := m.cfg.Store.SetMintedExpiry(context.WithoutCancel(ctx), cur.ID, retire, note); err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				m.cfg.Logger.Warn("mint: replaced shared credential not retired early; it is revoked at its expiry", "id", cur.ID, "err", err)
			}
		} else {
			m.settle(ctx, since, note)
		}
	}
	e.set(is, now)
	return is, nil
}

// recheck drops e's credential when its record is no longer live (a leak
// another node revoked), and reports whether it is kept: a record that
// cannot be read now keeps it (the store's trouble is not a revocation).
func (m *Manager) recheck(ctx context.Context, e *sharedEntry, id string) bool {
	rec, err := m.cfg.Store.MintedByID(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return true
	}
	if errors.Is(err, store.ErrNotFound) || rec.State != store.MintLive {
		e.drop(id)
		return false
	}
	e.mu.Lock()
	if e.issued != nil && e.issued.ID == id {
		e.checked = m.cfg.Now()
	}
	e.mu.Unlock()
	return true
}

// sharedKeys are the keys of the shared credentials p serves: one per
// grant on a minting upstream not delivered to the job.
func sharedKeys(p *policy.Policy) map[string]bool {
	keys := map[string]bool{}
	for _, g := range p.Grants {
		if up := p.Upstreams[g.Upstream]; up != nil && up.Minted() && g.Deliver != policy.DeliverJob {
			keys[sharedKey(up, g)] = true
		}
	}
	return keys
}

// Reshaped lists the grants old and p both have whose shared credential
// (deliver: gateway) under old is not the one p serves: p delivers it to
// the job, or changes what shapes it (sharedKey: the upstream, its url, the
// App, the GitHub scope). A narrowed scope is among them: the token minted
// under old may do more than p gives. Removed grants are left out (their
// credentials are revoked as such).
func Reshaped(old, p *policy.Policy) []string {
	keys := sharedKeys(p)
	var out []string
	for name, og := range old.Grants {
		up := old.Upstreams[og.Upstream]
		if p.Grants[name] == nil || up == nil || !up.Minted() || og.Deliver == policy.DeliverJob || keys[sharedKey(up, og)] {
			continue
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// RetireShared revokes the shared credentials this node caches that p no
// longer serves (their grant removed or reshaped: Reshaped) and forgets
// them, so that the node's next request mints one as p shapes it. The
// cache is per node: every node calls it as it puts a version in force,
// which also catches one it minted under the old version after another
// node applied the new one. Each is marked once and revoked once.
func (m *Manager) RetireShared(ctx context.Context, p *policy.Policy, reason string) error {
	keys := sharedKeys(p)
	ids := m.shared.retire(func(k string) bool { return keys[k] })
	if len(ids) == 0 {
		return nil
	}
	if _, err := m.cfg.Store.RevokeMinted(ctx, ids, nil, reason); err != nil {
		return fmt.Errorf("mint: revoke shared credentials the policy no longer serves: %w", err)
	}
	for _, id := range ids {
		m.gone(store.Minted{ID: id, State: store.MintRevoking, Reason: reason})
	}
	m.Kick()
	return nil
}
