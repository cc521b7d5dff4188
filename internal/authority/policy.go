package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// SyncPolicy puts in force a newer version another node applied; nodes
// call it periodically. Tokens of grants it removes were revoked by the
// node that applied it.
//
// A newer version that is not authenticated (PolicyKey) is refused: the
// version in force stays, the refusal is logged and counted once, and
// SyncPolicy returns nil (nothing newer to follow). LoadPolicy does not.
func (a *Authority) SyncPolicy(ctx context.Context) error {
	err := a.syncPolicy(ctx)
	if errors.Is(err, ErrPolicyUnauthenticated) || errors.Is(err, ErrPolicyRolledBack) {
		return nil
	}
	return err
}

func (a *Authority) syncPolicy(ctx context.Context) error {
	pv, err := a.cfg.Policies.LatestPolicy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return a.checkRollback(0) // every version deleted
	}
	if err != nil {
		return fmt.Errorf("authority: sync policy: %w", err)
	}
	a.applyMu.Lock()
	old, p, err := a.installNewer(pv)
	a.applyMu.Unlock()
	if err != nil || old == nil {
		return err
	}
	return a.revokeRemoved(ctx, old, p, pv.Version)
}

// installNewer puts pv in force if it is newer than the version in force
// and authentic (PolicyAuthentic; else *UnauthenticatedPolicyError), under
// applyMu, and returns the policy it replaced and pv's (nil, nil: not
// newer). The caller revokes what it removed (revokeRemoved). An older
// pv is a rollback (*RolledBackPolicyError).
func (a *Authority) installNewer(pv store.PolicyVersion) (old, p *policy.Policy, err error) {
	if err := a.checkRollback(pv.Version); err != nil {
		return nil, nil, err
	}
	cur := a.current.Load()
	if pv.Version <= cur.version {
		return nil, nil, nil
	}
	if !a.PolicyAuthentic(pv) {
		return nil, nil, a.refusePolicy(pv.Version)
	}
	p, err = policy.Parse([]policy.File{{Name: fmt.Sprintf("policy-v%d.yaml", pv.Version), Data: pv.Source}}, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("authority: stored policy version %d no longer parses: %w", pv.Version, err)
	}
	a.install(p, pv.Version)
	return cur.policy, p, nil
}

// revokeRemoved revokes the live leases of grants that policy p (version
// v) no longer has: those old had, and those of any lease this node holds.
// Every node does it when it puts a version in force, so the tokens die
// even when the node that applied the version could not revoke them (it
// crashed in between), and a lease another node decided under an older
// version cannot outlive it. Only revocations that happen are audited.
// Then it revokes the shared credentials this node caches that p no
// longer serves (retireShared) and what the grants p narrowed no longer
// give (revokeNarrowed).
func (a *Authority) revokeRemoved(ctx context.Context, old, p *policy.Policy, v int64) error {
	has := func(g string) bool { _, ok := p.Grants[g]; return ok }
	names := a.cfg.Leases.StaleGrants(has)
	for g := range old.Grants {
		if !has(g) && !slices.Contains(names, g) {
			names = append(names, g)
		}
	}
	for _, g := range names {
		since := a.cfg.Audit.Size()
		note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
			if len(c.Leases) == 0 {
				return nil
			}
			return []audit.Event{{Type: audit.TypeRevoke, Admin: fmt.Sprintf("policy v%d", v), Grant: g, Count: int64(len(c.Leases)),
				Status: 200, Reason: "grant removed", PolicyVersion: fmt.Sprint(v)}}
		})
		if _, err := a.revokeLeases(ctx, store.LeaseFilter{Grant: g}, fmt.Sprintf("policy v%d", v), note); err != nil {
			return failed("revocation of a removed grant's leases", err)
		}
		a.cfg.Leases.ForgetGrant(g)
		settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	}
	a.revokeShared(ctx, names, fmt.Sprintf("policy v%d", v))
	a.retireShared(ctx, p, fmt.Sprintf("policy v%d", v))
	_, err := a.revokeNarrowed(ctx, old, p, v)
	return err
}

// narrowPage is how many live leases of a narrowed grant one step of
// revokeNarrowed reads and revokes, in a transaction of its own (at most
// store.HashBatch ids): narrowing a grant that has 100,000 live tokens
// holds no transaction for long, and the other nodes follow it through
// the feed page by page, as any mass revocation.
const narrowPage = store.HashBatch

// revokeNarrowed revokes the live leases of the grants policy p (version
// v) narrowed from old to which it no longer gives what they hold
// (policy.Outgrown). The gateway and renewal refuse such a token already,
// but a credential handed to its job (deliver: job) lives until its lease
// ends. Every node does it when it puts a version in force, as with
// removed grants (from any node's leases, so one that applied the version
// and stopped leaves none); a lease is revoked once, and only revocations
// that happen are audited. At start (old is the empty policy) nothing was
// narrowed: a node's restart never judges the tokens anew. It returns how
// many this call revoked.
func (a *Authority) revokeNarrowed(ctx context.Context, old, p *policy.Policy, v int64) (int, error) {
	names := policy.Narrowed(old, p)
	reason := fmt.Sprintf("policy v%d", v)
	total := 0
	for _, g := range names {
		f := store.LeaseFilter{Grant: g, LiveAt: a.cfg.Now(), Limit: narrowPage}
		for {
			ls, err := a.cfg.Leases.List(ctx, f)
			if err != nil {
				return total, unavailable("read a narrowed grant's leases", err)
			}
			var ids []string
			why := ""
			for _, sl := range ls {
				src, _ := netip.ParseAddr(sl.Source)
				h := &policy.Holder{Issuer: sl.Issuer, Claims: sl.Claims, Grants: sl.Grants, Source: src, BindSource: sl.BindSource}
				_, w := policy.Outgrown(old, p, h, sl.MaxUses)
				if cur := a.Policy(); w != "" && cur != p {
					// A newer version is in force (applied meanwhile):
					// what it gives stays, whenever it was issued.
					if _, still := policy.Outgrown(old, cur, h, sl.MaxUses); still == "" {
						w = ""
					}
				}
				if w != "" {
					ids = append(ids, sl.ID)
					if why == "" {
						why = w
					}
				}
			}
			if len(ids) > 0 {
				since := a.cfg.Audit.Size()
				note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
					if len(c.Leases) == 0 {
						return nil
					}
					return []audit.Event{{Type: audit.TypeRevoke, Admin: reason, Grant: g, Count: int64(len(c.Leases)), Status: 200,
						Reason: "grant narrowed", PolicyVersion: fmt.Sprint(v), Detail: map[string]any{"why": why}}}
				})
				done, err := a.revokeLeases(ctx, store.LeaseFilter{IDs: ids}, reason, note)
				if err != nil {
					return total, failed("revocation of a narrowed grant's leases", err)
				}
				total += len(done)
				settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
			}
			if len(ls) < narrowPage {
				break
			}
			last := ls[len(ls)-1]
			f.After = &store.LeaseCursor{IssuedAt: last.IssuedAt, ID: last.ID}
		}
	}
	return total, nil
}

// LoadPolicy puts the newest stored policy version in force (at start).
// With no stored version the empty policy (deny everything) stays. It is
// SyncPolicy from the empty policy, whose version (0) every stored one
// exceeds, except that a newest version that is not authenticated is an
// error (*UnauthenticatedPolicyError): a node that has no good version to
// keep enforcing does not start.
func (a *Authority) LoadPolicy(ctx context.Context) error {
	if err := a.syncPolicy(ctx); err != nil {
		return fmt.Errorf("authority: load policy: %w", err)
	}
	return nil
}

func (a *Authority) install(p *policy.Policy, version int64) {
	a.cfg.Verifier.SetIssuers(IssuerConfigs(p))
	a.current.Store(&state{policy: p, version: version})
	if a.cfg.PolicyFollowed != nil {
		a.cfg.PolicyFollowed(version)
	}
}

// IssuerConfigs is the policy's issuers as identity verifies them, in name
// order: of two issuers with one url and audience, identity picks the
// first, and `mayfly policy test` must pick the same one.
func IssuerConfigs(p *policy.Policy) []identity.IssuerConfig {
	names := make([]string, 0, len(p.Issuers))
	for name := range p.Issuers {
		names = append(names, name)
	}
	sort.Strings(names)
	cfgs := make([]identity.IssuerConfig, 0, len(names))
	for _, name := range names {
		is := p.Issuers[name]
		cfgs = append(cfgs, identity.IssuerConfig{Name: is.Name, URL: is.URL, Audience: is.Audience, JWKSURL: is.JWKSURL, Algorithms: is.Algorithms,
			AllowMultipleAudiences: is.AllowMultipleAudiences})
	}
	return cfgs
}

// ParsePolicy validates policy files against the stored secrets.
func (a *Authority) ParsePolicy(ctx context.Context, files []policy.File) (*policy.Policy, error) {
	exists := func(name string) bool { return a.cfg.SecretExists(ctx, name) }
	if a.cfg.SecretExists == nil {
		exists = nil
	}
	return policy.Parse(files, exists)
}

// Plan reports what applying files would change, against the latest
// version (this node may not have followed it yet).
func (a *Authority) Plan(ctx context.Context, files []policy.File) ([]policy.Change, error) {
	p, err := a.ParsePolicy(ctx, files)
	if err != nil {
		return nil, err
	}
	if err := a.SyncPolicy(ctx); err != nil {
		return nil, unavailable("sync policy", err)
	}
	return policy.Plan(a.Policy(), p), nil
}

// ApplyResult is a policy version put in force.
type ApplyResult struct {
	Version   int64
	Hash      string
	Changes   []policy.Change
	Revoked   int
	Unchanged bool

	was, now *policy.Policy // the policies before and after, for revokeNarrowed
}

// ApplyPolicy validates files, stores them as a new version, audits it and
// puts it in force; live tokens of grants the new version removes are
// revoked. Applying the policy in force again changes nothing.
func (a *Authority) ApplyPolicy(ctx context.Context, files []policy.File, by string) (*ApplyResult, error) {
	return a.ApplyPolicyOver(ctx, files, by, -1)
}

// ApplyPolicyOver is ApplyPolicy for a plan made against version base: it
// is refused (409) unless base is still the latest version, checked in the
// same turn as the apply, so two plans of one version cannot both be
// applied, the second undoing the first unseen. base -1: any version.
func (a *Authority) ApplyPolicyOver(ctx context.Context, files []policy.File, by string, base int64) (*ApplyResult, error) {
	return a.ApplyPolicyConfirmed(ctx, files, by, base, true)
}

// RevocationNotConfirmed refuses an apply that would revoke live tokens
// without allowRevoke (ApplyPolicyConfirmed): nothing was applied.
type RevocationNotConfirmed struct {
	Revokes []GrantRevocation // the removed grants with live tokens, by name
}

func (e *RevocationNotConfirmed) Error() string {
	return fmt.Sprintf("the policy removes %d grant(s) with live tokens, which applying it revokes: not confirmed", len(e.Revokes))
}

// ApplyPolicyConfirmed is ApplyPolicyOver that, without allowRevoke,
// revokes nothing: when the new version's removed grants have live tokens
// it is refused (*RevocationNotConfirmed) and nothing is applied. That is
// decided in the apply's own transaction, from what it would revoke, so a
// token issued after the caller counted them (Revocations) is not revoked
// unannounced.
func (a *Authority) ApplyPolicyConfirmed(ctx context.Context, files []policy.File, by string, base int64, allowRevoke bool) (*ApplyResult, error) {
	res, err := a.applyPolicy(ctx, files, by, base, allowRevoke)
	if err != nil || res.Unchanged {
		return res, err
	}
	// What it narrowed is revoked after its commit, page by page, and
	// outside applyMu (as a node following the version does), so that the
	// next apply need not wait for 100,000 of them. The version stands
	// whatever happens to that: every other node, following it, revokes
	// what is left.
	a.retireShared(context.WithoutCancel(ctx), res.now, fmt.Sprintf("policy v%d", res.Version))
	n, err := a.revokeNarrowed(context.WithoutCancel(ctx), res.was, res.now, res.Version)
	res.Revoked += n
	if err != nil {
		a.cfg.Logger.Warn("tokens a policy version narrowed not all revoked", "version", res.Version, "err", err)
	}
	return res, nil
}

// applyPolicy is ApplyPolicyConfirmed but for the revocations of what the
// version narrowed.
func (a *Authority) applyPolicy(ctx context.Context, files []policy.File, by string, base int64, allowRevoke bool) (*ApplyResult, error) {
	p, err := a.ParsePolicy(ctx, files)
	if err != nil {
		return nil, err
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	latest, err := a.cfg.Policies.LatestPolicy(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, unavailable("read policy versions", err)
	}
	// Over a rollback the new version would take a number nodes have
	// enforced already (and not follow): refused until repaired.
	if rerr := a.checkRollback(latest.Version); rerr != nil {
		return nil, refuse(409, "conflict", "%v: nothing applied; restore the deleted versions, or see README (policy versions) to start over on purpose", rerr)
	}
	overRefused := false
	// A plan made while the latest version is refused is made against the
	// version in force (Plan compares with it): that base is current.
	planOverRefused := err == nil && !a.PolicyAuthentic(latest) && base == a.current.Load().version
	if base >= 0 && latest.Version != base && !planOverRefused {
		return nil, refuse(409, "conflict", "the policy in force is version %d, not the version %d this plan was made against: plan and apply again", latest.Version, base)
	}
	if err == nil {
		// This node may not have followed the latest version yet (sync
		// runs every 2 s): the apply is compared with it, and revokes the
		// grants it has, as if SyncPolicy had run first.
		// A latest version that is not authenticated is not followed:
		// the apply goes over it from the version in force, so that an
		// admin can replace a planted version with a genuine one.
		was, in, err := a.installNewer(latest)
		overRefused = errors.Is(err, ErrPolicyUnauthenticated)
		if err != nil && !overRefused {
			return nil, unavailable("sync policy", err)
		}
		if was != nil {
			if err := a.revokeRemoved(ctx, was, in, latest.Version); err != nil {
				return nil, err
			}
		}
	}
	old := a.current.Load()
	if old.version != 0 && old.policy.Hash == p.Hash && !overRefused {
		return &ApplyResult{Version: old.version, Hash: p.Hash, Unchanged: true}, nil
	}
	changes := policy.Plan(old.policy, p)
	v := latest.Version + 1
	var removed []string
	for name := range old.policy.Grants {
		if _, ok := p.Grants[name]; !ok {
			removed = append(removed, name)
		}
	}
	sort.Strings(removed)
	// The version, the revocation of its removed grants' live tokens and
	// their entries commit together, or none of them does.
	since := a.cfg.Audit.Size()
	reason := "policy v" + fmt.Sprint(v)
	note := noted(a.cfg.Audit, func(c store.Changes) []audit.Event {
		evs := []audit.Event{{Type: audit.TypePolicy, Admin: by, Status: 200, PolicyVersion: fmt.Sprint(c.Version),
			Detail: map[string]any{"hash": p.Hash, "changes": len(changes)}}}
		for _, g := range removed {
			evs = append(evs, audit.Event{Type: audit.TypeRevoke, Admin: reason, Grant: g, Count: int64(len(c.ByGrant[g])),
				Status: 200, Reason: "admin", PolicyVersion: fmt.Sprint(c.Version)})
		}
		return evs
	})
	if !allowRevoke {
		record := note.Make
		note.Make = func(c store.Changes) ([][]byte, error) {
			var nc RevocationNotConfirmed
			for _, g := range removed {
				if n := len(c.ByGrant[g]); n > 0 {
					nc.Revokes = append(nc.Revokes, GrantRevocation{Grant: g, Leases: n})
				}
			}
			if len(nc.Revokes) > 0 {
				return nil, &nc // undoes the apply with its revocations
			}
			return record(c)
		}
	}
	pv := a.sealPolicy(store.PolicyVersion{Version: v, Hash: p.Hash, Source: p.Source, AppliedAt: a.cfg.Now().UTC(), AppliedBy: by})
	_, byGrant, err := a.cfg.Policies.ApplyPolicyVersion(ctx, pv, removed, reason, note)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, refuse(409, "conflict", "another policy version was applied at the same time; plan and apply again")
		}
		if nc := (*RevocationNotConfirmed)(nil); errors.As(err, &nc) {
			return nil, nc
		}
		return nil, failed("policy version", err)
	}
	// The shared credentials of removed and reshaped grants, every
	// node's, are marked before the version is in force here, so that none
	// minted under it is among them. One a node that has not followed yet
	// mints meanwhile goes when it follows (retireShared).
	a.revokeShared(ctx, append(removed, mint.Reshaped(old.policy, p)...), reason)
	a.install(p, v)
	res := &ApplyResult{Version: v, Hash: p.Hash, Changes: changes}
	for _, g := range removed {
		a.cfg.Leases.Revoked(ctx, byGrant[g])
		a.revokeMinted(ctx, byGrant[g], reason)
		res.Revoked += len(byGrant[g])
	}
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	res.was, res.now = old.policy, p
	return res, nil
}

// GrantRevocation is a grant in force that a new policy removes, with the
// number of live tokens of it that applying the policy would revoke.
type GrantRevocation struct {
	Grant  string `json:"grant"`
	Leases int    `json:"leases"`
}

// Revocations lists the grants in force that p removes and that have live
// tokens, so that an apply that would revoke them can be shown and
// confirmed first (an empty policy removes every grant). The counts are
// the store's (every node's tokens) as of now: a token issued meanwhile is
// revoked by the apply too. The grants in force are the latest version's
// (this node may not have followed it yet).
func (a *Authority) Revocations(ctx context.Context, p *policy.Policy) ([]GrantRevocation, error) {
	if err := a.SyncPolicy(ctx); err != nil {
		return nil, unavailable("sync policy", err)
	}
	old := a.current.Load().policy
	_, live, err := a.cfg.Leases.Counts(ctx)
	if err != nil {
		return nil, unavailable("count live tokens", err)
	}
	var out []GrantRevocation
	for name := range old.Grants {
		if _, kept := p.Grants[name]; kept || live[name] == 0 {
			continue
		}
		out = append(out, GrantRevocation{Grant: name, Leases: live[name]})
	}
	slices.SortFunc(out, func(x, y GrantRevocation) int { return strings.Compare(x.Grant, y.Grant) })
	return out, nil
}
