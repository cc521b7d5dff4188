package server

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// Input a caller got wrong is the caller's mistake, answered alike on both
// backends: PostgreSQL cannot store or compare text holding a NUL byte or
// invalid UTF-8, and such input used to reach it and answer 500
// server_error or 503 temporarily_unavailable there.

// TestExchangeClaimWithNUL: an ID token the issuer signed whose claims
// hold a NUL character ("\u0000", valid JSON) at any depth is refused:
// 400 invalid_grant naming the claim, and its jti is not spent (a clean
// token with the same jti is exchanged after it). It used to answer 503
// on PostgreSQL and 200 on SQLite.
func TestExchangeClaimWithNUL(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
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

// TestAdminFilterWithNUL: a lease filter, lease_id, admin token name or
// admin session id holding a NUL byte or invalid UTF-8 answers 400
// invalid_request for the filters, 404 for a token name or session id
// (none can have it).
func TestAdminFilterWithNUL(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		// admin_oidc, for DELETE /v1/admin/sessions/{id}.
		cfg.AdminOIDC = devissuertest.AdminOIDC(devissuertest.Start(t), "http://127.0.0.1:1")
		h := newHarness(t, cfg)
		tests := []struct {
			method, path, body string
			want               int
		}{
			{"GET", "/v1/leases?grant=a%00b", "", 400},
			{"GET", "/v1/leases?subject=a%ffb", "", 400},
			{"GET", "/v1/leases?job=a%ffb&active=true", "", 400},
			{"GET", "/v1/leases?issuer=a%00", "", 400},
			{"GET", "/v1/leases?grant=deploy", "", 200},
			{"POST", "/v1/leases/revoke", `{"subject":"a\u0000b"}`, 400},
			{"POST", "/v1/leases/revoke", `{"lease_id":"lse_\u0000"}`, 400},
			{"POST", "/v1/leases/revoke", `{"subject":"nobody"}`, 200},
			{"DELETE", "/v1/admin/tokens/a%00b", "", 404},
			{"DELETE", "/v1/admin/tokens/a%ffb", "", 404},
			{"DELETE", "/v1/admin/tokens/nobody", "", 404},
			{"DELETE", "/v1/admin/sessions/a%00b", "", 404},
			{"DELETE", "/v1/admin/sessions/a%ffb", "", 404},
			{"DELETE", "/v1/admin/sessions/nobody", "", 404},
		}
		for _, tt := range tests {
			if st, b := h.adminCall(tt.method, tt.path, tt.body); st != tt.want {
				t.Errorf("%s %s %s: %d %s, want %d", tt.method, tt.path, tt.body, st, b, tt.want)
			}
		}
	})
}

// TestSecretNameRefused: a secret name the server refuses (NUL,
// non-UTF-8, over 128 characters, a slash) in GET or DELETE
// /v1/secrets/{name} answers 400 invalid_request (as PUT and POST
// …/rotate answer) or 404, never 500 server_error with an error log line.
func TestSecretNameRefused(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		h := newHarness(t, cfg)
		tests := []struct{ method, path string }{
			{"GET", "/v1/secrets/a%00b"},
			{"GET", "/v1/secrets/a%ffb"},
			{"GET", "/v1/secrets/" + strings.Repeat("a", 129)},
			{"GET", "/v1/secrets/sys%2Ftoken-hmac"},
			{"DELETE", "/v1/secrets/a%00b"},
			{"DELETE", "/v1/secrets/a%ffb"},
			{"DELETE", "/v1/secrets/" + strings.Repeat("a", 129)},
			{"DELETE", "/v1/secrets/.hidden"},
		}
		for _, tt := range tests {
			if st, b := h.adminCall(tt.method, tt.path, ""); st >= 500 {
				t.Errorf("%s %.40s: %d %s, want 400 invalid_request (or 404)", tt.method, tt.path, st, b)
			}
		}
	})
}

// The claims a lease keeps in indexed columns (sub, the job id, the repository or project, and the
// jti recorded once) are bounded. PostgreSQL cannot index a text of more
// than about 2.7 kB: an ID token whose sub was 3 kB got 503 there (the lease
// could not be stored, counted as the store being down) and 200 on SQLite.
// Now such a token is refused on both backends alike (400 invalid_grant
// naming the claim), its jti not spent.
func TestExchangeLongIndexedClaim(t *testing.T) {
	long := func() string {
		b := make([]byte, 2400)
		rand.Read(b)
		return base64.RawURLEncoding.EncodeToString(b) // 3200 characters that do not compress
	}
	onBothBackends(t, func(t *testing.T, cfg Config) {
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
