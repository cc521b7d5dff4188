package authority

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A token whose use limit another node counted to the end is refused a
// renewal as an invalid token (401), as it is on the node that counted
// it: not extended, and not a server failure.
func TestRenewOfATokenUsedUpElsewhere(t *testing.T) {
	ctx := context.Background()
	b := storetest.SQLite(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	here := lease.New(b.DB, h, lease.Options{})
	there := lease.New(b.Another(t), h, lease.Options{})
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(testPolicy)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{Leases: here, Verifier: nopVerifier{}, Policies: b.DB, Audit: newRecorder(t, b.DB)})
	a.install(p, 1)
	tok, l, err := here.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Claims: map[string]string{"iss": "http://127.0.0.1:1", "repository_id": "1"},
		Grants: []string{"deploy"}, TTL: time.Minute, MaxTTL: time.Hour, MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	lt, err := there.Lookup(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := there.Use(ctx, lt); err != nil {
		t.Fatal(err)
	}
	before := l.ExpiresAt()
	_, err = a.Renew(ctx, tok, l.Source)
	var re *Error
	if !errors.As(err, &re) || re.Status != 401 || re.Code != "invalid_token" {
		t.Fatalf("renewal of a used-up token: %v, want 401 invalid_token", err)
	}
	stored, err := b.DB.LeaseByID(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.ExpiresAt.After(before) || l.ExpiresAt().After(before) {
		t.Fatalf("a used-up token was extended: store %v, memory %v, was %v", stored.ExpiresAt, l.ExpiresAt(), before)
	}
}
