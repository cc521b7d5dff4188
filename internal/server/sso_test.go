package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/sso"
)

// ssoHarness is a server with admin_oidc at a dev issuer.
type ssoHarness struct {
	t     *testing.T
	url   string
	iss   *devissuer.Issuer
	srv   *Server
	admin string
	dir   string
}

func newSSOHarness(t *testing.T, mod func(*Config)) *ssoHarness {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	res, err := Init(ctx, InitOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	iss := devissuertest.Start(t)
	ts := httptest.NewUnstartedServer(nil)
	h := &ssoHarness{t: t, url: "http://" + ts.Listener.Addr().String(), iss: iss, admin: res.AdminToken, dir: dir}
	cfg := Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0", AdminOIDC: devissuertest.AdminOIDC(iss, h.url)}
	if mod != nil {
		mod(&cfg)
	}
	h.srv, err = New(ctx, cfg, NewLogger(io.Discard, "json", "info"))
	if err != nil {
		ts.Listener.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { h.srv.Close(context.Background()) })
	ts.Config.Handler = h.srv.Handler()
	ts.Start()
	t.Cleanup(ts.Close)
	return h
}

// call makes a request with browser's cookies and the given headers.
func (h *ssoHarness) call(browser *http.Client, method, path, body string, hdr map[string]string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if browser == nil {
		browser = http.DefaultClient
	}
	resp, err := browser.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// auditEntries returns the audit log's entries of type typ.
func (h *ssoHarness) auditEntries(typ string) []map[string]any {
	h.t.Helper()
	_, body := h.call(nil, "GET", "/v1/audit/entries?start=0&limit=1000", "", map[string]string{"Authorization": "Bearer " + h.admin})
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// With claim: email, an email the provider has not verified names nobody:
// the sign-in is refused, and a session of a verified user is named after
// its email, an unverified one's after its sub.
func TestSSOUnverifiedEmail(t *testing.T) {
	h := newSSOHarness(t, func(c *Config) {
		c.AdminOIDC.Claim = "email"
		c.AdminOIDC.Roles = map[string][]string{"admin": {"alice@example.com"}}
	})
	for _, tc := range []struct {
		name     string
		verified any
		want     int
	}{
		{"unverified", false, 401},
		{"no email_verified", nil, 401},
		{"verified", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := devissuer.User{"sub": "mallory", "email": "alice@example.com"}
			if tc.verified != nil {
				u["email_verified"] = tc.verified
			}
			h.iss.SetUser(u)
			b := devissuertest.Browser(t)
			resp, err := b.Get(h.url + "/ui/login")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			st, body := h.call(b, "GET", "/v1/auth/whoami", "", nil)
			if st != tc.want {
				t.Fatalf("whoami after sign-in: %d %s, want %d", st, strings.TrimSpace(body), tc.want)
			}
			if st == 200 && !strings.Contains(body, `"name":"oidc:alice@example.com"`) {
				t.Fatalf("whoami: %s", body)
			}
		})
	}
}

func TestSSOBrowserSession(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("ops@example.com", devissuertest.GroupOperators))
	b := devissuertest.Browser(t)
	csrf := devissuertest.SignIn(t, b, h.url)

	if st, body := h.call(nil, "GET", "/v1/auth/config", "", nil); st != 200 || body != `{"sign_in":true,"device":true}`+"\n" {
		t.Fatalf("auth config: %d %q", st, body)
	}
	// The cookie is a caller of the admin API with the mapped role.
	if st, body := h.call(b, "GET", "/v1/auth/whoami", "", nil); st != 200 || !strings.Contains(body, `"role":"operator"`) || !strings.Contains(body, `"name":"oidc:ops@example.com"`) {
		t.Fatalf("whoami: %d %s", st, body)
	}
	if st, body := h.call(b, "GET", "/v1/leases", "", nil); st != 200 {
		t.Fatalf("leases: %d %s", st, body)
	}
	// Too weak for admin endpoints.
	if st, _ := h.call(b, "GET", "/v1/admin/tokens", "", nil); st != 403 {
		t.Fatalf("admin tokens as operator: %d", st)
	}
	revoke := `{"grant":"none"}`
	// A state-changing request needs the CSRF header...
	if st, body := h.call(b, "POST", "/v1/leases/revoke", revoke, nil); st != 403 || !strings.Contains(body, "CSRF") {
		t.Fatalf("no CSRF: %d %s", st, body)
	}
	// ...this session's...
	other := devissuertest.Browser(t)
	otherCSRF := devissuertest.SignIn(t, other, h.url)
	u, _ := url.Parse(h.url)
	values := []string{csrf, otherCSRF}
	for _, jar := range []*http.Client{b, other} {
		for _, c := range jar.Jar.Cookies(u) {
			values = append(values, c.Value)
		}
	}
	if len(values) != 4 {
		t.Fatalf("%d values, want 2 session cookies and 2 CSRF tokens", len(values))
	}
	if st, _ := h.call(b, "POST", "/v1/leases/revoke", revoke, map[string]string{"X-CSRF-Token": otherCSRF}); st != 403 {
		t.Fatalf("another session's CSRF: %d", st)
	}
	// ...from this origin.
	if st, _ := h.call(b, "POST", "/v1/leases/revoke", revoke, map[string]string{"X-CSRF-Token": csrf, "Origin": "https://evil.example"}); st != 403 {
		t.Fatalf("cross-origin: %d", st)
	}
	if st, _ := h.call(b, "POST", "/v1/leases/revoke", revoke, map[string]string{"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}); st != 403 {
		t.Fatalf("cross-site: %d", st)
	}
	if st, body := h.call(b, "POST", "/v1/leases/revoke", revoke, map[string]string{"X-CSRF-Token": csrf, "Origin": h.url, "Sec-Fetch-Site": "same-origin"}); st != 200 {
		t.Fatalf("with CSRF: %d %s", st, body)
	}
	// An admin lists sessions and revokes the other one.
	var list struct {
		Sessions []struct{ ID, Name string } `json:"sessions"`
	}
	_, body := h.call(nil, "GET", "/v1/admin/sessions", "", map[string]string{"Authorization": "Bearer " + h.admin})
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Sessions) != 2 {
		t.Fatalf("sessions: %s", body)
	}
	if strings.Contains(body, "mfys_") {
		t.Fatal("a session value in the session list")
	}
	var otherID string
	_, wb := h.call(other, "GET", "/v1/auth/whoami", "", nil)
	var who struct{ Session string }
	json.Unmarshal([]byte(wb), &who)
	otherID = who.Session
	if st, body := h.call(nil, "DELETE", "/v1/admin/sessions/"+otherID, "", map[string]string{"Authorization": "Bearer " + h.admin}); st != 200 {
		t.Fatalf("revoke session: %d %s", st, body)
	}
	if st, _ := h.call(other, "GET", "/v1/leases", "", nil); st != 401 {
		t.Fatalf("revoked session: %d", st)
	}
	// Sign-out: with the CSRF form field, then the cookie works no more.
	form := url.Values{"csrf": {csrf}}.Encode()
	if st, body := h.call(b, "POST", "/ui/logout", form, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); st != 200 || !strings.Contains(body, "signed out") {
		t.Fatalf("logout: %d %s", st, body)
	}
	if st, _ := h.call(b, "GET", "/v1/leases", "", nil); st != 401 && st != 403 {
		t.Fatalf("after logout: %d", st)
	}
	// No file of the data dir (the database and its WAL) holds a session
	// value or a CSRF token.
	filepath.WalkDir(h.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, v := range values {
			if v != "" && strings.Contains(string(data), v) {
				t.Errorf("%s holds a session value or CSRF token", p)
			}
		}
		return nil
	})
	if n := len(h.auditEntries("admin.signin")); n != 2 {
		t.Fatalf("%d admin.signin entries, want 2", n)
	}
	if n := len(h.auditEntries("admin.signout")); n != 1 {
		t.Fatalf("%d admin.signout entries, want 1", n)
	}
	if n := len(h.auditEntries("admin.session.revoke")); n != 1 {
		t.Fatalf("%d admin.session.revoke entries, want 1", n)
	}
}

// step makes one request with browser's cookies without following a
// redirect, and returns the status, the Location and the body.
func step(t *testing.T, browser *http.Client, u string) (int, string, string) {
	t.Helper()
	c := &http.Client{Jar: browser.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// loginTo starts a sign-in in browser and returns the provider's
// authorization URL.
func (h *ssoHarness) loginTo(browser *http.Client) string {
	h.t.Helper()
	st, loc, body := step(h.t, browser, h.url+"/ui/login")
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, h.iss.URL()) {
		h.t.Fatalf("/ui/login: %d %s %s", st, loc, body)
	}
	return loc
}

// approve follows an authorization URL at the dev issuer and returns the
// callback URL it sends the browser to.
func (h *ssoHarness) approve(browser *http.Client, authURL string) string {
	h.t.Helper()
	st, loc, body := step(h.t, browser, authURL)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, h.url+"/ui/callback?") {
		h.t.Fatalf("authorize: %d %s %s", st, loc, body)
	}
	return loc
}

func withQuery(t *testing.T, u string, set map[string]string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Query()
	for k, v := range set {
		q.Set(k, v)
	}
	p.RawQuery = q.Encode()
	return p.String()
}

// TestSSORefusals: each bad sign-in or session is refused clearly (a page
// or error saying why, no crash), recorded with its reason, and no code,
// state or session value shows in a page, an entry or the log.
func TestSSORefusals(t *testing.T) {
	h := newSSOHarness(t, nil)
	var secrets []string // values that must never be shown or recorded
	keep := func(u string) string {
		if p, err := url.Parse(u); err == nil {
			for _, k := range []string{"code", "state"} {
				if v := p.Query().Get(k); v != "" {
					secrets = append(secrets, v)
				}
			}
		}
		return u
	}
	var pages []string
	cases := []struct {
		name   string
		run    func(t *testing.T) (int, string)
		status int
		reason string
	}{
		{"forged state", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			h.loginTo(b)
			st, _, body := step(t, b, h.url+"/ui/callback?state=forgedforgedforgedforged&code=abc")
			return st, body
		}, 400, "unknown, used or expired state"},
		{"malformed callback", func(t *testing.T) (int, string) {
			st, _, body := step(t, devissuertest.Browser(t), h.url+"/ui/callback?state=a&state=b&code=x")
			return st, body
		}, 400, "unknown, used or expired state"},
		{"replayed code and state", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			cb := keep(h.approve(b, h.loginTo(b)))
			if st, _, body := step(t, b, cb); st != 200 {
				t.Fatalf("first use: %d %s", st, body)
			}
			st, _, body := step(t, b, cb)
			return st, body
		}, 400, "unknown, used or expired state"},
		{"state from another browser", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			cb := keep(h.approve(b, h.loginTo(b)))
			st, _, body := step(t, devissuertest.Browser(t), cb)
			return st, body
		}, 400, "state from another browser"},
		{"forged code", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			cb := keep(h.approve(b, h.loginTo(b)))
			st, _, body := step(t, b, withQuery(t, cb, map[string]string{"code": "0123456789abcdef"}))
			return st, body
		}, 400, "authorization code refused by the identity provider"},
		{"code from another sign-in", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			cbA := keep(h.approve(b, h.loginTo(b)))
			cbB := keep(h.approve(b, h.loginTo(b)))
			pa, _ := url.Parse(cbA)
			// B's state with A's code: the PKCE verifier derived from B's
			// state does not match A's challenge.
			st, _, body := step(t, b, withQuery(t, cbB, map[string]string{"code": pa.Query().Get("code")}))
			return st, body
		}, 400, "authorization code refused by the identity provider"},
		{"wrong nonce", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			au := withQuery(t, h.loginTo(b), map[string]string{"nonce": "tampered-nonce"})
			st, _, body := step(t, b, keep(h.approve(b, au)))
			return st, body
		}, 400, "nonce mismatch"},
		{"provider error", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			cb := keep(h.approve(b, h.loginTo(b)))
			p, _ := url.Parse(cb)
			st, _, body := step(t, b, h.url+"/ui/callback?state="+p.Query().Get("state")+"&error=access_denied")
			return st, body
		}, 403, "identity provider returned an error"},
		{"unmapped user", func(t *testing.T) (int, string) {
			h.iss.SetUser(devissuertest.User("stranger@example.com", "other-group"))
			defer h.iss.SetUser(devissuer.DefaultUser())
			b := devissuertest.Browser(t)
			st, _, body := step(t, b, keep(h.approve(b, h.loginTo(b))))
			if !strings.Contains(body, "stranger@example.com") {
				t.Errorf("the page does not say who is unmapped: %s", body)
			}
			return st, body
		}, 403, "user maps to no role"},
		{"cookie from another server", func(t *testing.T) (int, string) {
			v := "mfys_" + strings.Repeat("A", 43)
			return h.call(nil, "GET", "/v1/leases", "", map[string]string{"Cookie": "mayfly_session=" + v})
		}, 401, "unknown or revoked session"},
		{"CSRF missing", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			devissuertest.SignIn(t, b, h.url)
			return h.call(b, "POST", "/v1/leases/revoke", `{"grant":"x"}`, nil)
		}, 403, "CSRF token missing"},
		{"CSRF from another session", func(t *testing.T) (int, string) {
			b, other := devissuertest.Browser(t), devissuertest.Browser(t)
			devissuertest.SignIn(t, b, h.url)
			csrf := devissuertest.SignIn(t, other, h.url)
			return h.call(b, "POST", "/v1/leases/revoke", `{"grant":"x"}`, map[string]string{"X-CSRF-Token": csrf})
		}, 403, "CSRF token from another session"},
		{"cross-site console post", func(t *testing.T) (int, string) {
			b := devissuertest.Browser(t)
			csrf := devissuertest.SignIn(t, b, h.url)
			return h.call(b, "POST", "/ui/anything", "csrf="+csrf, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"})
		}, 403, "cross-site request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(h.auditEntries("admin.signin")) + len(h.auditEntries("admin.denied"))
			st, body := c.run(t)
			pages = append(pages, body)
			if st != c.status {
				t.Fatalf("status %d, want %d: %s", st, c.status, body)
			}
			var found bool
			for _, e := range append(h.auditEntries("admin.signin"), h.auditEntries("admin.denied")...) {
				if e["reason"] == c.reason {
					found = true
				}
			}
			if !found {
				t.Fatalf("no entry with reason %q", c.reason)
			}
			if after := len(h.auditEntries("admin.signin")) + len(h.auditEntries("admin.denied")); after <= before {
				t.Fatalf("nothing recorded")
			}
		})
	}
	_, all := h.call(nil, "GET", "/v1/audit/entries?start=0&limit=1000", "", map[string]string{"Authorization": "Bearer " + h.admin})
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a code or state is in the audit log")
		}
		for _, p := range pages {
			if strings.Contains(p, s) {
				t.Errorf("a code or state is in a page")
			}
		}
	}
	if strings.Contains(all, "mfys_") {
		t.Error("a session value is in the audit log")
	}
}

// An expired session is refused saying so (401, audited "session
// expired"), on the API and on /ui/ (which also clears the cookie).
func TestSSOSessionExpires(t *testing.T) {
	h := newSSOHarness(t, func(c *Config) { c.AdminSessionTTL = time.Second })
	b := devissuertest.Browser(t)
	devissuertest.SignIn(t, b, h.url)
	u, _ := url.Parse(h.url)
	var value string
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == "mayfly_session" {
			value = c.Value
		}
	}
	if value == "" {
		t.Fatal("no session cookie")
	}
	// The session lasts a second: wait it out (no timing is asserted).
	time.Sleep(1100 * time.Millisecond)
	st, body := h.call(nil, "GET", "/v1/leases", "", map[string]string{"Cookie": "mayfly_session=" + value})
	if st != 401 || !strings.Contains(body, "expired") {
		t.Fatalf("expired session on the API: %d %s", st, body)
	}
	st, _, page := step(t, devissuertest.Browser(t), h.url+"/ui/")
	if st != http.StatusSeeOther {
		t.Fatalf("no cookie on /ui/: %d %s", st, page)
	}
	req, _ := http.NewRequest("GET", h.url+"/ui/", nil)
	req.Header.Set("Cookie", "mayfly_session="+value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), ";"), "Max-Age=0") {
		t.Fatalf("expired session on /ui/: %d %v", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
	n := 0
	for _, e := range h.auditEntries("admin.denied") {
		if e["reason"] == "session expired" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d 'session expired' entries, want 2", n)
	}
}

// TestSSOIdPDown: with the provider unreachable, /ui/login says so (503)
// and records it; the server runs on.
func TestSSOIdPDown(t *testing.T) {
	h := newSSOHarness(t, func(c *Config) {
		c.AdminOIDC.Issuer = "http://127.0.0.1:1" // nothing listens there
	})
	st, _, body := step(t, devissuertest.Browser(t), h.url+"/ui/login")
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be reached") {
		t.Fatalf("IdP down: %d %s", st, body)
	}
	es := h.auditEntries("admin.signin")
	if len(es) != 1 || es[0]["reason"] != "identity provider unreachable" {
		t.Fatalf("entries %v", es)
	}
	if st, _ := h.call(nil, "GET", "/healthz", "", nil); st != 200 {
		t.Fatal("server down after a failed sign-in")
	}
	if st, body := h.call(nil, "GET", "/v1/auth/config", "", nil); st != 200 || !strings.Contains(body, `"provider_down":true`) {
		t.Fatalf("auth config with the provider down: %d %s", st, body)
	}
}

// The README's admin_oidc example is a valid server config.
func TestSSOReadmeConfig(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```yaml\nadmin_oidc:")
	if !ok {
		t.Fatal("README has no admin_oidc example")
	}
	block, _, _ := strings.Cut(rest, "```")
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte("admin_oidc:"+block), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if c.AdminOIDC == nil || c.AdminOIDC.Check() != nil || c.AdminSessionTTL.Hours() != 8 || c.AdminSessionIdle != time.Hour || len(c.AdminOIDC.Roles) != 3 {
		t.Fatalf("README example: %+v", c.AdminOIDC)
	}
}

// A provider whose token endpoint fails after the sign-in began: the
// callback is refused as "identity provider unreachable" (503), audited.
func TestSSOTokenEndpointDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	inner := iss.Handler()
	idp := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() && r.URL.Path == devissuer.OAuthTokenPath {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		inner.ServeHTTP(w, r)
	})}}
	idp.Start()
	t.Cleanup(idp.Close)
	h := newSSOHarness(t, func(c *Config) { c.AdminOIDC.Issuer = iss.URL() })
	b := devissuertest.Browser(t)
	_, authURL, _ := step(t, b, h.url+"/ui/login")
	_, cb, _ := step(t, b, authURL)
	down.Store(true)
	st, _, body := step(t, b, cb)
	if st != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be reached") {
		t.Fatalf("token endpoint down: %d %s", st, body)
	}
	es := h.auditEntries("admin.signin")
	if len(es) != 1 || es[0]["reason"] != "identity provider unreachable" || es[0]["status"] != float64(503) {
		t.Fatalf("entries %v", es)
	}
}

// Without admin_oidc none of the sign-in endpoints exist.
func TestSSOOff(t *testing.T) {
	h := newHarness(t, Config{})
	for _, p := range []string{"/v1/auth/config", "/ui/login", "/ui/"} {
		h.do("GET", p, "", "", "", 404)
	}
	h.do("POST", "/v1/auth/cli/token", "", "application/json", `{}`, 404)
	h.do("GET", "/v1/admin/sessions", h.admin, "", "", 404)
	h.do("GET", "/v1/auth/whoami", h.admin, "", "", 200)
}

// gwCookieHarness is a server with admin_oidc and a policy whose upstream
// "api" is up (recording each request's Cookie header and answering with
// setCookie, when set), a job token for it, and a browser signed in to
// the console as an admin on the same origin.
type gwCookieHarness struct {
	*ssoHarness
	job       string
	browser   *http.Client
	mu        sync.Mutex
	cookies   []string
	setCookie string // the upstream's Set-Cookie, when set
}

func newGWCookieHarness(t *testing.T) *gwCookieHarness {
	h := &gwCookieHarness{ssoHarness: newSSOHarness(t, nil)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.cookies = append(h.cookies, r.Header.Values("Cookie")...)
		setCookie := h.setCookie
		h.mu.Unlock()
		if setCookie != "" {
			w.Header().Add("Set-Cookie", setCookie)
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<p>artifact</p>")
	}))
	t.Cleanup(up.Close)
	iss := newTestIssuer(t)
	auth := map[string]string{"Authorization": "Bearer " + h.admin}
	if st, body := h.call(nil, "PUT", "/v1/secrets/gh", `{"value":"`+plantedSecret+`"}`, auth); st != 200 {
		t.Fatalf("secret: %d %s", st, body)
	}
	pol := strings.Replace(policyYAML(iss.srv.URL, ""), "http://127.0.0.1:1", up.URL, 1)
	req, _ := http.NewRequest("PUT", h.url+"/v1/policy", strings.NewReader(pol))
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("policy: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = http.Post(h.url+"/v1/token", form, strings.NewReader(exchangeForm(iss.mint(t, nil), "deploy")))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if tok.AccessToken == "" {
		t.Fatalf("exchange: %d", resp.StatusCode)
	}
	h.job = tok.AccessToken
	h.iss.SetUser(devissuertest.User("root@example.com", devissuertest.GroupAdmins))
	h.browser = devissuertest.Browser(t)
	devissuertest.SignIn(t, h.browser, h.url)
	return h
}

// gw makes a gateway request from the signed-in browser, the job token as
// Basic credentials (as the gateway's WWW-Authenticate: Basic invites).
func (h *gwCookieHarness) gw(t *testing.T) *http.Response {
	req, _ := http.NewRequest("GET", h.url+"/gw/api/repos/acme/app/artifact.html", nil)
	req.SetBasicAuth("x", h.job)
	resp, err := h.browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gateway: %d", resp.StatusCode)
	}
	return resp
}

// The console's session cookie is mayfly's own credential: a browser that
// is signed in and calls the gateway (same origin) must not hand it to
// the upstream.
func TestGatewayForwardsSessionCookie(t *testing.T) {
	h := newGWCookieHarness(t)
	u, _ := url.Parse(h.url)
	var session string
	for _, c := range h.browser.Jar.Cookies(u) {
		if c.Name == sso.SessionCookie(false) {
			session = c.Value
		}
	}
	if session == "" {
		t.Fatal("no session cookie")
	}
	h.gw(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.cookies {
		if strings.Contains(c, session) {
			t.Fatalf("the upstream received the admin's whole session value (%s=%s…) in its Cookie header", sso.SessionCookie(false), session[:9])
		}
	}
}

// An upstream answers on mayfly's own origin through the gateway: its
// Set-Cookie must not replace the console's session cookie (it would sign
// the admin's browser in as whoever the upstream chose).
func TestGatewayUpstreamSetsSessionCookie(t *testing.T) {
	// Whoever controls what the upstream answers (here: someone who can
	// sign in as an auditor) plants their own session value.
	h := newGWCookieHarness(t)
	h.iss.SetUser(devissuertest.User("mallory@example.com", devissuertest.GroupAuditors))
	mallory := devissuertest.Browser(t)
	devissuertest.SignIn(t, mallory, h.url)
	u, _ := url.Parse(h.url)
	var planted string
	for _, c := range mallory.Jar.Cookies(u) {
		if c.Name == sso.SessionCookie(false) {
			planted = c.Value
		}
	}
	h.mu.Lock()
	h.setCookie = sso.SessionCookie(false) + "=" + planted + "; Path=/; HttpOnly; SameSite=Strict"
	h.mu.Unlock()
	resp := h.gw(t)
	if sc := resp.Header.Values("Set-Cookie"); len(sc) > 0 {
		_, who := h.call(h.browser, "GET", "/v1/auth/whoami", "", nil)
		t.Fatalf("the gateway passed the upstream's Set-Cookie on mayfly's origin (%d header(s)); the admin's browser is now: %s",
			len(sc), strings.TrimSpace(who))
	}
}

// An upstream's HTML is served on the origin of the console and of the
// cookie-authenticated API: a script in it would run with the signed-in
// admin's cookie (same-site, so SameSite=Strict is sent), read the CSRF
// token from GET /v1/auth/whoami and make any admin call. Gateway answers
// must not be active content on that origin (CSP sandbox, as the console's
// own pages carry a CSP).
func TestGatewayHTMLRunsOnConsoleOrigin(t *testing.T) {
	h := newGWCookieHarness(t)
	resp := h.gw(t)
	// Every CSP header is enforced: one of them must sandbox.
	ct, csp := resp.Header.Get("Content-Type"), strings.Join(resp.Header.Values("Content-Security-Policy"), ", ")
	if strings.HasPrefix(ct, "text/html") && !strings.Contains(csp, "sandbox") {
		st, who := h.call(h.browser, "GET", "/v1/auth/whoami", "", nil)
		t.Fatalf("the upstream's %s answer came on the console's origin with CSP %q (no sandbox); a script there reads, with the same cookie: %d %s",
			ct, csp, st, strings.TrimSpace(who))
	}
}

// admin_session_idle below the minute a session's use is recorded to
// would end sessions in use: refused at start, saying so.
func TestSSOSessionIdleConfig(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	iss := devissuertest.Start(t)
	for _, tc := range []struct {
		idle time.Duration
		ok   bool
	}{{0, true}, {2 * time.Minute, true}, {90 * time.Second, false}, {-time.Hour, false}} {
		t.Run(tc.idle.String(), func(t *testing.T) {
			cfg := Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0", AdminOIDC: devissuertest.AdminOIDC(iss, "http://127.0.0.1:1"),
				AdminSessionIdle: tc.idle}
			srv, err := New(ctx, cfg, NewLogger(io.Discard, "json", "info"))
			if err == nil {
				srv.Close(ctx)
			}
			if (err == nil) != tc.ok || err != nil && !strings.Contains(err.Error(), "admin_session_idle") {
				t.Fatalf("admin_session_idle %s: %v", tc.idle, err)
			}
		})
	}
}

// RFC 9207: a callback whose iss names another issuer is the answer of
// another authorization server (a mix-up: its code must not be sent to
// ours) and is refused before the code is used; one naming ours, or none
// from a provider that does not send it, signs in.
func TestSSOCallbackIssuer(t *testing.T) {
	h := newSSOHarness(t, nil)
	for _, tc := range []struct {
		name   string
		iss    func() []string
		status int
		reason string
	}{
		{"no iss", func() []string { return nil }, 200, ""},
		{"this issuer", func() []string { return []string{h.iss.URL()} }, 200, ""},
		{"another issuer", func() []string { return []string{"https://attacker.example"} }, 400, "callback from another issuer"},
		{"this issuer with a trailing slash", func() []string { return []string{h.iss.URL() + "/"} }, 400, "callback from another issuer"},
		{"two iss", func() []string { return []string{h.iss.URL(), "https://attacker.example"} }, 400, "unknown, used or expired state"}, // malformed
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := devissuertest.Browser(t)
			cb, err := url.Parse(h.approve(b, h.loginTo(b)))
			if err != nil {
				t.Fatal(err)
			}
			q := cb.Query()
			q["iss"] = tc.iss()
			cb.RawQuery = q.Encode()
			before := len(h.auditEntries("admin.signin"))
			st, _, body := step(t, b, cb.String())
			if st != tc.status {
				t.Fatalf("callback: %d, want %d: %s", st, tc.status, body)
			}
			es := h.auditEntries("admin.signin")
			if len(es) != before+1 {
				t.Fatalf("%d new admin.signin entries, want 1", len(es)-before)
			}
			if last := es[len(es)-1]; last["reason"] != nil && last["reason"] != tc.reason || tc.reason != "" && last["reason"] != tc.reason {
				t.Fatalf("entry %v", last)
			}
		})
	}
}

// The provider's latest word on a user wins: when they sign in again and
// now map to a weaker role, or to none (removed from the group), their
// sessions of a stronger role end (audited); a session of the same role,
// and another user's, go on.
func TestSSOSignInLowersRole(t *testing.T) {
	for _, tc := range []struct {
		name      string
		now       devissuer.User // the user at the second sign-in
		signedIn  bool           // the second sign-in succeeds
		firstLive bool           // the first session still works after it
	}{
		{"still admin", devissuertest.User("ann@example.com", devissuertest.GroupAdmins), true, true},
		{"now operator", devissuertest.User("ann@example.com", devissuertest.GroupOperators), true, false},
		{"removed from every group", devissuertest.User("ann@example.com"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newSSOHarness(t, nil)
			h.iss.SetUser(devissuertest.User("bob@example.com", devissuertest.GroupAdmins))
			bob := devissuertest.Browser(t)
			devissuertest.SignIn(t, bob, h.url)
			h.iss.SetUser(devissuertest.User("ann@example.com", devissuertest.GroupAdmins))
			first := devissuertest.Browser(t)
			devissuertest.SignIn(t, first, h.url)

			h.iss.SetUser(tc.now)
			second := devissuertest.Browser(t)
			st, _, body := step(t, second, h.approve(second, h.loginTo(second)))
			if (st == 200) != tc.signedIn {
				t.Fatalf("second sign-in: %d %s", st, body)
			}
			st, body = h.call(first, "GET", "/v1/auth/whoami", "", nil)
			if (st == 200) != tc.firstLive {
				t.Fatalf("the first session after the provider said %v: %d %s", tc.now["groups"], st, body)
			}
			if st, body := h.call(bob, "GET", "/v1/auth/whoami", "", nil); st != 200 {
				t.Fatalf("another user's session: %d %s", st, body)
			}
			if n := len(h.auditEntries("admin.session.revoke")); (n == 1) == tc.firstLive || n > 1 {
				t.Fatalf("%d admin.session.revoke entries", n)
			}
		})
	}
}

// Session fixation: a session value planted in a browser before its
// sign-in (here the attacker's own live session) does not survive it: the
// sign-in sets a fresh value, the browser acts as its own user, and the
// planted value stays the attacker's, with the attacker's role.
func TestSSOSignInReplacesPlantedSession(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("mallory@example.com", devissuertest.GroupAuditors))
	attacker := devissuertest.Browser(t)
	devissuertest.SignIn(t, attacker, h.url)
	u, _ := url.Parse(h.url)
	var planted string
	for _, c := range attacker.Jar.Cookies(u) {
		if c.Name == sso.SessionCookie(false) {
			planted = c.Value
		}
	}
	if planted == "" {
		t.Fatal("no session cookie")
	}
	victim := devissuertest.Browser(t)
	victim.Jar.SetCookies(u, []*http.Cookie{{Name: sso.SessionCookie(false), Value: planted, Path: "/"}})
	h.iss.SetUser(devissuertest.User("ann@example.com", devissuertest.GroupAdmins))
	devissuertest.SignIn(t, victim, h.url)
	for _, c := range victim.Jar.Cookies(u) {
		if c.Name == sso.SessionCookie(false) && c.Value == planted {
			t.Fatal("the planted session value survived the sign-in")
		}
	}
	if st, body := h.call(victim, "GET", "/v1/auth/whoami", "", nil); st != 200 || !strings.Contains(body, "ann@example.com") {
		t.Fatalf("victim: %d %s", st, body)
	}
	if st, body := h.call(nil, "GET", "/v1/auth/whoami", "", map[string]string{"Cookie": sso.SessionCookie(false) + "=" + planted}); st != 200 ||
		!strings.Contains(body, "mallory@example.com") || !strings.Contains(body, `"role":"auditor"`) {
		t.Fatalf("planted value after the victim's sign-in: %d %s", st, body)
	}
}
