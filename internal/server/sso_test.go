package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// ssoHarness is a server with admin_oidc at a dev issuer.
type ssoHarness struct {
	t     *testing.T
	url   string
	iss   *devissuer.Issuer
	srv   *Server
	admin string
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
	h := &ssoHarness{t: t, url: "http://" + ts.Listener.Addr().String(), iss: iss, admin: res.AdminToken}
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

func TestSSOBrowserSession(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("ops@example.com", devissuertest.GroupOperators))
	b := devissuertest.Browser(t)
	csrf := devissuertest.SignIn(t, b, h.url)

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
