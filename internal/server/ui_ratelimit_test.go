package server

import (
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
