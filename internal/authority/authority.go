// Package authority makes mayfly's decisions about job tokens: the RFC 8693
// exchange of a CI ID token for a job token, renewal, revocation (by the
// holder, by an admin, on a leak report) and the current policy with its
// versions. Every decision, granted or denied, is audited before it is
// answered, and nothing is issued that is not both stored and audited.
//
// It never parses HTTP (the api package does) and never touches the store
// except through the small interfaces below.
package authority

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Auditor records events durably (*auditlog.Log); every entry has a
// Future, whose Wait says when it is safe (the auditlog package comment).
// Add records an event on its own (a refusal, which changes nothing); an
// action's entries are written by the action's own store transaction
// instead (Record: see noted), so that the two commit together, and
// Settle waits for their indexes once that commit returned.
type Auditor interface {
	Add(ctx context.Context, ev audit.Event) auditlog.Future
	Size() int64
	Record(ev audit.Event) ([]byte, error)
	Settle(ctx context.Context, since int64, note *store.Note) error
}

// noted returns the store.Note that writes the entries evs makes from
// what an action changed (none: the action is not recorded), in the
// action's own transaction.
func noted(au Auditor, evs func(c store.Changes) []audit.Event) *store.Note {
	return &store.Note{Make: func(c store.Changes) ([][]byte, error) {
		var recs [][]byte
		for _, ev := range evs(c) {
			rec, err := au.Record(ev)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
		return recs, nil
	}}
}

// settle waits for the indexes of the entries an action wrote (Settle),
// so that they are in the log when the caller hears of it, even should the
// caller have gone (the action happened). They are durable already: a
// failure to learn their indexes is logged, never returned.
func settle(ctx context.Context, au Auditor, log *slog.Logger, since int64, note *store.Note) {
	if err := au.Settle(context.WithoutCancel(ctx), since, note); err != nil {
		log.Warn("an action's audit entries are recorded but not in the log yet", "entries", len(note.PIDs), "err", err)
	}
}

// failed maps a store failure of an action to the caller's 503: the
// action and its entries were rolled back together.
func failed(what string, err error) error {
	if errors.Is(err, store.ErrNoteFailed) {
		return unavailable("audit "+what, err)
	}
	return unavailable(what, err)
}

// Verifier verifies CI ID tokens.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*identity.Identity, error)
	ConsumeJTI(ctx context.Context, s identity.JTIStore, id *identity.Identity) error
	SetIssuers(cfgs []identity.IssuerConfig)
}

// PolicyStore keeps policy versions.
type PolicyStore interface {
	ApplyPolicyVersion(ctx context.Context, p store.PolicyVersion, removed []string, reason string, n *store.Note) (int64, map[string][]string, error)
	LatestPolicy(ctx context.Context) (store.PolicyVersion, error)
	UnsealedPolicyVersions(ctx context.Context) ([]store.PolicyVersion, error)
	PolicyVersionCounts(ctx context.Context) (all, sealed int64, err error)
	SealPolicyVersions(ctx context.Context, macs map[int64][]byte, n *store.Note) ([]int64, error)
}

// Config wires an Authority.
type Config struct {
	Leases   *lease.Manager
	Verifier Verifier
	Policies PolicyStore
	// PolicyKey authenticates stored policy versions (PolicyMAC): every
	// version this Authority writes carries its MAC, and a stored version
	// whose MAC does not verify is never put in force, since whoever can
	// write the database could otherwise point an upstream, and the
	// credential the gateway injects, at a server of theirs. The server
	// always sets it; nil (tests of other parts only) checks nothing.
	PolicyKey []byte
	// PolicyRefused, when set, is told of each stored version refused for
	// its MAC, or as a rollback (once per version): a metric.
	PolicyRefused func(version int64)
	// PolicyFloor is the newest version this node put in force before
	// (its data dir keeps it, PolicyFollowed): the MACs cover each
	// version's number, but a database writer can still delete the newest
	// genuine versions, so that an older one, which may grant more,
	// becomes the latest. A latest version below the floor, or below the
	// version in force, is refused as a rollback (ErrPolicyRolledBack).
	PolicyFloor int64
	// PolicyFollowed, when set, is told of each version put in force, for
	// the node to keep the floor (called under the apply lock, in order).
	PolicyFollowed func(version int64)
	Audit          Auditor
	// Secrets writes stored secrets and rotates the master key for admins
	// (PutSecret, DeleteSecret, RotateMasterKey).
	Secrets SecretWriter
	// Rotations, when set, validates and runs stored secrets' rotations.
	Rotations Rotations
	// SecretExists lets policy validation check credential references.
	SecretExists func(ctx context.Context, name string) bool
	// AdminTokens, when set, revokes admin tokens presented for revocation
	// or found in a leak report (holding a token is enough to kill it).
	AdminTokens AdminRevoker
	// Sessions, when set, finds the admin sessions (SSO) a leak report
	// names, which the report revokes with its tokens.
	Sessions SessionHolders
	// Minter, when set, mints the upstream credentials of grants on
	// github_app and postgres upstreams (SPEC section 9) and revokes them
	// with their leases. Without one, such grants are refused.
	Minter Minter
	Logger *slog.Logger
	Now    func() time.Time
}

// Minter mints and revokes upstream credentials (internal/mint).
type Minter interface {
	Handles(up *policy.Upstream) bool
	// MintFor mints a lease's credential; f names the lease and its
	// holder for the credential's audit entry.
	MintFor(ctx context.Context, f mint.For, up *policy.Upstream, g *policy.Grant, expires time.Time) (*mint.Issued, error)
	// Shared makes sure a grant's shared credential (deliver: gateway) can
	// be had, from its cache when it can.
	Shared(ctx context.Context, up *policy.Upstream, g *policy.Grant) (*mint.Issued, error)
	RevokeLeases(ctx context.Context, leaseIDs []string, reason string) error
	// RevokeGrants revokes, on every node, the shared credentials of
	// grants a policy version removed or reshaped (mint.Reshaped).
	RevokeGrants(ctx context.Context, grants []string, reason string) error
	// RetireShared revokes the shared credentials this node caches that
	// policy p no longer serves as they are (mint.Reshaped).
	RetireShared(ctx context.Context, p *policy.Policy, reason string) error
	Renew(ctx context.Context, leaseID string, expires time.Time) error
	Lookup(ctx context.Context, values []string) ([]mint.Found, error)
	RevokeRecords(ctx context.Context, recs []store.Minted, reason string) error
}

// Authority is safe for concurrent use.
type Authority struct {
	cfg Config

	applyMu sync.Mutex // serialises policy applies
	current atomic.Pointer[state]
	refused atomic.Int64 // the last stored version refused for its MAC (refusePolicy)
}

type state struct {
	policy  *policy.Policy
	version int64
}

// New returns an Authority. Call LoadPolicy before serving.
func New(cfg Config) *Authority {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Authority{cfg: cfg}
	empty, _ := policy.Parse(nil, nil)
	a.current.Store(&state{policy: empty})
	return a
}

// Error is a refusal with its OAuth error code, HTTP status and the check
// that failed. Its text never contains a token.
type Error struct {
	Status      int
	Code        string
	Description string
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func refuse(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

// unavailable wraps a failure to make an action durable: the action did
// not happen and the caller answers 503 (failclosed.ErrUnavailable).
func unavailable(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, failclosed.ErrUnavailable, err)
}

// Policy returns the policy in force.
func (a *Authority) Policy() *policy.Policy { return a.current.Load().policy }

// Current is Policy, for the gateway.
func (a *Authority) Current() *policy.Policy { return a.Policy() }

// PolicyVersion returns the number of the policy version in force (0: none).
func (a *Authority) PolicyVersion() int64 { return a.current.Load().version }

// ExchangeRequest is a parsed RFC 8693 request.
type ExchangeRequest struct {
	SubjectToken string
	Scope        []string
	TTL          time.Duration // 0: the grant's ttl
	Source       netip.Addr
	JKT          string // DPoP thumbprint, already verified by the caller
	// UseProof, when set, spends the DPoP proof that gave JKT. It is
	// called once, after the ID token and the policy admitted the
	// exchange and before the lease is issued: a proof sent with an ID
	// token nobody could exchange is never recorded, so such requests
	// cannot fill the replay cache. An *Error it returns refuses the
	// exchange (a replayed proof); any other error is the replay store
	// failing.
	UseProof func(context.Context) error
	// AllowIssuer, when set, is the per-issuer limit: asked once, with the
	// issuer's URL, after the ID token verified and the policy admitted
	// the exchange, so that tokens nobody could exchange (forged ones
	// naming a real issuer, or that issuer's tokens for identities no
	// grant trusts, which anyone can get from GitHub) never spend a real
	// issuer's budget. false refuses with ErrIssuerLimited, unaudited, as
	// any rate-limited request is.
	AllowIssuer func(issuerURL string) bool
}

// ErrIssuerLimited refuses an exchange AllowIssuer did not allow.
var ErrIssuerLimited = errors.New("too many exchanges for this issuer")

// ExchangeResult is an issued token. Token is the only copy.
type ExchangeResult struct {
	Token     string
	LeaseID   string
	ExpiresIn time.Duration
	Scope     []string
	// Credentials are the minted upstream credentials delivered to the job
	// (deliver: job), by upstream name. They are the only copies.
	Credentials map[string]mint.Credential

	note *store.Note // wrote its audit entry's pending record
}

// Exchange trades a CI ID token for a job token. Denials are audited with
// the check that failed.
func (a *Authority) Exchange(ctx context.Context, r ExchangeRequest) (*ExchangeResult, error) {
	since := a.cfg.Audit.Size()
	st := a.current.Load()
	if use := r.UseProof; use != nil {
		// A proof spent before a policy change asked to decide again
		// stays spent for this request: the retry must not find it used.
		var used bool
		r.UseProof = func(ctx context.Context) error {
			if used {
				return nil
			}
			used = true
			return use(ctx)
		}
	}
	if allow := r.AllowIssuer; allow != nil {
		// Charged once, even when a policy change decides again.
		var allowed bool
		r.AllowIssuer = func(iss string) bool {
			allowed = allowed || allow(iss)
			return allowed
		}
	}
	ev := audit.Event{Type: audit.TypeExchange, Source: addrString(r.Source), Grant: strings.Join(r.Scope, " "), PolicyVersion: versionString(st.version)}
	res, err := a.exchange(ctx, st, r, &ev)
	for try := 0; errors.Is(err, store.ErrPolicyChanged) && try < 3; try++ {
		// Another node applied a policy version after this one was read:
		// decide again under the version in force (nothing was issued;
		// the ID token's jti was not recorded).
		if serr := a.SyncPolicy(ctx); serr != nil {
			err = unavailable("sync policy", serr)
			break
		}
		st = a.current.Load()
		ev = audit.Event{Type: audit.TypeExchange, Source: addrString(r.Source), Grant: strings.Join(r.Scope, " "), PolicyVersion: versionString(st.version)}
		res, err = a.exchange(ctx, st, r, &ev)
	}
	if errors.Is(err, ErrIssuerLimited) {
		return nil, err
	}
	if err != nil {
		var me *mint.Error
		if errors.As(err, &me) {
			// The upstream or its credential source refused: a clear
			// answer naming the cause.
			err = &Error{Status: me.Status, Code: me.Code, Description: me.Description}
		}
		var re *Error
		if !errors.As(err, &re) {
			// Not a refusal: the store or log failed. Still try to record it.
			ev.Status = 503
			ev.Reason = "unavailable"
			clipCaller(&ev)
			a.cfg.Audit.Add(ctx, ev).Wait(ctx)
			return nil, err
		}
		if aerr := a.recordRefusal(ctx, ev, re); aerr != nil {
			return nil, aerr
		}
		return nil, err
	}
	// Issued and recorded in one commit (the lease insert wrote the
	// entry): only its index is awaited.
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, res.note)
	return res, nil
}

// ExchangeTooLarge refuses, and records as any refused exchange, a
// request larger than the API reads (limit bytes): the ID token is the
// only field that can be that large, so it is refused as too large an ID
// token is (SPEC section 4: invalid_grant, check size).
func (a *Authority) ExchangeTooLarge(ctx context.Context, source netip.Addr, limit int64) error {
	ev := audit.Event{Type: audit.TypeExchange, Source: addrString(source), PolicyVersion: versionString(a.current.Load().version),
		Check: identity.CheckSize}
	re := refuse(400, "invalid_grant", "%s: the request is more than %d bytes: the ID token is too large", identity.CheckSize, limit)
	if err := a.recordRefusal(ctx, ev, re); err != nil {
		return err
	}
	return re
}

// recordRefusal records a refused exchange; a refusal that cannot be
// recorded is not answered as one (failclosed.ErrUnavailable).
func (a *Authority) recordRefusal(ctx context.Context, ev audit.Event, re *Error) error {
	ev.Status = re.Status
	ev.Reason = re.Code + ": " + re.Description
	clipCaller(&ev)
	if _, err := a.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
		return unavailable("audit exchange denial", err)
	}
	return nil
}

// revokeLeases revokes leases, with the revocation's entries (note, which
// may be nil) in the same transaction, and marks their minted credentials
// for revocation at once (the mint worker would find them anyway).
func (a *Authority) revokeLeases(ctx context.Context, f store.LeaseFilter, reason string, note *store.Note) ([]string, error) {
	ids, err := a.cfg.Leases.RevokeNoted(ctx, f, reason, note)
	a.revokeMinted(ctx, ids, reason)
	return ids, err
}

func (a *Authority) revokeMinted(ctx context.Context, leaseIDs []string, reason string) {
	if a.cfg.Minter == nil || len(leaseIDs) == 0 || !mints(a.Policy()) {
		// Without minting upstreams in force there is nothing to hurry:
		// the worker still finds any credential of an ended lease.
		return
	}
	if err := a.cfg.Minter.RevokeLeases(ctx, leaseIDs, reason); err != nil {
		a.cfg.Logger.Warn("minted credentials not marked for revocation; the worker finds them by their leases", "err", err)
	}
}

// revokeShared revokes the shared credentials (deliver: gateway) of grants
// a policy version removed (every node does it as it puts the version in
// force) or reshaped (the node that applies it, before it is in force
// there: a node following it would revoke what others already minted
// under it): no lease ends with them. A failure is logged, and the worker
// still revokes each at its expiry.
func (a *Authority) revokeShared(ctx context.Context, grants []string, reason string) {
	if a.cfg.Minter == nil || len(grants) == 0 {
		return
	}
	if err := a.cfg.Minter.RevokeGrants(ctx, grants, reason); err != nil {
		a.cfg.Logger.Warn("shared credentials of removed grants not marked for revocation; the worker revokes them at their expiry", "err", err)
	}
}

// retireShared revokes the shared credentials this node caches that
// policy p no longer serves as they are: those of a grant p removed or
// reshaped (a scope narrowed: the cached token may do more than p gives).
// The cache is per node, so every node does it as it puts a version in
// force. A failure is logged; the worker revokes each at its expiry.
func (a *Authority) retireShared(ctx context.Context, p *policy.Policy, reason string) {
	if a.cfg.Minter == nil {
		return
	}
	if err := a.cfg.Minter.RetireShared(ctx, p, reason); err != nil {
		a.cfg.Logger.Warn("shared credentials the policy no longer serves not marked for revocation; the worker revokes them at their expiry", "err", err)
	}
}

// renewsMinted reports whether any of the grants is on a minting
// upstream (a renewal of the others needs no store read for credentials).
func renewsMinted(p *policy.Policy, gs []*policy.Grant) bool {
	for _, g := range gs {
		if up := p.Upstreams[g.Upstream]; up != nil && up.Minted() {
			return true
		}
	}
	return false
}

// mints reports whether any upstream of p mints credentials.
func mints(p *policy.Policy) bool {
	for _, up := range p.Upstreams {
		if up.Minted() {
			return true
		}
	}
	return false
}

// mintPlan lists, per upstream, the grant whose credential the lease gets
// (deliver: job) and the grants served by a shared credential, and refuses
// what cannot be served.
func (a *Authority) mintPlan(p *policy.Policy, scope []string) (job map[string]*policy.Grant, shared []*policy.Grant, err error) {
	for _, name := range scope {
		g := p.Grants[name]
		up := p.Upstreams[g.Upstream]
		if up == nil || !up.Minted() {
			continue
		}
		if a.cfg.Minter == nil || !a.cfg.Minter.Handles(up) {
			return nil, nil, refuse(500, "upstream_misconfigured", "grant %s: this server cannot mint %s credentials for upstream %s", name, up.Kind(), up.Name)
		}
		if g.Deliver != policy.DeliverJob {
			shared = append(shared, g)
			continue
		}
		if job == nil {
			job = map[string]*policy.Grant{}
		}
		if other, ok := job[up.Name]; ok {
			return nil, nil, refuse(400, "invalid_scope", "grants %s and %s both deliver a credential of upstream %s: ask for one of them", other.Name, name, up.Name)
		}
		job[up.Name] = g
	}
	return job, shared, nil
}

func (a *Authority) exchange(ctx context.Context, st *state, r ExchangeRequest, ev *audit.Event) (*ExchangeResult, error) {
	p := st.policy
	if len(r.Scope) == 0 {
		return nil, refuse(400, "invalid_scope", "no grant asked: scope names the grants wanted")
	}
	id, err := a.cfg.Verifier.Verify(ctx, r.SubjectToken)
	if err != nil {
		var ve *identity.VerifyError
		if errors.As(err, &ve) {
			ev.Check = ve.Check
			if ve.Check == identity.CheckKeysUnavailable {
				// The issuer is down, not the token bad: nothing was
				// done and the job may try again.
				return nil, refuse(503, "temporarily_unavailable", "%s", ve.Error())
			}
			return nil, refuse(400, "invalid_grant", "%s", ve.Error())
		}
		return nil, refuse(400, "invalid_grant", "ID token not acceptable")
	}
	ev.Issuer, ev.Subject, ev.Job = id.Issuer, id.Subject, identity.JobID(id)
	ev.Repository = id.Claims["repository"]
	if ev.Repository == "" {
		ev.Repository = id.Claims["project_path"]
	}
	var ttl, maxTTL time.Duration
	bind := false
	var maxUses int64
	seen := map[string]bool{}
	for _, name := range r.Scope {
		if seen[name] {
			continue
		}
		seen[name] = true
		if no := p.Admit(policy.Identity{Issuer: id.Issuer, Claims: id.Claims, Source: r.Source}, name); no != nil {
			ev.Check, ev.Detail = no.Reason.Check(), no.Detail()
			return nil, refuse(400, "invalid_scope", "%s", no.Error())
		}
		g := p.Grants[name]
		if ttl == 0 || g.TTL < ttl {
			ttl = g.TTL
		}
		if maxTTL == 0 || g.MaxTTL < maxTTL {
			maxTTL = g.MaxTTL
		}
		bind = bind || g.BindSourceIP
		if g.MaxUses > 0 && (maxUses == 0 || int64(g.MaxUses) < maxUses) {
			maxUses = int64(g.MaxUses)
		}
	}
	if r.TTL < 0 {
		return nil, refuse(400, "invalid_request", "ttl must be positive")
	}
	if r.TTL > ttl {
		return nil, refuse(400, "invalid_request", "ttl %ds exceeds the grants' ttl %ds", int(r.TTL.Seconds()), int(ttl.Seconds()))
	}
	if r.TTL > 0 {
		ttl = r.TTL
	}
	// Never outlive the ID token by more than the grant's ttl.
	notAfter := id.Expiry.Add(ttl)
	if limit := notAfter.Sub(a.cfg.Now()); limit < ttl {
		ttl = limit
	}
	if ttl < time.Second {
		ev.Check = "expired"
		return nil, refuse(400, "invalid_grant", "expired: the ID token leaves no lifetime for a job token")
	}
	if maxTTL < ttl {
		maxTTL = ttl
	}
	if r.AllowIssuer != nil && !r.AllowIssuer(id.IssuerURL) {
		return nil, ErrIssuerLimited
	}
	// The jti is checked by identity's rules but recorded by the lease
	// insert, in the same commit: one ID token, one lease, one fsync.
	var once captureJTI
	if err := a.cfg.Verifier.ConsumeJTI(ctx, &once, id); err != nil {
		var ve *identity.VerifyError
		if errors.As(err, &ve) {
			ev.Check = ve.Check
			return nil, refuse(400, "invalid_grant", "%s", ve.Error())
		}
		return nil, unavailable("record jti", err)
	}
	scope := make([]string, 0, len(seen))
	for g := range seen {
		scope = append(scope, g)
	}
	sort.Strings(scope)
	jobCreds, shared, err := a.mintPlan(p, scope)
	if err != nil {
		return nil, err
	}
	// A grant served by a shared credential (deliver: gateway) answers here
	// when its credential cannot be had, not at the job's first call; a
	// cached one costs a map read.
	for _, g := range shared {
		if _, err := a.cfg.Minter.Shared(ctx, p.Upstreams[g.Upstream], g); err != nil {
			ev.Check = "upstream_credential"
			return nil, mintRefusal(g, err)
		}
	}
	// The lease and its entry commit together. Credentials are minted
	// after (record first, create second); if that fails, the lease is
	// revoked with an entry of its own and the exchange refused.
	granted := *ev
	granted.Grant, granted.Status = strings.Join(scope, " "), 200
	if len(jobCreds) > 0 {
		granted.Upstream = strings.Join(sortedKeys(jobCreds), " ")
	}
	note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
		e := granted
		e.Lease, e.Hint = c.Leases[0], c.Hint
		return []audit.Event{e}
	})
	if r.UseProof != nil {
		if err := r.UseProof(ctx); err != nil {
			var re *Error
			if errors.As(err, &re) {
				ev.Check = "dpop" // as the gateway names a refused proof
				return nil, re
			}
			return nil, unavailable("record DPoP proof", err)
		}
	}
	// Minting a shared credential and spending the proof take time (a
	// round trip to GitHub, a store write): the bound holds when the token
	// is issued, not only when it was worked out.
	if limit := notAfter.Sub(a.cfg.Now()); limit < ttl {
		if ttl = limit; ttl < time.Second {
			ev.Check = "expired"
			return nil, refuse(400, "invalid_grant", "expired: the ID token leaves no lifetime for a job token")
		}
	}
	tok, l, err := a.cfg.Leases.Issue(ctx, lease.Request{Issuer: id.Issuer, Subject: id.Subject, Job: identity.JobID(id),
		Claims: id.Claims, Grants: scope, TTL: ttl, MaxTTL: maxTTL, Source: r.Source, BindSource: bind, JKT: r.JKT, MaxUses: maxUses, JTI: once.jti, AtPolicy: &st.version,
		Note: note})
	if errors.Is(err, store.ErrReplay) {
		ev.Check = identity.CheckReplay
		return nil, refuse(400, "invalid_grant", "%s: this ID token (jti) was already exchanged", identity.CheckReplay)
	}
	if errors.Is(err, store.ErrPolicyChanged) {
		return nil, err
	}
	if err != nil {
		return nil, failed("issue token", err)
	}
	ev.Grant = strings.Join(scope, " ")
	ev.Hint = token.Hint(tok)
	res := &ExchangeResult{Token: tok, LeaseID: l.ID, ExpiresIn: ttl, Scope: scope, note: note}
	// Record first, create second: the lease exists before anything is
	// minted for it, so the mint worker revokes whatever a failure leaves.
	for _, up := range sortedKeys(jobCreds) {
		g := jobCreds[up]
		is, err := a.cfg.Minter.MintFor(ctx, mint.For{Lease: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job, Repository: ev.Repository},
			p.Upstreams[up], g, l.ExpiresAt())
		if err != nil {
			ev.Lease, ev.Check = l.ID, "upstream_credential"
			// The token was never shown: its lease and whatever was
			// minted for it go, recorded as the issue was.
			a.revokeLeases(context.WithoutCancel(ctx), store.LeaseFilter{ID: l.ID}, "mint failed", noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
				if len(c.Leases) == 0 {
					return nil
				}
				return []audit.Event{{Type: audit.TypeRevoke, Lease: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job,
					Grant: strings.Join(l.Grants, " "), Reason: "mint failed", Count: 1, Status: 200}}
			}))
			return nil, mintRefusal(g, err)
		}
		if res.Credentials == nil {
			res.Credentials = map[string]mint.Credential{}
		}
		res.Credentials[up] = is.Credential
	}
	if len(res.Credentials) > 0 {
		ups := sortedKeys(res.Credentials)
		ev.Upstream = strings.Join(ups, " ")
	}
	return res, nil
}

// mintRefusal is a minting failure as the exchange answers it: a source's
// refusal names its cause; anything else is the store or log failing.
func mintRefusal(g *policy.Grant, err error) error {
	var me *mint.Error
	if errors.As(err, &me) {
		return refuse(me.Status, me.Code, "grant %s: %s", g.Name, me.Description)
	}
	return unavailable("mint upstream credential", err)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Renew extends a job token by its grants' ttl, never past its max.
func (a *Authority) Renew(ctx context.Context, tok string, source netip.Addr) (*lease.Live, error) {
	l, err := a.cfg.Leases.Lookup(ctx, tok)
	if errors.Is(err, failclosed.ErrUnavailable) {
		return nil, err
	}
	if err != nil {
		return nil, refuse(401, "invalid_token", "%v", err)
	}
	// The policy in force decides a renewal, not the one at issue: the
	// identity must still match each grant's who (and source networks), and
	// a max_ttl lowered since caps the token too.
	gs, no := a.Policy().Readmit(&policy.Holder{Issuer: l.Issuer, Claims: l.Claims, Grants: l.Grants, Source: l.Source, BindSource: l.BindSource}, source)
	if no != nil {
		status := 403
		if no.Reason == policy.GrantsRemoved {
			status = 401
		}
		return nil, refuse(status, "invalid_token", "renewal refused: %s", no.Error())
	}
	var ttl, maxTTL time.Duration
	for _, g := range gs {
		if ttl == 0 || g.TTL < ttl {
			ttl = g.TTL
		}
		if maxTTL == 0 || g.MaxTTL < maxTTL {
			maxTTL = g.MaxTTL
		}
	}
	if room := l.IssuedAt.Add(maxTTL).Sub(a.cfg.Now()); room < ttl {
		ttl = room
	}
	if ttl <= 0 || !a.cfg.Now().Add(ttl).After(l.ExpiresAt()) {
		return l, nil // at its most already: nothing to extend
	}
	ev := audit.Event{Type: audit.TypeRenew, Lease: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job, Grant: strings.Join(l.Grants, " "), Source: addrString(source)}
	// The renewal and its entry commit together, or neither does.
	since := a.cfg.Audit.Size()
	var note *store.Note
	errMint := errors.New("renew minted credentials")
	var mintErr error
	nl, err := a.cfg.Leases.RenewWith(ctx, tok, ttl, func(rl *lease.Live, exp time.Time) (*store.Note, error) {
		// The lease's minted credentials must live as long (a role's
		// VALID UNTIL); if they cannot, the renewal does not happen.
		if a.cfg.Minter != nil && renewsMinted(a.Policy(), gs) {
			if mintErr = a.cfg.Minter.Renew(ctx, rl.ID, exp); mintErr != nil {
				return nil, errMint
			}
		}
		ev.Status = 200
		ev.Detail = map[string]any{"expires_at": exp.UTC().Format(time.RFC3339)}
		note = noted(a.cfg.Audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
		return note, nil
	})
	if err != nil {
		if errors.Is(err, errMint) {
			var me *mint.Error
			if errors.As(mintErr, &me) {
				return nil, refuse(me.Status, me.Code, "renewal refused: %s", me.Description)
			}
			return nil, unavailable("renew minted credentials", mintErr)
		}
		if errors.Is(err, lease.ErrRevoked) || errors.Is(err, lease.ErrExpired) || errors.Is(err, lease.ErrUnknown) || errors.Is(err, lease.ErrUsedUp) {
			return nil, refuse(401, "invalid_token", "%v", err)
		}
		return nil, failed("renewal", err)
	}
	if note != nil {
		settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	}
	return nl, nil
}

// AdminRevoker revokes admin tokens their holder presents (one), and finds
// those a leak report names (many, looked up together), which the report
// revokes with its job tokens in one transaction.
type AdminRevoker interface {
	RevokeToken(ctx context.Context, tok string, source netip.Addr, reason string) (revoked bool, err error)
	Holders(ctx context.Context, toks []string) ([]store.AdminToken, error)
}

// SessionHolders finds the live admin sessions of session values, looked
// up together, and ends the one its holder presents (*Sessions).
type SessionHolders interface {
	Holders(ctx context.Context, values []string) ([]store.AdminSession, error)
	RevokeHeld(ctx context.Context, value string, source netip.Addr, reason string) (revoked bool, err error)
}

func (a *Authority) revokeAdmin(ctx context.Context, tok string, source netip.Addr, reason string) (bool, error) {
	if a.cfg.AdminTokens == nil {
		return false, nil
	}
	return a.cfg.AdminTokens.RevokeToken(ctx, tok, source, reason)
}

func isAdminToken(tok string) bool {
	k, err := token.Parse(tok)
	return err == nil && k == token.Admin
}

// RevokeToken revokes a token its holder presents (RFC 7009). Unknown
// tokens are not an error.
func (a *Authority) RevokeToken(ctx context.Context, tok string, source netip.Addr, reason string) error {
	if isAdminToken(tok) {
		_, err := a.revokeAdmin(ctx, tok, source, reason)
		return err
	}
	// An admin session's value is a bearer credential too: holding it is
	// enough to end it, as a leak report naming it does.
	if LooksLikeSession(tok) {
		if a.cfg.Sessions == nil {
			return nil
		}
		_, err := a.cfg.Sessions.RevokeHeld(ctx, tok, source, reason)
		return err
	}
	since := a.cfg.Audit.Size()
	var note *store.Note
	l, revoked, err := a.cfg.Leases.RevokeTokenNoted(ctx, tok, reason, func(l *lease.Live) *store.Note {
		ev := audit.Event{Type: audit.TypeRevoke, Lease: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job,
			Grant: strings.Join(l.Grants, " "), Source: addrString(source), Reason: reason, Count: 1, Status: 200}
		note = noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
			if len(c.Leases) == 0 {
				return nil // revoked meanwhile: not by this call
			}
			return []audit.Event{ev}
		})
		return note
	})
	if err != nil {
		return failed("revocation", err)
	}
	if !revoked {
		return nil
	}
	a.revokeMinted(ctx, []string{l.ID}, reason)
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	return nil
}

// RevokeLeases revokes leases by filter for an admin.
func (a *Authority) RevokeLeases(ctx context.Context, f store.LeaseFilter, admin string, source netip.Addr) (int, error) {
	since := a.cfg.Audit.Size()
	note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
		return []audit.Event{{Type: audit.TypeRevoke, Admin: admin, Source: addrString(source), Lease: f.ID, Grant: f.Grant,
			Subject: f.Subject, Job: f.Job, Issuer: f.Issuer, Count: int64(len(c.Leases)), Status: 200, Reason: "admin"}}
	})
	ids, err := a.revokeLeases(ctx, f, "admin "+admin, note)
	if err != nil {
		return 0, failed("revocation", err)
	}
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	return len(ids), nil
}

// LeakResult says what a leak report did.
type LeakResult struct {
	Revoked        []RevokedLease
	AlreadyRevoked int
	Unknown        int
	// RevokedAdmin lists admin tokens the report revoked (hints only).
	RevokedAdmin []RevokedAdminToken
	// RevokedSessions lists admin sessions (SSO) the report revoked.
	RevokedSessions []RevokedSession
}

// RevokedSession names an admin session revoked by a leak report, by its
// public id only: no part of a session value is ever shown.
type RevokedSession struct {
	ID string
}

// RevokedAdminToken names an admin token revoked by a leak report.
type RevokedAdminToken struct {
	Hint string
}

// RevokedLease names a lease revoked by a leak report.
type RevokedLease struct {
	LeaseID string
	Hint    string
}

// LeakOrigin is what a leak report says of itself, as its audit entry
// records it.
type LeakOrigin struct {
	Source, URL string // a provider report's "source" and "url" (GitLab: "location")
	// Signature is what the report's signature said: "" (none, or none
	// checked), "verified" or "invalid" (the report is taken all the same).
	Signature string
}

// Leak revokes every live job and admin token, admin session and minted
// credential among toks before returning.
// Its work is bounded by len(toks), which the caller caps: repeated tokens
// count once, and unknown tokens are looked up together (a few store
// queries in all), never one query each.
func (a *Authority) Leak(ctx context.Context, toks []string, origin LeakOrigin, source netip.Addr) (*LeakResult, error) {
	seen := make(map[string]bool, len(toks))
	var jobs, admins, minted, sessions []string
	for _, t := range toks {
		if seen[t] {
			continue
		}
		seen[t] = true
		switch k, err := token.Parse(t); {
		case LooksLikeSession(t):
			sessions = append(sessions, t)
		case err == nil && k == token.Admin:
			admins = append(admins, t)
		case err == nil:
			jobs = append(jobs, t)
		default:
			// Not a mayfly token: a credential mayfly may have minted
			// (SPEC section 9), found by its keyed hash.
			minted = append(minted, t)
		}
	}
	// What the report names, found first (reads); then everything it
	// revokes, in one transaction with the report's entries.
	var also store.Leaked
	held := map[string]store.AdminToken{}
	hint := map[string]string{}
	if len(admins) > 0 && a.cfg.AdminTokens != nil {
		found, err := a.cfg.AdminTokens.Holders(ctx, admins)
		if err != nil {
			return nil, unavailable("find leaked admin tokens", err)
		}
		for i, t := range found {
			if t.Name != "" && held[t.Name].Name == "" {
				also.Admins = append(also.Admins, t)
				held[t.Name] = t
				hint[t.Name] = token.Hint(admins[i])
			}
		}
	}
	var sessionIDs []string
	if len(sessions) > 0 && a.cfg.Sessions != nil {
		rows, err := a.cfg.Sessions.Holders(ctx, sessions)
		if err != nil {
			return nil, unavailable("find leaked admin sessions", err)
		}
		for _, row := range rows {
			if row.ID != "" && !slices.Contains(sessionIDs, row.ID) {
				sessionIDs = append(sessionIDs, row.ID)
			}
		}
		also.Sessions = sessionIDs
	}
	var found []mint.Found
	var shared []store.Minted
	if len(minted) > 0 && a.cfg.Minter != nil {
		var err error
		if found, err = a.cfg.Minter.Lookup(ctx, minted); err != nil {
			return nil, unavailable("look up leaked credentials", err)
		}
		for _, f := range found {
			switch rec := f.Record; {
			case rec.LeaseID != "":
				// Its lease goes, and with it the credential.
				also.Leases = append(also.Leases, rec.LeaseID)
			case rec.State != store.MintRevoked && rec.State != store.MintRevoking:
				// One a grant shares: revoked by itself.
				also.Minted = append(also.Minted, rec.ID)
				shared = append(shared, rec)
			}
		}
	}
	count := func(rs []lease.TokenRevocation, c store.Changes) *LeakResult {
		r := &LeakResult{Revoked: []RevokedLease{}}
		counted := map[string]bool{}
		for i, x := range rs {
			switch {
			case x.Revoked && !counted[x.Lease.ID]:
				counted[x.Lease.ID] = true
				r.Revoked = append(r.Revoked, RevokedLease{LeaseID: x.Lease.ID, Hint: token.Hint(jobs[i])})
			case x.Lease != nil:
				r.AlreadyRevoked++
			default:
				r.Unknown++
			}
		}
		for _, name := range c.Admins {
			r.RevokedAdmin = append(r.RevokedAdmin, RevokedAdminToken{Hint: hint[name]})
		}
		for _, id := range c.Sessions {
			r.RevokedSessions = append(r.RevokedSessions, RevokedSession{ID: id})
		}
		r.Unknown += len(admins) - len(c.Admins)
		r.Unknown += len(sessions) - len(c.Sessions)
		r.Unknown += len(minted) - len(found)
		for _, f := range found {
			rec := f.Record
			switch {
			case rec.LeaseID == "" && slices.Contains(c.Minted, rec.ID):
				r.Revoked = append(r.Revoked, RevokedLease{Hint: mintedHint(f.Value)})
			case rec.LeaseID != "" && slices.Contains(c.Leases, rec.LeaseID) && !counted[rec.LeaseID]:
				counted[rec.LeaseID] = true
				r.Revoked = append(r.Revoked, RevokedLease{LeaseID: rec.LeaseID, Hint: mintedHint(f.Value)})
			default:
				r.AlreadyRevoked++
			}
		}
		return r
	}
	since := a.cfg.Audit.Size()
	note := func(rs []lease.TokenRevocation, c store.Changes) ([][]byte, error) {
		r := count(rs, c)
		var evs []audit.Event
		for _, name := range c.Admins {
			evs = append(evs, audit.Event{Type: audit.TypeAdminDelete, Role: held[name].Role, Source: addrString(source), Status: 200, Reason: "leaked",
				Hint: hint[name], Detail: map[string]any{"name": name}})
		}
		for _, id := range c.Sessions {
			evs = append(evs, audit.Event{Type: TypeSessionRevoke, Source: addrString(source), Status: 200, Reason: "leaked",
				Detail: map[string]any{"session": id}})
		}
		ev := audit.Event{Type: audit.TypeLeak, Source: addrString(source), Count: int64(len(r.Revoked) + len(r.RevokedAdmin) + len(r.RevokedSessions)), Status: 200,
			Detail: map[string]any{"report_source": originText(origin.Source, toks), "url": originText(origin.URL, toks), "already_revoked": r.AlreadyRevoked, "unknown": r.Unknown}}
		if origin.Signature != "" {
			ev.Detail["signature"] = origin.Signature
		}
		if len(r.RevokedAdmin) > 0 {
			ev.Detail["admin_tokens"] = len(r.RevokedAdmin)
		}
		if len(r.RevokedSessions) > 0 {
			ev.Detail["admin_sessions"] = len(r.RevokedSessions)
		}
		var ids []string
		for _, x := range r.Revoked {
			if x.LeaseID != "" {
				ids = append(ids, x.LeaseID)
			}
		}
		if len(ids) > 0 {
			ev.Detail["leases"] = ids
		}
		evs = append(evs, ev)
		recs := make([][]byte, 0, len(evs))
		for _, e := range evs {
			rec, err := a.cfg.Audit.Record(e)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		}
		return recs, nil
	}
	rs, c, written, err := a.cfg.Leases.RevokeTokens(ctx, jobs, also, "leaked", note)
	if err != nil {
		return nil, failed("leak report", err)
	}
	res := count(rs, c)
	// Done and recorded; the credentials of the revoked leases (and of the
	// minted ones' leases, revoked before or not) are marked at once, which
	// the mint worker would find anyway.
	a.revokeMinted(ctx, append(c.Leases, also.Leases...), "leaked")
	if len(shared) > 0 {
		if err := a.cfg.Minter.RevokeRecords(ctx, shared, "leaked"); err != nil {
			a.cfg.Logger.Warn("leaked shared credentials are marked for revocation; the worker was not told at once", "err", err)
		}
	}
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, written)
	return res, nil
}

// mintedHint is a minted credential's prefix and four characters.
func mintedHint(v string) string {
	if i := strings.IndexByte(v, '_'); i > 0 && len(v) >= i+5 {
		return v[:i+5] + "…"
	}
	return "…"
}

// clip bounds what a caller chose to 512 bytes, never cutting a
// credential in two (token.Clip).
func clip(s string) string { return token.Clip(s, 512) }

// originText is a leak report's source or URL (the reporter's words) as
// its audit entry keeps them: clipped, with every credential the report
// names (toks) replaced by a hint, sessions' and GitHub's included, which
// the audit log's own redaction does not know.
func originText(s string, toks []string) string {
	s = clip(s)
	for _, t := range toks {
		if t != "" && strings.Contains(s, t) {
			s = strings.ReplaceAll(s, t, mintedHint(t))
		}
	}
	return s
}

// clipCaller clips what a caller chose, as a refusal records it (the
// scope asked, a path, a reason or detail quoting them): the form and
// header limits let through far more than an audit entry holds once JSON
// has escaped it, and a refusal that cannot be recorded is answered 503
// and leaves no trace.
func clipCaller(ev *audit.Event) {
	ev.Grant, ev.Reason, ev.Method, ev.Path = clip(ev.Grant), clip(ev.Reason), clip(ev.Method), clip(ev.Path)
	for k, v := range ev.Detail {
		if s, ok := v.(string); ok {
			ev.Detail[k] = clip(s)
		}
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func versionString(v int64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprint(v)
}

// captureJTI takes the jti identity would record, so the lease insert can
// record it in its own transaction.
type captureJTI struct{ jti *store.JTI }

func (c *captureJTI) UseJTI(_ context.Context, issuer, jti string, expires time.Time) (bool, error) {
	c.jti = &store.JTI{Issuer: issuer, ID: jti, Expires: expires}
	return true, nil
}
