package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const decidePolicy = `issuers:
  gh:
    url: https://token.actions.githubusercontent.com
    audience: mayfly
  ci:
    url: https://ci.example.com
    audience: mayfly
upstreams:
  api:
    url: https://api.example.com
    credential: {secret: api-token}
  other:
    url: https://other.example.com
    credential: {secret: other-token}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
      - methods: [POST]
        paths: ["/repos/acme/app/deployments"]
    who:
      - issuer: gh
        claims:
          repository_id: "42"
          ref: [refs/heads/main, refs/heads/release]
          environment: production
      - issuer: gh
        claims: {repository_id: "43"}
        source_cidrs: [10.0.0.0/8]
  bound:
    upstream: api
    ttl: 10m
    bind_source_ip: true
    allow: [{methods: [GET], paths: ["/bound"]}]
    who: [{issuer: ci, claims: {project: app}}]
  elsewhere:
    upstream: other
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {project: app}}]
`

func decideFixture(t *testing.T) *Policy {
	t.Helper()
	return mustParse(t, one("p.yaml", decidePolicy))
}

var (
	inNet  = netip.MustParseAddr("10.1.2.3")
	outNet = netip.MustParseAddr("192.0.2.7")
)

func ghClaims(kv ...string) map[string]string {
	m := map[string]string{"iss": "https://token.actions.githubusercontent.com", "repository_id": "42", "ref": "refs/heads/main", "environment": "production"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "-" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

func ciClaims() map[string]string {
	return map[string]string{"iss": "https://ci.example.com", "project": "app"}
}

// A refusal names the grant, the closest who entry and its first unmet
// line with what was expected and what the identity had.
func TestAdmitExplains(t *testing.T) {
	p := decideFixture(t)
	tests := []struct {
		name   string
		id     Identity
		grant  string
		reason Reason
		want   *Mismatch
		text   string
	}{
		{"admitted", Identity{"gh", ghClaims(), outNet}, "deploy", Allowed, nil, ""},
		{"second value of a list", Identity{"gh", ghClaims("ref", "refs/heads/release"), outNet}, "deploy", Allowed, nil, ""},
		{"wrong ref", Identity{"gh", ghClaims("ref", "refs/heads/dev"), outNet}, "deploy", NoWhoMatches,
			&Mismatch{Who: 0, Line: "claims.ref", Expected: []string{"refs/heads/main", "refs/heads/release"}, Got: "refs/heads/dev"},
			`grant "deploy": no who entry matches (who[0].claims.ref: expected "refs/heads/main" or "refs/heads/release", got "refs/heads/dev")`},
		{"claim missing", Identity{"gh", ghClaims("environment", "-"), outNet}, "deploy", NoWhoMatches,
			&Mismatch{Who: 0, Line: "claims.environment", Expected: []string{"production"}, Missing: true},
			`grant "deploy": no who entry matches (who[0].claims.environment: expected "production", but the ID token has no such claim)`},
		{"closest entry has the fewest unmet lines", Identity{"gh", ghClaims("environment", "staging", "ref", "refs/heads/dev"), outNet}, "deploy", NoWhoMatches,
			&Mismatch{Who: 1, Line: "claims.repository_id", Expected: []string{"43"}, Got: "42"}, ""},
		{"closest entry is the second", Identity{"gh", map[string]string{"repository_id": "44"}, inNet}, "deploy", NoWhoMatches,
			&Mismatch{Who: 1, Line: "claims.repository_id", Expected: []string{"43"}, Got: "44"}, ""},
		{"wrong issuer", Identity{"ci", ghClaims(), outNet}, "deploy", NoWhoMatches,
			&Mismatch{Who: 0, Line: "issuer", Expected: []string{"gh"}, Got: "ci"},
			`grant "deploy": no who entry matches (who[0].issuer: expected "gh", got "ci")`},
		{"source", Identity{"gh", map[string]string{"repository_id": "43"}, outNet}, "deploy", SourceNotAllowed,
			&Mismatch{Who: 1, Line: "source_cidrs", Expected: []string{"10.0.0.0/8"}, Got: "192.0.2.7"},
			`grant "deploy": source address not allowed (who[1].source_cidrs: expected "10.0.0.0/8", got "192.0.2.7")`},
		{"unknown grant", Identity{"gh", ghClaims(), outNet}, "nope", UnknownGrant, nil, `grant "nope": unknown grant`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			no := p.Admit(tt.id, tt.grant)
			if tt.reason == Allowed {
				if no != nil {
					t.Fatalf("refused: %v", no)
				}
				return
			}
			if no == nil || no.Reason != tt.reason {
				t.Fatalf("Admit = %v, want reason %v", no, tt.reason)
			}
			if no.Grant != tt.grant {
				t.Errorf("grant %q, want %q", no.Grant, tt.grant)
			}
			if !reflect.DeepEqual(no.Mismatch, tt.want) {
				t.Errorf("mismatch %+v, want %+v", no.Mismatch, tt.want)
			}
			if tt.text != "" && no.Error() != tt.text {
				t.Errorf("text\n got %s\nwant %s", no.Error(), tt.text)
			}
			d := no.Detail()
			if d["reason"] != tt.reason.Code() || d["grant"] != tt.grant {
				t.Errorf("detail %v", d)
			}
			if tt.want != nil && (d["line"] != tt.want.Line || d["who"] != tt.want.Who) {
				t.Errorf("detail %v", d)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	p := decideFixture(t)
	ms := p.Grants["deploy"].Explain(Identity{"gh", map[string]string{"repository_id": "43"}, inNet})
	if len(ms) != 2 || ms[0] == nil || ms[1] != nil {
		t.Fatalf("Explain = %+v, want entry 0 unmet and entry 1 met", ms)
	}
	if ms[0].Line != "claims.environment" || !ms[0].Missing {
		t.Errorf("entry 0: %+v", ms[0])
	}
	// The first unmet claim line by name.
	ms = p.Grants["deploy"].Explain(Identity{"gh", ghClaims("environment", "staging", "ref", "refs/heads/dev"), outNet})
	if want := (&Mismatch{Who: 0, Line: "claims.environment", Expected: []string{"production"}, Got: "staging"}); !reflect.DeepEqual(ms[0], want) {
		t.Errorf("entry 0: %+v, want %+v", ms[0], want)
	}
}

// Renewal and the gateway apply the exchange's who rules to the token's
// recorded identity, against the policy in force.
func TestReadmit(t *testing.T) {
	p := decideFixture(t)
	exch := netip.MustParseAddr("10.9.9.9")
	tests := []struct {
		name   string
		h      Holder
		addr   netip.Addr
		reason Reason
		grants int
	}{
		{"kept", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}}, outNet, Allowed, 1},
		{"removed grant skipped", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"gone", "deploy"}}, outNet, Allowed, 1},
		{"all grants removed", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"gone"}}, outNet, GrantsRemoved, 0},
		{"identity dropped", Holder{Issuer: "gh", Claims: ghClaims("ref", "refs/heads/dev"), Grants: []string{"deploy"}}, outNet, NoWhoMatches, 0},
		{"claim missing from the lease", Holder{Issuer: "gh", Claims: ghClaims("ref", "-"), Grants: []string{"deploy"}}, outNet, NoWhoMatches, 0},
		{"one grant of two dropped", Holder{Issuer: "ci", Claims: ciClaims(), Grants: []string{"elsewhere", "deploy"}}, outNet, NoWhoMatches, 0},
		{"token bound, same address", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}, Source: exch, BindSource: true}, exch, Allowed, 1},
		{"token bound, mapped address", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}, Source: exch, BindSource: true}, netip.MustParseAddr("::ffff:10.9.9.9"), Allowed, 1},
		{"token bound, other address", Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}, Source: exch, BindSource: true}, outNet, SourceNotBound, 0},
		{"grant binds, other address", Holder{Issuer: "ci", Claims: ciClaims(), Grants: []string{"bound"}, Source: exch}, outNet, SourceNotAllowed, 0},
		{"grant binds, unknown address", Holder{Issuer: "ci", Claims: ciClaims(), Grants: []string{"bound"}, Source: exch}, netip.Addr{}, SourceNotAllowed, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gs, no := p.Readmit(&tt.h, tt.addr)
			got := Allowed
			if no != nil {
				got = no.Reason
			}
			if got != tt.reason || len(gs) != tt.grants {
				t.Fatalf("Readmit = %d grants, %v; want %d, %v", len(gs), no, tt.grants, tt.reason)
			}
		})
	}
}

// A held token records its issuer's policy name and its iss. A policy that
// points the name at another issuer url no longer gives the grant to
// tokens the old issuer's identities hold, at renewal or in the gateway.
func TestIssuerRepointed(t *testing.T) {
	p := mustParse(t, one("p.yaml", strings.Replace(decidePolicy, "https://ci.example.com", "https://ci2.example.com", 1)))
	tests := []struct {
		name   string
		claims map[string]string
		reason Reason
	}{
		{"the new issuer's token", map[string]string{"iss": "https://ci2.example.com", "project": "app"}, Allowed},
		{"the old issuer's token", ciClaims(), NoWhoMatches},
		{"no iss recorded", map[string]string{"project": "app"}, NoWhoMatches},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Holder{Issuer: "ci", Claims: tt.claims, Grants: []string{"elsewhere"}}
			if d := p.Authorize(&h, outNet, "other", "GET", "/x"); d.Reason != tt.reason {
				t.Errorf("Authorize: %v, want %v", d.Reason, tt.reason)
			}
			_, no := p.Readmit(&h, outNet)
			if tt.reason == Allowed {
				if no != nil {
					t.Errorf("Readmit: %v", no)
				}
				return
			}
			want := &Mismatch{Who: 0, Line: "issuer", Expected: []string{"https://ci2.example.com"}, Got: tt.claims["iss"]}
			if no == nil || no.Reason != tt.reason || !reflect.DeepEqual(no.Mismatch, want) {
				t.Errorf("Readmit: %v, want %v (%v)", no, tt.reason, want)
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	p := decideFixture(t)
	exch := netip.MustParseAddr("10.9.9.9")
	gh := Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}, Source: exch}
	ci := Holder{Issuer: "ci", Claims: ciClaims(), Grants: []string{"elsewhere", "bound"}, Source: exch}
	with := func(h Holder, f func(*Holder)) Holder { f(&h); return h }
	tests := []struct {
		name                   string
		h                      Holder
		addr                   netip.Addr
		upstream, method, path string
		reason                 Reason
		grant                  string
		rule                   int
	}{
		{"allowed", gh, outNet, "api", "GET", "/repos/acme/app/x", Allowed, "deploy", 0},
		{"second rule", gh, outNet, "api", "POST", "/repos/acme/app/deployments", Allowed, "deploy", 1},
		{"method", gh, outNet, "api", "DELETE", "/repos/acme/app/x", RequestNotAllowed, "", -1},
		{"path", gh, outNet, "api", "GET", "/repos/acme/other", RequestNotAllowed, "", -1},
		{"upstream", gh, outNet, "other", "GET", "/x", UpstreamNotGranted, "", -1},
		{"identity dropped", with(gh, func(h *Holder) { h.Claims = ghClaims("environment", "dev") }), outNet, "api", "GET", "/repos/acme/app/x", NoWhoMatches, "", -1},
		{"claim missing", with(gh, func(h *Holder) { h.Claims = ghClaims("environment", "-") }), outNet, "api", "GET", "/repos/acme/app/x", NoWhoMatches, "", -1},
		{"issuer renamed", with(gh, func(h *Holder) { h.Issuer = "https://token.actions.githubusercontent.com" }), outNet, "api", "GET", "/repos/acme/app/x", NoWhoMatches, "", -1},
		{"grants removed", with(gh, func(h *Holder) { h.Grants = []string{"gone"} }), outNet, "api", "GET", "/repos/acme/app/x", GrantsRemoved, "", -1},
		{"token bound elsewhere", with(gh, func(h *Holder) { h.BindSource = true }), outNet, "api", "GET", "/repos/acme/app/x", SourceNotBound, "", -1},
		{"token bound here", with(gh, func(h *Holder) { h.BindSource = true }), exch, "api", "GET", "/repos/acme/app/x", Allowed, "deploy", 0},
		{"source_cidrs", with(gh, func(h *Holder) {
			h.Claims = map[string]string{"iss": "https://token.actions.githubusercontent.com", "repository_id": "43"}
		}), outNet, "api", "GET", "/repos/acme/app/x", SourceNotAllowed, "", -1},
		{"source_cidrs inside", with(gh, func(h *Holder) {
			h.Claims = map[string]string{"iss": "https://token.actions.githubusercontent.com", "repository_id": "43"}
		}), inNet, "api", "GET", "/repos/acme/app/x", Allowed, "deploy", 0},
		{"grant binds, other address", with(ci, func(h *Holder) { h.Grants = []string{"bound"} }), outNet, "api", "GET", "/bound", SourceNotAllowed, "", -1},
		{"another grant gets further", ci, outNet, "api", "GET", "/bound", UpstreamNotGranted, "", -1},
		{"grant binds, furthest reason wins", ci, outNet, "other", "GET", "/x", Allowed, "elsewhere", 0},
		{"grant binds, here", ci, exch, "api", "GET", "/bound", Allowed, "bound", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Authorize(&tt.h, tt.addr, tt.upstream, tt.method, tt.path)
			name := ""
			if d.Grant != nil {
				name = d.Grant.Name
			}
			if d.Reason != tt.reason || name != tt.grant || d.Rule != tt.rule {
				t.Fatalf("Authorize = %q rule %d %v; want %q rule %d %v", name, d.Rule, d.Reason, tt.grant, tt.rule, tt.reason)
			}
		})
	}
}

// A request that names more methods (overrides) or paths (a Destination)
// is allowed only by a grant that allows them all: it goes upstream with
// that grant's credential, never with one grant's for another's method.
func TestAuthorizeAll(t *testing.T) {
	p := mustParse(t, one("p.yaml", `issuers:
  ci: {url: https://ci.example.com, audience: mayfly}
upstreams:
  api: {url: https://api.example.com, credential: {secret: api-token}}
grants:
  put:
    upstream: api
    ttl: 10m
    allow: [{methods: [PUT, MOVE], paths: ["/a/**"]}]
    who: [{issuer: ci, claims: {project: app}}]
  delete:
    upstream: api
    ttl: 10m
    allow:
      - {methods: [DELETE], paths: ["/**"]}
      - {methods: [MOVE], paths: ["/b/**"]}
    who: [{issuer: ci, claims: {project: app}}]
  both:
    upstream: api
    ttl: 10m
    allow:
      - {methods: [GET], paths: ["/c/**"]}
      - {methods: [PUT, DELETE, MOVE], paths: ["/a/**", "/b/**"]}
    who: [{issuer: ci, claims: {project: app}}]
`))
	tests := []struct {
		name           string
		grants         []string
		methods, paths []string
		also           []Access
		reason         Reason
		grant          string
		rule           int
	}{
		{"one method, one path", []string{"put", "both"}, []string{"PUT"}, []string{"/a/x"}, nil, Allowed, "put", 0},
		{"each part by another grant", []string{"put", "delete"}, []string{"PUT", "DELETE"}, []string{"/a/x"}, nil, RequestNotAllowed, "", -1},
		{"all by a later grant", []string{"put", "delete", "both"}, []string{"PUT", "DELETE"}, []string{"/a/x"}, nil, Allowed, "both", 1},
		{"destination by another grant", []string{"put", "delete"}, []string{"MOVE"}, []string{"/a/x", "/b/x"}, nil, RequestNotAllowed, "", -1},
		{"destination by a later grant", []string{"put", "both"}, []string{"MOVE"}, []string{"/a/x", "/b/x"}, nil, Allowed, "both", 1},
		{"override on the destination", []string{"both"}, []string{"PUT", "GET"}, []string{"/a/x", "/c/x"}, nil, RequestNotAllowed, "", -1},
		{"nothing named", []string{"both"}, nil, []string{"/a/x"}, nil, RequestNotAllowed, "", -1},
		// A resource the request names elsewhere (a copy source) must be
		// readable under the same grant.
		{"also readable", []string{"both"}, []string{"PUT"}, []string{"/a/x"}, []Access{{"GET", "/c/src"}}, Allowed, "both", 1},
		{"also not readable", []string{"both"}, []string{"PUT"}, []string{"/a/x"}, []Access{{"GET", "/d/src"}}, RequestNotAllowed, "", -1},
		{"also by another grant", []string{"put", "delete"}, []string{"PUT"}, []string{"/a/x"}, []Access{{"DELETE", "/z"}}, RequestNotAllowed, "", -1},
		{"also by the same later grant", []string{"put", "both"}, []string{"PUT"}, []string{"/a/x"}, []Access{{"GET", "/c/src"}, {"DELETE", "/b/src"}}, Allowed, "both", 1},
	}
	h := Holder{Issuer: "ci", Claims: ciClaims()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.Grants = tt.grants
			d := p.AuthorizeAll(&h, outNet, "api", tt.methods, tt.paths, tt.also...)
			name := ""
			if d.Grant != nil {
				name = d.Grant.Name
			}
			if d.Reason != tt.reason || name != tt.grant || d.Rule != tt.rule {
				t.Fatalf("AuthorizeAll = %q rule %d %v; want %q rule %d %v", name, d.Rule, d.Reason, tt.grant, tt.rule, tt.reason)
			}
		})
	}
}

func TestAuthorizeDoesNotAllocate(t *testing.T) {
	p := decideFixture(t)
	h := Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}}
	if n := testing.AllocsPerRun(100, func() {
		if d := p.Authorize(&h, outNet, "api", "GET", "/repos/acme/app/x"); d.Reason != Allowed {
			t.Fatal(d.Reason)
		}
	}); n != 0 {
		t.Errorf("Authorize allocates %v times", n)
	}
}

// One table: every reason has a unique code, a check and words.
func TestReasonTable(t *testing.T) {
	codes := map[string]Reason{}
	for r := Allowed; int(r) < len(reasons); r++ {
		if r.Code() == "" || r.String() == "" || strings.ContainsAny(r.Code(), " \"") {
			t.Errorf("reason %d: code %q text %q", r, r.Code(), r.String())
		}
		if r != Allowed && r.Check() == "" {
			t.Errorf("reason %s has no check", r.Code())
		}
		if o, dup := codes[r.Code()]; dup {
			t.Errorf("reasons %d and %d share code %q", o, r, r.Code())
		}
		codes[r.Code()] = r
	}
	if s := Reason(200).String(); s != "reason 200" {
		t.Errorf("out of range: %q", s)
	}
}

// The gateway asks Authorize on every request.
func BenchmarkAuthorize(b *testing.B) {
	p, err := Parse(one("p.yaml", decidePolicy), nil)
	if err != nil {
		b.Fatal(err)
	}
	h := Holder{Issuer: "gh", Claims: ghClaims(), Grants: []string{"deploy"}}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Authorize(&h, outNet, "api", "GET", "/repos/acme/app/contents/README.md"); d.Reason != Allowed {
			b.Fatal(d.Reason)
		}
	}
}
