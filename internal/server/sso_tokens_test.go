package server

import (
	"encoding/json"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// An admin token a person made while the provider mapped them to a role
// works no longer than their role does: when they sign in again and the
// provider maps them to a weaker role (or none), the tokens they made
// (directly, or with a token they made) of a stronger role are revoked,
// audited, as their sessions are. Tokens of the role they keep, and other
// people's, go on.
func TestSSOLoweredRoleRevokesTokensMade(t *testing.T) {
	for _, tc := range []struct {
		name string
		now  devissuer.User
		live map[string]bool // token name: still works after the sign-in
	}{
		{"still admin", devissuertest.User("ann@example.com", devissuertest.GroupAdmins),
			map[string]bool{"ann-admin": true, "ann-admin-child": true, "ann-operator": true, "ann-auditor": true, "bob-admin": true}},
		{"now operator", devissuertest.User("ann@example.com", devissuertest.GroupOperators),
			map[string]bool{"ann-admin": false, "ann-admin-child": false, "ann-operator": true, "ann-auditor": true, "bob-admin": true}},
		{"removed from every group", devissuertest.User("ann@example.com"),
			map[string]bool{"ann-admin": false, "ann-admin-child": false, "ann-operator": false, "ann-auditor": false, "bob-admin": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSSOHarness(t, nil)
			toks := map[string]string{}
			create := func(hdr map[string]string, name, role string) {
				t.Helper()
				st, body := h.call(nil, "POST", "/v1/admin/tokens", `{"name":"`+name+`","role":"`+role+`"}`, hdr)
				if st != 200 {
					t.Fatalf("create %s: %d %s", name, st, body)
				}
				var out struct{ Token string }
				if err := json.Unmarshal([]byte(body), &out); err != nil || out.Token == "" {
					t.Fatalf("create %s: %s", name, body)
				}
				toks[name] = out.Token
			}
			h.iss.SetUser(devissuertest.User("bob@example.com", devissuertest.GroupAdmins))
			bob := devissuertest.Browser(t)
			bobCSRF := devissuertest.SignIn(t, bob, h.url)
			h.iss.SetUser(devissuertest.User("ann@example.com", devissuertest.GroupAdmins))
			ann := devissuertest.Browser(t)
			annCSRF := devissuertest.SignIn(t, ann, h.url)

			for _, c := range []struct {
				browser    string
				name, role string
			}{{"ann", "ann-admin", "admin"}, {"ann", "ann-operator", "operator"}, {"ann", "ann-auditor", "auditor"}, {"bob", "bob-admin", "admin"}} {
				b, csrf := ann, annCSRF
				if c.browser == "bob" {
					b, csrf = bob, bobCSRF
				}
				st, body := h.call(b, "POST", "/v1/admin/tokens", `{"name":"`+c.name+`","role":"`+c.role+`"}`, map[string]string{"X-CSRF-Token": csrf})
				if st != 200 {
					t.Fatalf("create %s: %d %s", c.name, st, body)
				}
				var out struct{ Token string }
				if err := json.Unmarshal([]byte(body), &out); err != nil || out.Token == "" {
					t.Fatalf("create %s: %s", c.name, body)
				}
				toks[c.name] = out.Token
			}
			// A token made with a token ann made is hers too.
			create(map[string]string{"Authorization": "Bearer " + toks["ann-admin"]}, "ann-admin-child", "admin")

			h.iss.SetUser(tc.now)
			second := devissuertest.Browser(t)
			step(t, second, h.approve(second, h.loginTo(second)))

			revoked := 0
			for name, live := range tc.live {
				st, body := h.call(nil, "GET", "/v1/auth/whoami", "", map[string]string{"Authorization": "Bearer " + toks[name]})
				if (st == 200) != live {
					t.Errorf("token %s after the provider said %v: %d %s, want live %v", name, tc.now["groups"], st, body, live)
				}
				if !live {
					revoked++
				}
			}
			n := 0
			for _, e := range h.auditEntries("admin.token.delete") {
				if e["reason"] == "creator's role lowered at sign-in" {
					n++
				}
			}
			if n != revoked {
				t.Errorf("%d admin.token.delete entries for a lowered creator, want %d", n, revoked)
			}
		})
	}
}
