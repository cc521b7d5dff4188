package gateway

import (
	"net/http"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// Range and If-Range reach an upstream only when it says ranges: forward:
// a part of a response that reflects the credential would carry a piece
// of it no masker can recognise.
func TestRanges(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name    string
		option  string
		forward bool
	}{
		{"default", "", false},
		{"strip", "    ranges: strip\n", false},
		{"forward", "    ranges: forward\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api:
    url: ` + h.up.srv.URL + `/base
` + tt.option + `    credential: {secret: api-token}
grants:
  read:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/file"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
			p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(y)}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.pol.p.Store(p)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/file", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Range", "bytes=10-13")
			req.Header.Set("If-Range", `"v1"`)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := h.up.last().Header
			if has := got.Get("Range") != "" || got.Get("If-Range") != ""; has != tt.forward {
				t.Fatalf("upstream got Range %q If-Range %q; want forwarded %v", got.Get("Range"), got.Get("If-Range"), tt.forward)
			}
		})
	}
	if _, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(`
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api:
    url: https://api.example.com
    ranges: maybe
    credential: {secret: api-token}
`)}}, nil); err == nil {
		t.Fatal("ranges: maybe was accepted")
	}
}
