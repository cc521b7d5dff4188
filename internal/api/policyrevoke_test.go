package api

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// countedThen is a lease store that runs meanwhile once armed, just after
// it has counted the live leases: what an exchange on another node does
// between the count a policy apply checks and the apply.
type countedThen struct {
	*store.DB
	armed     atomic.Bool
	meanwhile func()
}

func (s *countedThen) LiveLeaseCounts(ctx context.Context, now time.Time) (int, map[string]int, error) {
	n, by, err := s.DB.LiveLeaseCounts(ctx, now)
	if s.armed.CompareAndSwap(true, false) {
		s.meanwhile()
	}
	return n, by, err
}

// A policy applied without allow_revoke revokes no live token, not even
// one issued after the server counted the tokens its removed grants have:
// it is refused (409 revocation_not_confirmed) and changes nothing.
func TestPolicyApplyRevokesNothingUnconfirmed(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	log := &entries{fail: map[string]bool{}}
	admins := authority.NewAdmins(db, h, log, nil)
	adminTok, _, err := admins.Create(ctx, "root", authority.RoleAdmin, 0, "test", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	var leases *lease.Manager
	var issued string
	st := &countedThen{DB: db, meanwhile: func() {
		_, l, err := leases.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"}, TTL: time.Minute, MaxTTL: time.Hour})
		if err != nil {
			t.Errorf("issue: %v", err)
			return
		}
		issued = l.ID
	}}
	leases = lease.New(st, h, lease.Options{})
	auth := authority.New(authority.Config{Audit: log, Leases: leases, Policies: db, Verifier: identity.NewVerifier(identity.Options{})})
	pol := func(grants ...string) string {
		s := `issuers:
  ci: {url: "http://127.0.0.1:1", audience: "https://mayfly.test"}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
`
		for _, g := range grants {
			s += "  " + g + `:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
		}
		return s
	}
	if _, err := auth.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol("deploy", "build"))}}, "test"); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Authority: auth, Admins: admins, Leases: leases, AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	// No token of deploy is live when the apply counts them; one is
	// issued right after.
	st.armed.Store(true)
	r := httptest.NewRequest("PUT", "/v1/policy", strings.NewReader(pol("build")))
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("Authorization", "Bearer "+adminTok)
	w := httptest.NewRecorder()
	a.ServeHTTP(w, r)
	if issued == "" {
		t.Fatal("no token issued meanwhile")
	}
	var out apitype.PolicyRevocationRefused
	json.Unmarshal(w.Body.Bytes(), &out)
	if w.Code != 409 || out.Error.Error != "revocation_not_confirmed" || len(out.Revokes) != 1 || out.Revokes[0].Grant != "deploy" {
		t.Errorf("apply = %d %s, want 409 revocation_not_confirmed naming deploy", w.Code, w.Body)
	}
	if v := auth.PolicyVersion(); v != 1 {
		t.Errorf("policy version %d in force, want 1", v)
	}
	if l, err := db.LeaseByID(ctx, issued); err != nil || !l.RevokedAt.IsZero() {
		t.Errorf("the token issued meanwhile was revoked unconfirmed (%v)", err)
	}
}
