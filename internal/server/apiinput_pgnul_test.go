package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// TestAPIInputAdminFiltersNULOnPostgres: a lease filter, lease_id, admin
// token name or admin session id holding a NUL byte or invalid UTF-8 is
// the caller's mistake, answered alike on both backends: 400
// invalid_request for the filters, 404 for a token name or session id
// (none can have it). PostgreSQL cannot store or compare such text, and
// the server used to answer 500 server_error or 503
// temporarily_unavailable there for the caller's input.
func TestAPIInputAdminFiltersNULOnPostgres(t *testing.T) {
	for _, be := range []string{"sqlite", "postgres"} {
		t.Run(be, func(t *testing.T) {
			// admin_oidc, for DELETE /v1/admin/sessions/{id}.
			cfg := Config{AdminOIDC: devissuertest.AdminOIDC(devissuertest.Start(t), "http://127.0.0.1:1")}
			if be == "postgres" {
				cfg.Postgres = storetest.FreshSchema(t, storetest.PostgresDSN(t))
			}
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
				req, _ := http.NewRequest(tt.method, h.http.URL+tt.path, strings.NewReader(tt.body))
				req.Header.Set("Authorization", "Bearer "+h.admin)
				if tt.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("%s %s %s: %d %s, want %d", tt.method, tt.path, tt.body, resp.StatusCode, strings.TrimSpace(string(b)), tt.want)
				}
			}
		})
	}
}
