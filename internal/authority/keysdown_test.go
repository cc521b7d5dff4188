package authority

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// An issuer whose keys cannot be fetched is a dependency that is down, not
// a bad ID token: the exchange answers 503 temporarily_unavailable (nothing
// was done, the job may try again) and is audited as such, instead of 400
// invalid_grant, which told the job its token was refused.
func TestExchangeIssuerKeysUnavailable(t *testing.T) {
	b := newBench(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing answers there: discovery and keys cannot be fetched
	down, err := devissuer.New(devissuer.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	pol := fmt.Sprintf(`issuers:
  down:
    url: %s
    audience: %s
    algorithms: [%s]
upstreams:
  api:
    url: http://127.0.0.1:2
    credential: {secret: gh}
grants:
  read:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: down, claims: {repository: acme/app}}]
`, url, benchAudience, down.Algorithm())
	if _, err := b.a.ApplyPolicy(context.Background(), []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
		t.Fatal(err)
	}
	raw, err := down.Mint(map[string]any{"repository": "acme/app"}, benchAudience, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	before := b.rec.count(audit.TypeExchange)
	_, err = b.a.Exchange(context.Background(), ExchangeRequest{SubjectToken: raw, Scope: []string{"read"}, Source: otherAddr})
	var re *Error
	if !errors.As(err, &re) || re.Status != 503 || re.Code != "temporarily_unavailable" {
		t.Fatalf("Exchange error %v, want 503 temporarily_unavailable", err)
	}
	if b.rec.count(audit.TypeExchange) != before+1 {
		t.Fatal("not audited exactly once")
	}
	ev, _ := b.rec.last(audit.TypeExchange)
	if ev.Status != 503 || ev.Check != identity.CheckKeysUnavailable {
		t.Errorf("entry status %d check %q, want 503 %q", ev.Status, ev.Check, identity.CheckKeysUnavailable)
	}
}
