package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// Range, If-Range and Request-Range reach an upstream only when it says
// ranges: forward:
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
			useRangesPolicy(t, h, tt.option, "/file")
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/file", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Range", "bytes=10-13")
			req.Header.Set("If-Range", `"v1"`)
			req.Header.Set("Request-Range", "bytes=10-13") // Apache httpd's older name
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := h.up.last().Header
			for _, n := range []string{"Range", "If-Range", "Request-Range"} {
				if has := got.Get(n) != ""; has != tt.forward {
					t.Errorf("upstream got %s %q; want forwarded %v", n, got.Get(n), tt.forward)
				}
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

// An upstream that was sent no range and still answers with a part (206,
// or any Content-Range) is refused with 502 and the refusal audited: the
// part might be a piece of a reflected credential too short to mask. With
// ranges: forward, its parts pass.
func TestUnaskedRangeRefused(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		option string
		status int    // the upstream's
		crange bool   // it sends Content-Range
		want   int    // the client's
		reason string // the audited reason ("" none)
	}{
		{"206", "", 206, true, 502, "range: not asked for"},
		{"206 without Content-Range", "", 206, false, 502, "range: not asked for"},
		{"200 with Content-Range", "", 200, true, 502, "range: not asked for"},
		{"416", "    ranges: strip\n", 416, true, 502, "range: not asked for"},
		{"whole", "", 200, false, 200, ""},
		{"206, ranges forwarded", "    ranges: forward\n", 206, true, 206, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useRangesPolicy(t, h, tt.option, "/repos/acme/app/**")
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
				cred := r.Header.Get("Authorization") // the credential, reflected
				part := cred[13:19]
				if tt.crange {
					w.Header().Set("Content-Range", fmt.Sprintf("bytes 13-18/%d", len(cred)))
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(part)))
				w.WriteHeader(tt.status)
				w.Write([]byte(part))
			})
			path := "/gw/api/repos/acme/app/hostile/" + strings.ReplaceAll(tt.name, " ", "-")
			resp, body, _ := rawGet(t, addr, path, tok)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.want)
			}
			if tt.reason == "" {
				return
			}
			if strings.Contains(string(body), hostileCred[13:19]) {
				t.Fatalf("refusal carries the part: %q", body)
			}
			found := false
			for deadline := time.Now().Add(30 * time.Second); !found && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				for _, e := range h.entries() {
					found = found || e.Path == strings.TrimPrefix(path, "/gw/api") && e.Status == 502 && e.Reason == tt.reason
				}
			}
			if !found {
				t.Fatalf("no audit entry with status 502 and reason %q", tt.reason)
			}
		})
	}
}

// useRangesPolicy puts in force a policy of one upstream with option (its
// ranges setting, a YAML line or "") and one grant "read" of GET on path.
func useRangesPolicy(t *testing.T, h *harness, option, path string) {
	t.Helper()
	y := `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api:
    url: ` + h.up.srv.URL + `/base
` + option + `    credential: {secret: api-token}
grants:
  read:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["` + path + `"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
}
