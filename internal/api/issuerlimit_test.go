package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// TestDoSIssuerLimitSpentByTokensNobodyAdmits: the per-issuer limit was
// charged on the ID token's unverified iss, so anyone could send forged
// tokens naming GitHub's issuer from a few addresses (each within its own
// token_rate) and use up GitHub's whole budget: every real job then got
// 429. Nor may a token the issuer really signed but the policy refuses (any
// GitHub user can get one for a repository of their own) spend it. Such
// tokens are refused and audited as before, bounded by the per-address
// limit; the issuer's admitted traffic is still capped however many
// addresses it comes from.
func TestDoSIssuerLimitSpentByTokensNobodyAdmits(t *testing.T) {
	const aud, burst = "https://mayfly.test", 3
	iss := devissuertest.Start(t)
	// Signs with a key of its own, naming the real issuer.
	forger, err := devissuer.New(devissuer.Options{URL: iss.URL()})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(t *testing.T, by *devissuer.Issuer, repo, aud string) string {
		tok, err := by.Mint(map[string]any{"repository": repo}, aud, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name  string
		flood func(t *testing.T) string
		check string // the check each flood exchange is refused by
	}{
		{"forged signature", func(t *testing.T) string { return mint(t, forger, "acme/app", aud) }, identity.CheckSignature},
		{"signed for a repository the policy refuses", func(t *testing.T) string { return mint(t, iss, "evil/fork", aud) }, policy.CheckScope},
		{"signed for another audience", func(t *testing.T) string { return mint(t, iss, "acme/app", "https://elsewhere.example") }, identity.CheckAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.SQLite(t).DB
			h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			log := &entries{fail: map[string]bool{}}
			leases := lease.New(db, h, lease.Options{})
			auth := authority.New(authority.Config{Audit: log, Leases: leases, Policies: db, Verifier: identity.NewVerifier(identity.Options{})})
			pol := fmt.Sprintf(`issuers:
  ci: {url: %q, audience: %q, algorithms: [%s]}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`, iss.URL(), aud, iss.Algorithm())
			if _, err := auth.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
				t.Fatal(err)
			}
			a, err := New(Config{Authority: auth, Leases: leases, Limits: Limits{IssuerRate: 0.001, IssuerBurst: burst}})
			if err != nil {
				t.Fatal(err)
			}
			send := func(from, tok string) (int, string) {
				body := url.Values{"grant_type": {grantTokenExchange}, "subject_token_type": {typeIDToken}, "scope": {"deploy"}, "subject_token": {tok}}
				r := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body.Encode()))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = from
				w := httptest.NewRecorder()
				a.ServeHTTP(w, r)
				return w.Code, w.Body.String()
			}
			const flood = 40
			for i := range flood { // 10 from each of 4 addresses
				if code, body := send(fmt.Sprintf("198.51.100.%d:4000", i%4), tt.flood(t)); code != http.StatusBadRequest {
					t.Fatalf("flood exchange %d: %d %s, want 400", i, code, body)
				}
			}
			refused := 0
			for _, ev := range log.all() {
				if ev.Type == audit.TypeExchange && ev.Status == 400 && ev.Check == tt.check {
					refused++
				}
			}
			if refused != flood {
				t.Errorf("%d refusals audited with check %s, want %d", refused, tt.check, flood)
			}
			// Real jobs of the issuer, each from an address of its own: the
			// burst is theirs, and no more.
			for i := range burst + 1 {
				want := http.StatusOK
				if i == burst {
					want = http.StatusTooManyRequests
				}
				if code, body := send(fmt.Sprintf("203.0.113.%d:4000", i), mint(t, iss, "acme/app", aud)); code != want {
					t.Fatalf("genuine exchange %d after %d refused ones: %d %s, want %d", i+1, flood, code, body, want)
				}
			}
			// A rate-limited exchange is not audited, as before.
			for _, ev := range log.all() {
				if ev.Status == http.StatusTooManyRequests {
					t.Errorf("rate-limited exchange audited: %+v", ev)
				}
			}
		})
	}
}
