package authority

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// SPEC section 4: a token's lifetime never exceeds the ID token's own
// expiry plus the grant's ttl. The bound was worked out before the slow
// part of an exchange (a shared credential minted at GitHub, the DPoP
// proof recorded), and the lease's lifetime counted from after it: an ID
// token that expired meanwhile gave a token living past the bound, or
// one issued after the ID token could no longer be accepted at all.
func TestExchangeLifetimeBoundAtIssue(t *testing.T) {
	db := storetest.SQLite(t).DB
	iss := devissuertest.Start(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Now()}
	m := lease.New(db, h, lease.Options{Now: clk.Now})
	rec := newRecorder(t, db)
	a := New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{Now: clk.Now}), Policies: db, Audit: rec, Now: clk.Now})
	pol := fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
  read:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`, iss.URL(), benchAudience, iss.Algorithm())
	if _, err := a.ApplyPolicy(context.Background(), []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		before time.Duration // from the ID token's issue to the exchange
		slow   time.Duration // the exchange's slow part
	}{
		{"ID token expires during the exchange", 0, 30 * time.Second},
		{"ID token long expired by the issue", 0, 2 * time.Minute},
		{"ID token expired within the skew, bound passed by the issue", 40 * time.Second, 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.mu.Lock()
			clk.t = time.Now()
			clk.mu.Unlock()
			raw, err := iss.Mint(map[string]any{"repository": "acme/app"}, benchAudience, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			clk.Add(tc.before)
			id, err := identity.DecodeUnverified(raw)
			if err != nil {
				t.Fatal(err)
			}
			bound := id.Expiry.Add(5 * time.Minute)
			res, err := a.Exchange(context.Background(), ExchangeRequest{SubjectToken: raw, Scope: []string{"read"}, Source: corpAddr,
				UseProof: func(context.Context) error { clk.Add(tc.slow); return nil }})
			if err != nil {
				var re *Error
				if !errors.As(err, &re) || re.Code != "invalid_grant" {
					t.Fatalf("exchange: %v", err)
				}
				return // refused: no token outlives the bound
			}
			l, ok := m.Get(res.LeaseID)
			if !ok {
				t.Fatal("lease not in the view")
			}
			if l.ExpiresAt().After(bound) {
				t.Fatalf("the token expires at %s, past the ID token's expiry plus the grant's ttl (%s) by %s",
					l.ExpiresAt().Format(time.RFC3339), bound.UTC().Format(time.RFC3339), l.ExpiresAt().Sub(bound))
			}
			if l.ExpiresAt().Sub(clk.Now()) < res.ExpiresIn-time.Second || l.ExpiresAt().Sub(clk.Now()) > res.ExpiresIn {
				t.Errorf("expires_in %s, but the token lives %s", res.ExpiresIn, l.ExpiresAt().Sub(clk.Now()))
			}
		})
	}
}
