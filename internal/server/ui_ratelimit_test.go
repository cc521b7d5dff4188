package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
)

// A refused session on the control plane is a durable audit entry, so
// the API bounds how fast one address can cause them (admin_burst). The
// /ui/ pages (and /ui/logout) record the same refusal with no bound.
// A refused session is a durable audit entry wherever it is refused: the
// /ui/ pages share the API's per-address bound (admin_rate, admin_burst),
// so one address cannot grow the log at will with a bogus cookie.
func TestUIRefusalsRateLimited(t *testing.T) {
	h := newSSOHarness(t, func(c *Config) { c.Limits.AdminBurst = 5; c.Limits.AdminRate = 0.01 })
	bogus := map[string]string{"Cookie": "mayfly_session=mfys_" + fmt.Sprintf("%043d", 0)}
	count := func(path string) (limited int) {
		for i := 0; i < 20; i++ {
			st, _ := h.call(nil, "GET", path, "", bogus)
			if st == http.StatusTooManyRequests {
				limited++
			}
		}
		return limited
	}
	before := len(h.auditEntries("admin.denied"))
	if n := count("/v1/leases"); n == 0 {
		t.Fatal("the API did not rate-limit refused sessions at all")
	}
	mid := len(h.auditEntries("admin.denied"))
	n := count("/ui/leases")
	after := len(h.auditEntries("admin.denied"))
	t.Logf("/v1/leases: %d denials audited; /ui/leases: %d denials audited, %d answered 429", mid-before, after-mid, n)
	if after-mid > 5 {
		t.Fatalf("/ui/leases: %d refused-session entries written for one address past admin_burst=5 (0 answered 429)", after-mid)
	}
}

// The same for POST /v1/auth/device/token: every refused poll is an
// admin.signin entry (and a call to the provider), without the bound.
// The same for refused device sign-in polls.
func TestDeviceRefusalsRateLimited(t *testing.T) {
	h := newSSOHarness(t, func(c *Config) { c.Limits.AdminBurst = 5; c.Limits.AdminRate = 0.01 })
	before := len(h.auditEntries("admin.signin"))
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		st, _ := h.call(nil, "POST", "/v1/auth/device/token", fmt.Sprintf(`{"device_code":"bogus-%d"}`, i), nil)
		codes[st]++
	}
	after := len(h.auditEntries("admin.signin"))
	t.Logf("statuses %v; %d refused sign-ins audited", codes, after-before)
	if after-before > 5 {
		t.Fatalf("%d refused device polls audited from one address past admin_burst=5", after-before)
	}
}

// TestDoSLoginStateUnbounded: starting a sign-in is unauthenticated and
// costs the server something each time: GET /ui/login stores a sign-in
// state row, POST /v1/auth/device asks the identity provider for a device
// code. Nothing bounded how many one address could start (rows were kept
// a day past their expiry): now each address may start admin_burst at once
// and admin_rate a second, then gets 429 and nothing is stored or asked.
func TestDoSLoginStateUnbounded(t *testing.T) {
	const burst, n = 5, 40
	tests := []struct {
		name, method, path string
		rows               bool // each start stores a sign-in state
	}{
		{"browser sign-in", "GET", "/ui/login", true},
		{"device sign-in", "POST", "/v1/auth/device", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newSSOHarness(t, func(c *Config) { c.Limits.AdminRate, c.Limits.AdminBurst = 0.01, burst })
			c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			limited := 0
			for range n {
				req, _ := http.NewRequest(tt.method, h.url+tt.path, nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusTooManyRequests:
					limited++
				case http.StatusSeeOther, http.StatusOK:
				default:
					t.Fatalf("%s %s: %d", tt.method, tt.path, resp.StatusCode)
				}
			}
			if limited != n-burst {
				t.Errorf("%d of %d sign-ins started from one address answered 429, want %d (admin_burst %d)", limited, n, n-burst, burst)
			}
			if !tt.rows {
				return
			}
			var rows int
			if err := h.srv.store.SQL().QueryRowContext(context.Background(), `SELECT count(*) FROM admin_logins`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows > burst {
				t.Errorf("one address with admin_burst %d made %d stored sign-in states", burst, rows)
			}
		})
	}
}

// A device poll still pending is no refusal, but each one is a call to the
// provider with the server's client credentials: one address polling a
// live device code as fast as it can must not make the server flood the
// provider (which would throttle or block the client for everyone). Polls
// share the sign-in bound (admin_rate, admin_burst), and one past it gets
// 429 without the provider being asked.
func TestDevicePollsRateLimited(t *testing.T) {
	const burst, n = 5, 20
	h := newSSOHarness(t, func(c *Config) { c.Limits.AdminRate, c.Limits.AdminBurst = 0.01, burst })
	st, body := h.call(nil, "POST", "/v1/auth/device", "", nil)
	if st != http.StatusOK {
		t.Fatalf("device start: %d %s", st, body)
	}
	var start struct {
		DeviceCode string `json:"device_code"`
	}
	if err := json.Unmarshal([]byte(body), &start); err != nil || start.DeviceCode == "" {
		t.Fatalf("device start: %s", body)
	}
	codes := map[int]int{}
	for range n {
		st, _ := h.call(nil, "POST", "/v1/auth/device/token", fmt.Sprintf(`{"device_code":%q}`, start.DeviceCode), nil)
		codes[st]++
	}
	// The start took one of the burst.
	if codes[http.StatusTooManyRequests] != n-(burst-1) {
		t.Fatalf("statuses %v: want %d polls answered 429 past admin_burst %d", codes, n-(burst-1), burst)
	}
}
