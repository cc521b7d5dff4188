package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// TestAPIInputSecretNameClientErrorNot500: a secret name the server refuses
// (NUL, non-UTF-8, over 128 characters, a slash) in GET or DELETE
// /v1/secrets/{name} is the caller's mistake: 400 invalid_request (as PUT
// and POST …/rotate answer) or 404, never 500 server_error with an error
// log line.
func TestAPIInputSecretNameClientErrorNot500(t *testing.T) {
	for _, be := range []string{"sqlite", "postgres"} {
		t.Run(be, func(t *testing.T) {
			cfg := Config{}
			if be == "postgres" {
				cfg.Postgres = storetest.FreshSchema(t, storetest.PostgresDSN(t))
			}
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
				req, _ := http.NewRequest(tt.method, h.http.URL+tt.path, nil)
				req.Header.Set("Authorization", "Bearer "+h.admin)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 {
					t.Errorf("%s %.40s: %d %s, want 400 invalid_request (or 404)", tt.method, tt.path, resp.StatusCode, strings.TrimSpace(string(b)))
				}
			}
		})
	}
}
