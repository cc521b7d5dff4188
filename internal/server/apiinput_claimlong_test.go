package server

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// TestAPIInputExchangeLongIndexedClaimOnPostgres: the claims a lease keeps
// in indexed columns (sub, the job id, the repository or project, and the
// jti recorded once) are bounded. PostgreSQL cannot index a text of more
// than about 2.7 kB: an ID token whose sub was 3 kB got 503 there (the lease
// could not be stored, counted as the store being down) and 200 on SQLite.
// Now such a token is refused on both backends alike (400 invalid_grant
// naming the claim), its jti not spent.
func TestAPIInputExchangeLongIndexedClaimOnPostgres(t *testing.T) {
	long := func() string {
		b := make([]byte, 2400)
		rand.Read(b)
		return base64.RawURLEncoding.EncodeToString(b) // 3200 characters that do not compress
	}
	for _, be := range []string{"sqlite", "postgres"} {
		t.Run(be, func(t *testing.T) {
			cfg := Config{}
			if be == "postgres" {
				cfg.Postgres = storetest.FreshSchema(t, storetest.PostgresDSN(t))
			}
			h := newHarness(t, cfg)
			tests := []struct {
				name   string
				claims map[string]any
				claim  string // the claim the refusal names
			}{
				{"sub", map[string]any{"sub": "repo:acme/app:ref:refs/heads/" + long()}, "sub"},
				{"run_id", map[string]any{"run_id": long()}, "run_id"},
				{"repository", map[string]any{"repository": long()}, "repository"},
				{"jti", map[string]any{"jti": long()}, "jti"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					h.t = t
					jti := "jti-long-" + tt.name
					if _, ok := tt.claims["jti"]; !ok {
						tt.claims["jti"] = jti
					}
					got := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, tt.claims), "deploy"), 400)
					desc, _ := got["error_description"].(string)
					if got["error"] != "invalid_grant" || !strings.Contains(desc, `claim "`+tt.claim+`"`) {
						t.Errorf("refusal = %v, want invalid_grant naming claim %q", got, tt.claim)
					}
					if tt.name != "jti" {
						h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, map[string]any{"jti": jti}), "deploy"), 200)
					}
				})
			}
		})
	}
}
