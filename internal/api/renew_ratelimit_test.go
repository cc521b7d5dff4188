package api

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Each renewal that extends a token is a store write and an audit entry:
// without a limit, one holder (or many behind one address, or anyone with
// junk tokens) could make the node write at will. Renewals are limited
// per address as exchanges are (token_rate, token_burst, counted apart),
// past which 429 rate_limited, nothing written; another address is not
// held back.
func TestRenewIsRateLimitedPerAddress(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	log := &entries{fail: map[string]bool{}}
	leases := lease.New(db, h, lease.Options{})
	tok, _, err := leases.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"},
		Claims: map[string]string{"repository": "acme/app", "iss": "http://127.0.0.1:1"}, TTL: time.Minute, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	auth := authority.New(authority.Config{Audit: log, Leases: leases, Policies: db, Verifier: identity.NewVerifier(identity.Options{})})
	if _, err := auth.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(renewPolicy)}}, "test"); err != nil {
		t.Fatal(err)
	}
	const burst = 5
	a, err := New(Config{Authority: auth, Leases: leases, AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Limits: Limits{TokenRate: 0.001, TokenBurst: burst}})
	if err != nil {
		t.Fatal(err)
	}
	renew := func(addr string) int {
		time.Sleep(1100 * time.Millisecond / 100) // each a moment later: each extends the token
		r := httptest.NewRequest("POST", "/v1/token/renew", nil)
		r.RemoteAddr = addr + ":40000"
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		if w.Code == 429 && w.Header().Get("Retry-After") == "" {
			t.Fatalf("429 without Retry-After: %s", w.Body)
		}
		return w.Code
	}
	renewals := func() int {
		n := 0
		for _, ev := range log.all() {
			if ev.Type == audit.TypeRenew {
				n++
			}
		}
		return n
	}
	codes := map[int]int{}
	for range 3 * burst {
		codes[renew("192.0.2.5")]++
	}
	if codes[200] > burst || codes[429] == 0 {
		t.Fatalf("%d renewals from one address: %v, want at most %d renewed and the rest 429", 3*burst, codes, burst)
	}
	if n := renewals(); n > burst {
		t.Fatalf("%d renewal entries written from one address, want at most %d", n, burst)
	}
	if c := renew("198.51.100.9"); c != 200 {
		t.Fatalf("another address's renewal: %d, want 200", c)
	}
}
