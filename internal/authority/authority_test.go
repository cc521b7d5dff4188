package authority

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

type nopVerifier struct{}

func (nopVerifier) Verify(context.Context, string) (*identity.Identity, error) {
	return nil, errors.New("not used")
}
func (nopVerifier) ConsumeJTI(context.Context, identity.JTIStore, *identity.Identity) error {
	return nil
}
func (nopVerifier) SetIssuers([]identity.IssuerConfig) {}

const testPolicy = `issuers:
  ci:
    url: http://127.0.0.1:1
    audience: https://mayfly.test
upstreams:
  api:
    url: http://127.0.0.1:2
    credential:
      secret: gh
grants:
  deploy:
    upstream: api
    ttl: 10m
    max_ttl: 1h
    allow:
      - methods: [GET]
        paths: ["/x/**"]
    who:
      - issuer: ci
        claims:
          repository_id: "1"
`

// A renewal whose audit entry cannot be made durable does not happen: the
// lease keeps its expiry, in memory and in the store (SPEC 6, fail closed).
func TestRenewFailsClosed(t *testing.T) {
	tests := []struct {
		name      string
		failAudit string
		wantErr   error
		extended  bool
	}{
		{"audited", "", nil, true},
		{"audit unavailable", audit.TypeRenew, failclosed.ErrUnavailable, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.SQLite(t).DB
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			m := lease.New(db, h, lease.Options{})
			p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(testPolicy)}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := newRecorder(t, db)
			rec.fail[tt.failAudit] = true
			a := New(Config{Leases: m, Verifier: nopVerifier{}, Policies: db, Audit: rec})
			a.install(p, 1)
			tok, l, err := m.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Claims: map[string]string{"iss": "http://127.0.0.1:1", "repository_id": "1"}, Grants: []string{"deploy"}, TTL: time.Minute, MaxTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			before := l.ExpiresAt()
			_, err = a.Renew(ctx, tok, l.Source)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("renew error = %v, want %v", err, tt.wantErr)
			}
			stored, err := db.LeaseByID(ctx, l.ID)
			if err != nil {
				t.Fatal(err)
			}
			live, _ := m.Get(l.ID)
			for what, got := range map[string]time.Time{"memory": live.ExpiresAt(), "store": stored.ExpiresAt} {
				if extended := got.After(before); extended != tt.extended {
					t.Errorf("%s expiry %v (was %v): extended = %v, want %v", what, got, before, extended, tt.extended)
				}
			}
		})
	}
}
