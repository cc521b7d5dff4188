package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/console"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// The console is mounted behind the SSO session: signed out it sends the
// browser to sign in; signed in it serves every page with the strict CSP;
// a form without the session's CSRF token is refused; roles are kept.
func TestConsoleBehindSSO(t *testing.T) {
	h := newSSOHarness(t, nil)
	anon := devissuertest.Browser(t)
	anon.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("GET", h.url+"/ui/audit", nil)
	resp, err := anon.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	h.iss.SetUser(devissuertest.User("audit@example.com", devissuertest.GroupAuditors))
	b := devissuertest.Browser(t)
	csrf := devissuertest.SignIn(t, b, h.url)
	for _, p := range []string{"/ui/leases", "/ui/audit", "/ui/audit/0", "/ui/leaks", "/ui/refused", "/ui/policy", "/ui/secrets", "/ui/health"} {
		resp, err := b.Get(h.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != console.CSP {
			t.Errorf("%s: %d, CSP %q", p, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
	}
	post := func(form url.Values) (int, string) {
		req, _ := http.NewRequest("POST", h.url+"/ui/leases/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if st, body := post(url.Values{"grant": {"x"}}); st != 403 || !strings.Contains(body, "CSRF") {
		t.Fatalf("no CSRF: %d %s", st, body)
	}
	if st, body := post(url.Values{"grant": {"x"}, "csrf": {csrf}}); st != 403 || !strings.Contains(body, "operator role") {
		t.Fatalf("auditor revoking: %d %s", st, body)
	}
	// The session's CSRF token is in the page's forms, never its cookie.
	resp, err = b.Get(h.url + "/ui/leases")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(raw)
	u, _ := url.Parse(h.url)
	for _, c := range b.Jar.Cookies(u) {
		if len(c.Value) > 8 && strings.Contains(page, c.Value) {
			t.Fatalf("cookie %s rendered in the page", c.Name)
		}
	}
	if !strings.Contains(page, `name="csrf" value="`+csrf+`"`) {
		t.Fatal("sign-out form lacks the CSRF token")
	}
}
