package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// TestConsolePlansLargePolicy: a policy the API takes (up to 1 MiB) can be
// planned and applied from the console too. The /ui/ session check read
// the form under the API's 64 KiB body limit, so a larger form lost its
// CSRF field and was refused (and audited) as a cross-site forgery.
func TestConsolePlansLargePolicy(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("admin@example.com", devissuertest.GroupAdmins))
	b := devissuertest.Browser(t)
	csrf := devissuertest.SignIn(t, b, h.url)
	pad := func(n int) string {
		var s strings.Builder
		s.WriteString("issuers: {}\nupstreams: {}\ngrants: {}\n")
		for s.Len() < n {
			s.WriteString("# a comment line: describing the grants below, with punctuation & such\n")
		}
		return s.String()
	}
	for _, tc := range []struct {
		name   string
		size   int
		status int
		want   string
	}{
		{"small", 1 << 10, 200, `id="plan-summary"`},
		{"over 64 KiB encoded", 100 << 10, 200, `id="plan-summary"`},
		{"near 1 MiB", 1<<20 - 1<<10, 200, `id="plan-summary"`},
		{"over 1 MiB", 1<<20 + 1<<10, 400, "larger than 1 MiB"},
		{"over the form limit", 4 << 20, 413, "the form is larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{"csrf": {csrf}, "policy": {pad(tc.size)}}
			req, _ := http.NewRequest("POST", h.url+"/ui/policy/plan", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := b.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Fatalf("%d bytes of policy (%d encoded): %d, want %d with %q:\n%.600s", tc.size, len(form.Encode()), resp.StatusCode, tc.status, tc.want, body)
			}
		})
	}
}

// TestConsoleRoleDenialAudited: a console action refused for the
// session's role is recorded as the API records one (admin.denied, "role
// too weak", who, method and path) before it is answered; the console
// answered 403 and recorded nothing, so a session probing what it may do
// left no trace but through the API.
func TestConsoleRoleDenialAudited(t *testing.T) {
	h := newSSOHarness(t, nil)
	for _, tc := range []struct {
		email, group, path string
		form               url.Values
		role               string
	}{
		{"audit@example.com", devissuertest.GroupAuditors, "/ui/leases/revoke", url.Values{"grant": {"x"}, "confirm": {"yes"}}, "auditor"},
		{"audit@example.com", devissuertest.GroupAuditors, "/ui/policy/plan", url.Values{"policy": {"grants: {}\n"}}, "auditor"},
		{"ops@example.com", devissuertest.GroupOperators, "/ui/policy/apply", url.Values{"policy": {"grants: {}\n"}, "base": {"1"}}, "operator"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			h.iss.SetUser(devissuertest.User(tc.email, tc.group))
			b := devissuertest.Browser(t)
			tc.form.Set("csrf", devissuertest.SignIn(t, b, h.url))
			before := len(h.auditEntries("admin.denied"))
			req, _ := http.NewRequest("POST", h.url+tc.path, strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := b.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s as %s: %d, want 403", tc.path, tc.role, resp.StatusCode)
			}
			denied := h.auditEntries("admin.denied")
			if len(denied) != before+1 {
				t.Fatalf("%d admin.denied entries after the refusal, want %d", len(denied), before+1)
			}
			e := denied[len(denied)-1]
			if e["reason"] != "role too weak" || e["admin"] != "oidc:"+tc.email || e["role"] != tc.role ||
				e["method"] != "POST" || e["path"] != tc.path || e["status"] != float64(403) {
				t.Fatalf("entry %v", e)
			}
		})
	}
}
