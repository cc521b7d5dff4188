package server

import (
	"testing"
)

// A leaked admin token, reported to /v1/leaks or presented to /v1/revoke,
// is revoked like a job token: holding a token is enough to kill it.
func TestLeakedAdminTokenRevoked(t *testing.T) {
	h := newHarness(t, Config{})
	tests := []struct {
		name, path, ctype string
		body              func(tok string) string
	}{
		{"leak report text", "/v1/leaks", "text/plain", func(tok string) string { return "export MAYFLY_TOKEN=" + tok + "\n" }},
		{"leak report github json", "/v1/leaks", "application/json", func(tok string) string {
			return `[{"token":"` + tok + `","type":"mayfly_admin","url":"https://github.com/acme/app/blob/x","source":"content"}]`
		}},
		{"rfc 7009 revoke", "/v1/revoke", form, func(tok string) string { return "token=" + tok }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			name := "ops" + string(rune('a'+i))
			tok := h.do("POST", "/v1/admin/tokens", h.admin, "application/json", `{"name":"`+name+`","role":"operator"}`, 200)["token"].(string)
			h.do("GET", "/v1/leases", tok, "", "", 200)
			out := h.do("POST", tt.path, "", tt.ctype, tt.body(tok), 200)
			if tt.path == "/v1/leaks" {
				if out["unknown"].(float64) != 0 {
					t.Fatalf("leaked admin token counted unknown: %v", out)
				}
				ra, _ := out["revoked_admin_tokens"].([]any)
				if len(ra) != 1 || ra[0].(map[string]any)["hint"] != tok[:9]+"…" {
					t.Fatalf("leak response = %v", out)
				}
			}
			h.do("GET", "/v1/leases", tok, "", "", 401)
		})
	}
	// The reporting admin's own token still works.
	h.do("GET", "/v1/leases", h.admin, "", "", 200)
}
