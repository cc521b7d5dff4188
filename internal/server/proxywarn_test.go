package server

import (
	"net/http"
	"strings"
	"testing"
)

// A reverse proxy on this host that trusted_proxies does not list makes
// every caller 127.0.0.1: admin_cidrs' default lets them all reach the
// control plane and they share one rate limit. The first request that
// shows it (X-Forwarded-For or Forwarded from a loopback peer that is not
// trusted) is logged, once.
func TestUnlistedLocalProxyIsLogged(t *testing.T) {
	const warning = "a proxy on this host that trusted_proxies does not list"
	tests := []struct {
		name    string
		trusted []string
		header  string
		want    int
	}{
		{"unlisted proxy, X-Forwarded-For", nil, "X-Forwarded-For", 1},
		{"unlisted proxy, Forwarded", nil, "Forwarded", 1},
		{"listed proxy", []string{"127.0.0.1"}, "X-Forwarded-For", 0},
		{"no proxy header", nil, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{TrustedProxies: tt.trusted})
			for range 3 {
				req, _ := http.NewRequest("GET", h.http.URL+"/healthz", nil)
				if tt.header != "" {
					req.Header.Set(tt.header, "for=203.0.113.9")
					if tt.header == "X-Forwarded-For" {
						req.Header.Set(tt.header, "203.0.113.9")
					}
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			logs := h.logs.String()
			if got := strings.Count(logs, warning); got != tt.want {
				t.Fatalf("warned %d times, want %d; logs:\n%s", got, tt.want, logs)
			}
		})
	}
}
