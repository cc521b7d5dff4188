package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// blipDB fails its first read of a lease by token hash, as a database does
// for a moment (a fail-over, a dropped connection), then works.
type blipDB struct {
	*store.DB
	reads atomic.Int64
}

func (b *blipDB) LeaseByHash(ctx context.Context, h [32]byte) (store.Lease, error) {
	if b.reads.Add(1) == 1 {
		return store.Lease{}, errors.New("connection reset")
	}
	return b.DB.LeaseByHash(ctx, h)
}

// A key-bound (DPoP) token renews only with a proof of its key, whatever
// the store did while the renewal was looked at.
func TestRenewKeyBoundNeedsProofAfterStoreBlip(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	log := &entries{fail: map[string]bool{}}
	// Node A issued the token; this node (B) has never seen it.
	tok, _, err := lease.New(db, h, lease.Options{}).Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"},
		Claims: map[string]string{"repository": "acme/app"}, TTL: time.Minute, MaxTTL: time.Hour, JKT: "bound-key-thumbprint"})
	if err != nil {
		t.Fatal(err)
	}
	leases := lease.New(&blipDB{DB: db}, h, lease.Options{})
	auth := authority.New(authority.Config{Audit: log, Leases: leases, Policies: db, Verifier: identity.NewVerifier(identity.Options{})})
	if _, err := auth.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(renewPolicy)}}, "test"); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Authority: auth, Leases: leases, AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	// The first try meets the blip, the second a store that works: neither
	// renews without the proof.
	for i, want := range []int{503, 401} {
		r := httptest.NewRequest("POST", "/v1/token/renew", nil)
		r.RemoteAddr = "192.0.2.5:40000"
		r.Header.Set("Authorization", "Bearer "+tok) // no DPoP proof
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		if w.Code == 200 {
			t.Fatalf("try %d: a key-bound token was renewed without a DPoP proof: %d %s", i, w.Code, w.Body)
		}
		if w.Code != want {
			t.Fatalf("try %d: %d %s, want %d", i, w.Code, w.Body, want)
		}
	}
}

// RFC 9449 §4.3: a request with more than one DPoP header is refused. The
// exchange and the gateway did so; renewal read the first header only, so
// a request carrying a proof and anything else beside it renewed.
func TestRenewRefusesSeveralDPoPHeaders(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jkt, err := dpop.Thumbprint(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	leases := lease.New(db, h, lease.Options{})
	tok, _, err := leases.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"},
		Claims: map[string]string{"repository": "acme/app", "iss": "http://127.0.0.1:1"}, TTL: time.Minute, MaxTTL: time.Hour, JKT: jkt})
	if err != nil {
		t.Fatal(err)
	}
	auth := authority.New(authority.Config{Audit: &entries{fail: map[string]bool{}}, Leases: leases, Policies: db, Verifier: identity.NewVerifier(identity.Options{})})
	if _, err := auth.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(renewPolicy)}}, "test"); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Authority: auth, Leases: leases, AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		DPoP: dpop.NewVerifier(dpop.Options{}), PublicURL: func(*http.Request) string { return "http://mayfly.test" }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		extra  []string // DPoP headers after a valid proof
		status int
	}{
		{"a proof and garbage", []string{"garbage"}, 401},
		{"two proofs", []string{""}, 401},
		{"one proof", nil, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			proof := func() string {
				p, err := dpop.NewProof(key, "POST", "http://mayfly.test/v1/token/renew", tok, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			r := httptest.NewRequest("POST", "/v1/token/renew", nil)
			r.RemoteAddr = "192.0.2.5:40000"
			r.Header.Set("Authorization", "DPoP "+tok)
			r.Header.Add("DPoP", proof())
			for _, e := range tt.extra {
				if e == "" {
					e = proof()
				}
				r.Header.Add("DPoP", e)
			}
			w := httptest.NewRecorder()
			a.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tt.status)
			}
		})
	}
}

// renewPolicy is the policy of the renewal tests: one grant a key-bound
// token of acme/app holds.
const renewPolicy = `issuers:
  ci: {url: "http://127.0.0.1:1", audience: "https://mayfly.test"}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
  deploy:
    upstream: api
    ttl: 10m
    max_ttl: 1h
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
