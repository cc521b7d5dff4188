package server

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// TestAPIInputExchangeClaimWithNULOnPostgres: an ID token the issuer signed
// whose claims hold a NUL character ("\u0000", valid JSON) at any depth is
// refused on both backends alike: 400 invalid_grant naming the claim, and
// its jti is not spent (a clean token with the same jti is exchanged after
// it). PostgreSQL cannot store such text: the exchange used to answer 503
// temporarily_unavailable there and 200 on SQLite.
func TestAPIInputExchangeClaimWithNULOnPostgres(t *testing.T) {
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
				{"sub", map[string]any{"sub": "repo:acme/app:ref:refs/heads/main\x00"}, "sub"},
				{"run_id", map[string]any{"run_id": "42\x00"}, "run_id"},
				{"workflow", map[string]any{"job_workflow_ref": "acme/app/.github/workflows/d.yml@refs/heads/main\x00"}, "job_workflow_ref"},
				{"nested", map[string]any{"extra": map[string]any{"a": []any{"b\x00"}}}, "extra"},
				{"name", map[string]any{"a\x00": "b"}, `a\x00`},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					h.t = t
					jti := "jti-nul-" + tt.name
					tt.claims["jti"] = jti
					got := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, tt.claims), "deploy"), 400)
					desc, _ := got["error_description"].(string)
					if got["error"] != "invalid_grant" || !strings.Contains(desc, `claim "`+tt.claim+`"`) {
						t.Errorf("refusal = %v, want invalid_grant naming claim %q", got, tt.claim)
					}
					h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, map[string]any{"jti": jti}), "deploy"), 200)
				})
			}
		})
	}
}
