package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// cliSession signs in through the CLI's loopback flow and returns the
// session value.
func (h *ssoHarness) cliSession() string {
	t := h.t
	t.Helper()
	b := devissuertest.Browser(t)
	verifier := strings.Repeat("v", 50)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"cli_port": {"40123"}, "cli_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "cli_state": {"state-of-the-cli-0123"}}
	_, loc, _ := step(t, b, h.url+"/ui/login?"+q.Encode())
	_, _, body := step(t, b, h.approve(b, loc))
	link := regexp.MustCompile(`href="(http://127\.0\.0\.1:40123/callback\?[^"]+)"`).FindStringSubmatch(body)
	if link == nil {
		t.Fatalf("no link to the CLI: %s", body)
	}
	next, err := url.Parse(html.UnescapeString(link[1]))
	if err != nil {
		t.Fatal(err)
	}
	reqBody, _ := json.Marshal(map[string]string{"code": next.Query().Get("code"), "code_verifier": verifier})
	status, out := h.call(nil, "POST", "/v1/auth/cli/token", string(reqBody), map[string]string{"Content-Type": "application/json"})
	var tok apitype.SessionToken
	if status != 200 || json.Unmarshal([]byte(out), &tok) != nil || tok.SessionToken == "" {
		t.Fatalf("trading the code: %d %s", status, out)
	}
	return tok.SessionToken
}

// POST /v1/revoke (RFC 7009) ends an admin session whose value is
// presented, as it ends an admin token: holding one is enough to kill it
// (SPEC 4), and a leak report already ends one. It answered 200 and left
// the session working, so whoever found a leaked session value and
// revoked it the standard way believed it dead while it still acted with
// its role.
func TestRevokeEndsAPresentedSession(t *testing.T) {
	h := newSSOHarness(t, nil)
	v := h.cliSession()
	bearer := map[string]string{"Authorization": "Bearer " + v}
	if st, body := h.call(nil, "GET", "/v1/auth/whoami", "", bearer); st != 200 {
		t.Fatalf("whoami before: %d %s", st, body)
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for i := 0; i < 2; i++ { // again: already ended, still 200
		if st, body := h.call(nil, "POST", "/v1/revoke", url.Values{"token": {v}}.Encode(), form); st != 200 {
			t.Fatalf("revoke: %d %s", st, body)
		}
	}
	if st, body := h.call(nil, "GET", "/v1/auth/whoami", "", bearer); st != http.StatusUnauthorized {
		t.Fatalf("whoami after the session was revoked: %d %s", st, body)
	}
	var ended []map[string]any
	for _, e := range h.auditEntries("admin.session.revoke") {
		if e["reason"] == "revoked by holder" {
			ended = append(ended, e)
		}
	}
	if len(ended) != 1 {
		t.Fatalf("admin.session.revoke entries by its holder: %v, want one", ended)
	}
	if all, _ := json.Marshal(h.auditEntries("admin.session.revoke")); strings.Contains(string(all), v) {
		t.Error("the session value is in an audit entry")
	}
}
