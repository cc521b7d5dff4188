package policy

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// This file is the one place that decides who may have a grant and what a
// held token may do: the exchange (Admit), renewal (Readmit) and the
// gateway (Authorize) ask it, and the same who-matching rules apply to all
// three:
//
//   - the issuer line names the policy's issuer that verified the ID token
//     (by name: two issuers may share a url and differ by audience); a held
//     token's iss must also still be that issuer's url, so a policy that
//     points the name at another issuer takes the grant from old tokens;
//   - every claim line must be present, with one of its values: a claim
//     the identity lacks never matches;
//   - source_cidrs, when given, must contain the request's address;
//   - bind_source_ip (the grant's, or the token's own binding) needs the
//     request's address to equal the one that exchanged the token;
//     IPv4-mapped IPv6 addresses count as IPv4, zones are ignored.

// Checks a Reason belongs to, as audit entries (check) and metrics name
// them.
const (
	CheckScope  = "scope"
	CheckSource = "source"
	CheckPath   = "path"
)

// Reason is why policy said no. Each has one code (audit entries'
// detail.reason), the check it belongs to (audit entries' check) and the
// words error descriptions use, all in one table, so that an audit entry
// and the error a client saw always agree. For a held token the reasons
// are ordered by how far its request got: Authorize reports the furthest
// any of the token's grants reached.
type Reason uint8

const (
	Allowed            Reason = iota // not a refusal
	UnknownGrant                     // the grant asked for is not in the policy
	GrantsRemoved                    // none of a token's grants is in the policy any more
	NoWhoMatches                     // the identity matches no who entry of the grant
	SourceNotAllowed                 // an entry matched, but not from this address
	SourceNotBound                   // the token is bound to the address that exchanged it
	UpstreamNotGranted               // no grant of the token names this upstream
	RequestNotAllowed                // no allow rule lets this method and path through
	PathRefused                      // the request path could be read two ways (CleanPath)
)

var reasons = [...]struct{ code, check, text string }{
	Allowed:            {"allowed", "", "allowed"},
	UnknownGrant:       {"unknown_grant", CheckScope, "unknown grant"},
	GrantsRemoved:      {"grants_removed", CheckScope, "no grant of this token is in the policy"},
	NoWhoMatches:       {"no_who_match", CheckScope, "no who entry matches"},
	SourceNotAllowed:   {"source_not_allowed", CheckSource, "source address not allowed"},
	SourceNotBound:     {"source_not_bound", CheckSource, "source address not allowed: the token is bound to the address that exchanged it"},
	UpstreamNotGranted: {"upstream_not_granted", CheckScope, "no grant of this token is for this upstream"},
	RequestNotAllowed:  {"request_not_allowed", CheckScope, "no grant of this token allows this method and path"},
	PathRefused:        {"path_refused", CheckPath, "path refused"},
}

// Code is the reason's stable name, as audit entries write it.
func (r Reason) Code() string { return r.row().code }

// Check is the check the reason belongs to ("scope", "source", "path").
func (r Reason) Check() string { return r.row().check }

// String is the reason in words, as error descriptions say it.
func (r Reason) String() string { return r.row().text }

func (r Reason) row() struct{ code, check, text string } {
	if int(r) >= len(reasons) {
		n := strconv.Itoa(int(r))
		return struct{ code, check, text string }{"reason_" + n, CheckScope, "reason " + n}
	}
	return reasons[r]
}

// Identity is who asks: the policy's name of the issuer that verified the
// ID token, the token's claims as strings (identity.Identity.Claims) and
// the address the request comes from.
type Identity struct {
	Issuer string
	Claims map[string]string
	Source netip.Addr
}

// Mismatch is the first line of a who entry an identity did not satisfy.
// Claim values are not secret (they say which pipeline asked), so refusals
// show them.
type Mismatch struct {
	Who      int      `json:"who"`               // index of the entry in the grant's who
	Line     string   `json:"line"`              // "issuer", "claims.NAME" or "source_cidrs"
	Expected []string `json:"expected"`          // what the line accepts
	Got      string   `json:"got,omitempty"`     // what the identity has ("" when Missing)
	Missing  bool     `json:"missing,omitempty"` // the identity has no such claim
}

func (m *Mismatch) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "who[%d].%s: expected ", m.Who, Shown(m.Line))
	for i, v := range m.Expected {
		if i > 0 {
			b.WriteString(" or ")
		}
		b.WriteString(strconv.Quote(v))
	}
	if m.Missing {
		b.WriteString(", but the ID token has no such claim")
	} else {
		fmt.Fprintf(&b, ", got %q", m.Got)
	}
	return b.String()
}

// Refusal is a "no" to an identity for a grant: the reason and, when who
// entries were tried, the first line of the closest one that did not
// match.
type Refusal struct {
	Reason   Reason
	Grant    string
	Mismatch *Mismatch // nil unless Reason is NoWhoMatches or SourceNotAllowed
}

// Error reads: grant "deploy": no who entry matches (who[0].claims.ref:
// expected "refs/heads/main", got "refs/heads/dev").
func (r *Refusal) Error() string {
	s := r.Reason.String()
	if r.Grant != "" {
		s = fmt.Sprintf("grant %q: %s", r.Grant, s)
	}
	if r.Mismatch != nil {
		s += " (" + r.Mismatch.String() + ")"
	}
	return s
}

// Detail is the refusal as an audit entry's detail.
func (r *Refusal) Detail() map[string]any {
	d := map[string]any{"reason": r.Reason.Code()}
	if r.Grant != "" {
		d["grant"] = r.Grant
	}
	if m := r.Mismatch; m != nil {
		d["who"] = m.Who
		d["line"] = m.Line
		d["expected"] = m.Expected
		if m.Missing {
			d["missing"] = true
		} else {
			d["got"] = m.Got
		}
	}
	return d
}

// Admit decides whether id may have the grant named grant (the exchange):
// nil when it may.
func (p *Policy) Admit(id Identity, grant string) *Refusal {
	g := p.Grants[grant]
	if g == nil {
		return &Refusal{Reason: UnknownGrant, Grant: grant}
	}
	return g.admit(id)
}

// admit: some who entry matches the identity and allows its address.
func (g *Grant) admit(id Identity) *Refusal {
	reason := NoWhoMatches
	for i := range g.Who {
		w := &g.Who[i]
		if !w.Match(id.Issuer, id.Claims) {
			continue
		}
		if !w.SourceAllowed(id.Source) {
			reason = SourceNotAllowed
			continue
		}
		return nil
	}
	return &Refusal{Reason: reason, Grant: g.Name, Mismatch: g.closest(id, reason)}
}

// Explain returns, for each who entry of the grant, the first line id does
// not satisfy (nil for an entry that matches): the answer to "why not?".
func (g *Grant) Explain(id Identity) []*Mismatch {
	out := make([]*Mismatch, len(g.Who))
	for i := range g.Who {
		out[i] = g.Who[i].explain(i, id)
	}
	return out
}

// closest picks the entry to report a refusal by: for SourceNotAllowed the
// first entry the identity matched, else the entry with the fewest claim
// lines unmet among those of the identity's issuer (the first such), else
// the first entry.
func (g *Grant) closest(id Identity, reason Reason) *Mismatch {
	best, bestMiss := -1, 0
	for i := range g.Who {
		w := &g.Who[i]
		if reason == SourceNotAllowed {
			if w.Match(id.Issuer, id.Claims) {
				return w.explain(i, id)
			}
			continue
		}
		if w.Issuer != id.Issuer {
			continue
		}
		miss := 0
		for k, vals := range w.Claims {
			if v, ok := id.Claims[k]; !ok || !slices.Contains(vals, v) {
				miss++
			}
		}
		if best < 0 || miss < bestMiss {
			best, bestMiss = i, miss
		}
	}
	if best < 0 {
		if len(g.Who) == 0 {
			return nil
		}
		best = 0
	}
	return g.Who[best].explain(best, id)
}

// explain returns the first line of w, in the order issuer, claims by
// name, source_cidrs, that id does not satisfy; nil when all are.
func (w *Who) explain(i int, id Identity) *Mismatch {
	if w.Issuer != id.Issuer {
		return &Mismatch{Who: i, Line: "issuer", Expected: []string{w.Issuer}, Got: id.Issuer}
	}
	names := make([]string, 0, len(w.Claims))
	for k := range w.Claims {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		vals := w.Claims[k]
		v, ok := id.Claims[k]
		if !ok {
			return &Mismatch{Who: i, Line: "claims." + k, Expected: slices.Clone(vals), Missing: true}
		}
		if !slices.Contains(vals, v) {
			return &Mismatch{Who: i, Line: "claims." + k, Expected: slices.Clone(vals), Got: v}
		}
	}
	if !w.SourceAllowed(id.Source) {
		exp := make([]string, len(w.SourceCIDRs))
		for j, p := range w.SourceCIDRs {
			exp[j] = p.String()
		}
		got := ""
		if id.Source.IsValid() {
			got = id.Source.Unmap().WithZone("").String()
		}
		return &Mismatch{Who: i, Line: "source_cidrs", Expected: exp, Got: got}
	}
	return nil
}

// Holder is a job token as the decisions after its exchange see it: the
// identity it was issued to, its grants, the address that exchanged it and
// whether it is bound to that address (lease.Live holds all of these).
type Holder struct {
	Issuer     string
	Claims     map[string]string // the ID token's, "iss" among them
	Grants     []string
	Source     netip.Addr // the address that exchanged the token
	BindSource bool
}

// sameAddr: a is the exchanging address b, compared as IPv4 when mapped,
// zones ignored; an unknown address is never the same.
func sameAddr(a, b netip.Addr) bool {
	return a.IsValid() && a.Unmap().WithZone("") == b.Unmap().WithZone("")
}

// keeps decides whether the policy in force still gives grant g to the
// holder asking from addr: the same who matching as the exchange, then the
// grant's bind_source_ip.
func (g *Grant) keeps(h *Holder, addr netip.Addr) *Refusal {
	why := g.keepsReason(h, addr)
	if why == Allowed {
		return nil
	}
	if why == NoWhoMatches {
		for i := range g.Who {
			if w := &g.Who[i]; w.Issuer == h.Issuer && h.Claims["iss"] != w.issuerURL {
				return &Refusal{Reason: why, Grant: g.Name, Mismatch: &Mismatch{Who: i, Line: "issuer", Expected: []string{w.issuerURL}, Got: h.Claims["iss"]}}
			}
		}
	}
	return &Refusal{Reason: why, Grant: g.Name, Mismatch: g.closest(Identity{Issuer: h.Issuer, Claims: h.Claims, Source: addr}, why)}
}

// Readmit decides a renewal: the policy in force, not the one at issue,
// must still give every grant of the token that it holds to the holder
// asking from addr (grants removed since are skipped). It returns the
// grants that remain, or the first refusal; with no grant left the reason
// is GrantsRemoved.
func (p *Policy) Readmit(h *Holder, addr netip.Addr) ([]*Grant, *Refusal) {
	if h.BindSource && !sameAddr(addr, h.Source) {
		return nil, &Refusal{Reason: SourceNotBound}
	}
	var gs []*Grant
	for _, name := range h.Grants {
		g := p.Grants[name]
		if g == nil {
			continue
		}
		if r := g.keeps(h, addr); r != nil {
			return nil, r
		}
		gs = append(gs, g)
	}
	if len(gs) == 0 {
		return nil, &Refusal{Reason: GrantsRemoved}
	}
	return gs, nil
}

// Decision is Authorize's answer: the grant and allow rule (index into
// its Rules) that let a request through, or why not.
type Decision struct {
	Grant  *Grant
	Rule   int
	Reason Reason // Allowed when Grant is set
}

// Authorize decides a gateway request of a held token from addr: method on
// path (decoded and cleaned, see CleanPath) of upstream. The first of the
// token's grants that the policy in force still gives the holder from addr
// and whose allow rules let the request through allows it; else the
// reason is the furthest any grant got (see Reason). It does not allocate
// when it allows.
func (p *Policy) Authorize(h *Holder, addr netip.Addr, upstream, method, path string) Decision {
	return p.AuthorizeAll(h, addr, upstream, []string{method}, []string{path})
}

// Access is one method on one path that a request needs beside its own
// (a resource it names elsewhere, which the upstream reads).
type Access struct{ Method, Path string }

// AuthorizeAll is Authorize for a request that names more than one method
// (method overrides), more than one path (a WebDAV Destination), or other
// resources it acts on (also): one grant must allow every method on every
// path, and each of also, because the request goes upstream with that one
// grant's credential. The decision's Rule is the one that lets methods[0]
// on paths[0] (the request line) through.
func (p *Policy) AuthorizeAll(h *Holder, addr netip.Addr, upstream string, methods, paths []string, also ...Access) Decision {
	if h.BindSource && !sameAddr(addr, h.Source) {
		return Decision{Rule: -1, Reason: SourceNotBound}
	}
	why := GrantsRemoved
	for _, name := range h.Grants {
		g := p.Grants[name]
		if g == nil {
			continue // removed from the policy since the exchange
		}
		if r := g.keepsReason(h, addr); r != Allowed {
			why = max(why, r)
			continue
		}
		if g.Upstream != upstream {
			why = max(why, UpstreamNotGranted)
			continue
		}
		if rule, ok := g.allowAll(methods, paths, also); ok {
			return Decision{Grant: g, Rule: rule}
		}
		why = RequestNotAllowed
	}
	return Decision{Rule: -1, Reason: why}
}

// allowAll: the grant allows every method on every path, and each of
// also; the rule is the one for the first method and path. Nothing to
// allow is not allowed.
func (g *Grant) allowAll(methods, paths []string, also []Access) (rule int, ok bool) {
	if len(methods) == 0 || len(paths) == 0 {
		return -1, false
	}
	for _, a := range also {
		if _, ok := g.Allow(a.Method, a.Path); !ok {
			return -1, false
		}
	}
	for i, path := range paths {
		for j, method := range methods {
			r, ok := g.Allow(method, path)
			if !ok {
				return -1, false
			}
			if i == 0 && j == 0 {
				rule = r
			}
		}
	}
	return rule, true
}

// keepsReason is keeps without the explanation (for the gateway's hot
// path): NoWhoMatches, SourceNotAllowed or Allowed.
func (g *Grant) keepsReason(h *Holder, addr netip.Addr) Reason {
	why := NoWhoMatches
	for i := range g.Who {
		w := &g.Who[i]
		if !w.Match(h.Issuer, h.Claims) || h.Claims["iss"] != w.issuerURL {
			continue
		}
		if !w.SourceAllowed(addr) {
			why = SourceNotAllowed
			continue
		}
		if g.BindSourceIP && !sameAddr(addr, h.Source) {
			return SourceNotAllowed
		}
		return Allowed
	}
	return why
}

// Narrowed returns, in name order, the grants both old and p have whose
// live tokens p may no longer give all they hold: their who entries (or
// an issuer's url they name), bind_source_ip, max_uses, upstream, delivery
// or minted credential differ. It is a superset: Outgrown decides each
// token. A change of methods or paths is not one: the gateway decides
// those per request, and what a job was handed is not scoped by them.
func Narrowed(old, p *Policy) []string {
	var out []string
	for name, og := range old.Grants {
		g := p.Grants[name]
		if g == nil {
			continue // removed: all its tokens are revoked
		}
		if !slices.EqualFunc(og.Who, g.Who, sameWho) || og.BindSourceIP != g.BindSourceIP || og.MaxUses != g.MaxUses ||
			og.Upstream != g.Upstream || og.Deliver != g.Deliver || !reflect.DeepEqual(og.GitHub, g.GitHub) ||
			!sameMinter(old.Upstreams[og.Upstream], p.Upstreams[g.Upstream]) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func sameWho(a, b Who) bool {
	return a.Issuer == b.Issuer && a.issuerURL == b.issuerURL && slices.Equal(a.SourceCIDRs, b.SourceCIDRs) &&
		reflect.DeepEqual(a.Claims, b.Claims)
}

// sameMinter: a and b mint the same credentials (both nil, or neither
// minting: nothing minted to compare).
func sameMinter(a, b *Upstream) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Kind() == b.Kind() && a.URL == b.URL && reflect.DeepEqual(a.Credential.GitHubApp, b.Credential.GitHubApp) &&
		reflect.DeepEqual(a.Postgres, b.Postgres)
}

// Outgrown says which grant of a held token p no longer gives it as it
// is, and why ("" when p gives it all of them): the token would not be
// issued now from the address that exchanged it (no who entry matches, or
// not from that address: unknown, it is not judged), p's max_uses is
// below the token's own limit (or the token has none), or the
// credential minted for it under old (deliver: job) is for another
// upstream or does more than p's grant would mint. Grants p removed are
// skipped (their tokens are revoked as such); old may be the empty policy,
// when the minted credential is not judged. limit is the token's use
// limit (0: none).
func Outgrown(old, p *Policy, h *Holder, limit int64) (grant, why string) {
	for _, name := range h.Grants {
		g := p.Grants[name]
		if g == nil {
			continue
		}
		if r := g.keepsReason(h, h.Source); r != Allowed && (r != SourceNotAllowed || h.Source.IsValid()) {
			return name, r.String()
		}
		// The gateway counts a token against the limit it was issued
		// with, so one still under a lowered limit would keep its own.
		if m := int64(g.MaxUses); m > 0 && (limit == 0 || m < limit) {
			return name, "use limit lowered"
		}
		og := old.Grants[name]
		if og == nil || og.Deliver != DeliverJob || old.Upstreams[og.Upstream] == nil || !old.Upstreams[og.Upstream].Minted() {
			continue
		}
		if g.Upstream != og.Upstream || g.Deliver != DeliverJob || !sameMinter(old.Upstreams[og.Upstream], p.Upstreams[g.Upstream]) ||
			!og.GitHub.within(g.GitHub) {
			return name, "the credential handed to the job is more than the grant now gives"
		}
	}
	return "", ""
}

// within: an installation token minted with scope s does no more than one
// minted with t would (nil: everything the installation has).
func (s *GitHubScope) within(t *GitHubScope) bool {
	switch {
	case t == nil:
		return true
	case s == nil:
		return false
	}
	if len(t.Repositories) > 0 {
		if len(s.Repositories) == 0 {
			return false
		}
		for _, r := range s.Repositories {
			if !slices.Contains(t.Repositories, r) {
				return false
			}
		}
	}
	level := map[string]int{"read": 1, "write": 2, "admin": 3}
	for perm, l := range s.Permissions {
		if level[t.Permissions[perm]] < level[l] {
			return false
		}
	}
	return true
}
