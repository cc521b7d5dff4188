package authority

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// Two issuers may share a url and differ by audience (policy.Issuer). When
// they also differ by jwks_url, the server's verifier keeps one key source
// per url and drops the second (identity.SetIssuers), so every exchange for
// it is refused although `policy check` accepted the policy and `policy
// test` (IssuerOf) said its grants are given. Such a policy now warns at
// its line (a stored version holding one must still load), and policy
// test decides as the server: the second issuer's tokens are refused.
func TestIssuersSharingURLWithDifferentJWKS(t *testing.T) {
	ctx := context.Background()
	b := newBench(t)
	pol := fmt.Sprintf(`issuers:
  a-other:
    url: %[1]s
    audience: https://someone-else.test
    algorithms: [%[3]s]
  b-ours:
    url: %[1]s
    audience: %[2]s
    jwks_url: %[1]s/.well-known/jwks
    algorithms: [%[3]s]
upstreams:
  api:
    url: http://127.0.0.1:2
    credential: {secret: gh}
grants:
  read:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: b-ours, claims: {repository: acme/app}}]
  other:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: a-other, claims: {repository: acme/app}}]
`, b.iss.URL(), benchAudience, b.iss.Algorithm())
	files := []policy.File{{Name: "p.yaml", Data: []byte(pol)}}
	p, err := b.a.ParsePolicy(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	if w := p.Warnings.Error(); !strings.Contains(w, `p.yaml:6: issuers.b-ours.jwks_url: url is also issuer "a-other"'s`) {
		t.Errorf("policy check warnings = %q, want the shared url named at its line", w)
	}

	// The verifier and policy test agree on what reaches them anyway: the
	// second config of a url is dropped by both.
	cfgs := []identity.IssuerConfig{
		{Name: "a-other", URL: b.iss.URL(), Audience: "https://someone-else.test", Algorithms: []string{b.iss.Algorithm()}},
		{Name: "b-ours", URL: b.iss.URL(), Audience: benchAudience, JWKSURL: b.iss.URL() + "/.well-known/jwks", Algorithms: []string{b.iss.Algorithm()}},
	}
	v := identity.NewVerifier(identity.Options{})
	v.SetIssuers(cfgs)
	raw := b.mint(t, map[string]any{"repository": "acme/app"})
	u, err := identity.DecodeUnverified(raw)
	if err != nil {
		t.Fatal(err)
	}
	name, ierr := u.IssuerOf(cfgs)
	_, verr := v.Verify(ctx, raw)
	if (ierr == nil) != (verr == nil) || identity.CheckOf(ierr) != identity.CheckOf(verr) {
		t.Errorf("IssuerOf = %q, %v; Verify: %v", name, ierr, verr)
	}
}
