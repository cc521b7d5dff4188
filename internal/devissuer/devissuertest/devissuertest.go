// Package devissuertest starts a dev issuer on a loopback port for tests
// that need a real OIDC issuer (discovery, JWKS, minted ID tokens), and
// signs a test's browser in at a server whose admin_oidc is the dev issuer
// (AdminOIDC, SignIn). It is for tests only.
package devissuertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/sso"
)

// Start serves a new dev issuer on 127.0.0.1 until the test ends.
func Start(t testing.TB) *devissuer.Issuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + ln.Addr().String()})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: iss.Handler()}}
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}

// Groups the dev issuer's users are put in, and the roles AdminOIDC maps
// them to.
const (
	GroupAdmins    = "mayfly-admins"
	GroupOperators = "mayfly-operators"
	GroupAuditors  = "mayfly-auditors"
)

// AdminOIDC is admin_oidc for a server at serverURL (scheme://host:port)
// signing humans in at iss: client "mayfly", claim groups, the three
// groups above mapped to admin, operator and auditor, callback at
// /ui/callback.
func AdminOIDC(iss *devissuer.Issuer, serverURL string) *sso.Config {
	return &sso.Config{Issuer: iss.URL(), ClientID: "mayfly", RedirectURL: strings.TrimSuffix(serverURL, "/") + "/ui/callback", Claim: "groups",
		Roles: map[string][]string{"admin": {GroupAdmins}, "operator": {GroupOperators}, "auditor": {GroupAuditors}}}
}

// AdminOIDCYAML is AdminOIDC as a server config file's admin_oidc block.
func AdminOIDCYAML(iss *devissuer.Issuer, serverURL string) string {
	return fmt.Sprintf(`admin_oidc:
  issuer: %s
  client_id: mayfly
  redirect_url: %s/ui/callback
  claim: groups
  roles:
    admin: [%s]
    operator: [%s]
    auditor: [%s]
`, iss.URL(), strings.TrimSuffix(serverURL, "/"), GroupAdmins, GroupOperators, GroupAuditors)
}

// User is a dev issuer user with a verified email and groups (sub derived
// from the email).
func User(email string, groups ...string) devissuer.User {
	gs := make([]any, 0, len(groups))
	for _, g := range groups {
		gs = append(gs, g)
	}
	return devissuer.User{"sub": "dev:" + email, "email": email, "email_verified": true, "groups": gs}
}

// Browser is an HTTP client with a cookie jar that follows redirects, as
// a browser would.
func Browser(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: time.Minute}
}

// SignIn signs browser in at the server at serverURL as the issuer's
// current user (set it first with iss.SetUser): /ui/login, the dev
// issuer's approval, the callback. It returns the session's CSRF token
// (from GET /v1/auth/whoami), or fails the test.
func SignIn(t testing.TB, browser *http.Client, serverURL string) string {
	t.Helper()
	resp, err := browser.Get(strings.TrimSuffix(serverURL, "/") + "/ui/login")
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Signed in") {
		t.Fatalf("sign in: status %d at %s: %s", resp.StatusCode, resp.Request.URL.Path, body)
	}
	resp, err = browser.Get(strings.TrimSuffix(serverURL, "/") + "/v1/auth/whoami")
	if err != nil {
		t.Fatalf("sign in: whoami: %v", err)
	}
	defer resp.Body.Close()
	var who struct {
		CSRF string `json:"csrf"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&who); err != nil || resp.StatusCode != http.StatusOK || who.CSRF == "" {
		t.Fatalf("sign in: whoami: status %d, err %v", resp.StatusCode, err)
	}
	return who.CSRF
}
