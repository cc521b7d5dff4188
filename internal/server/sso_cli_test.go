package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// A CLI's loopback sign-in hands its one-time code over only when the
// person in the browser says so: before, the callback redirected at once
// to whatever port the sign-in link named, so a link made by someone
// listening on a port of the victim's machine (with the PKCE challenge of
// their own verifier) got the victim's session from a provider that signs
// its users in without asking. Now a page names the port and the role and
// the code goes on only by its link; the flow still ends in a session.
func TestCLISignInAsksBeforeHandingOver(t *testing.T) {
	h := newSSOHarness(t, nil)
	b := devissuertest.Browser(t)
	verifier := strings.Repeat("v", 50)
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	port := 40123
	q := url.Values{"cli_port": {strconv.Itoa(port)}, "cli_challenge": {challenge}, "cli_state": {"state-of-the-cli-0123"}}
	st, loc, body := step(t, b, h.url+"/ui/login?"+q.Encode())
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, h.iss.URL()) {
		t.Fatalf("/ui/login: %d %s %s", st, loc, body)
	}
	st, loc, body = step(t, b, h.approve(b, loc))
	if st != http.StatusOK || loc != "" {
		t.Fatalf("callback: %d, Location %q (the code handed over without asking); %s", st, loc, body)
	}
	link := regexp.MustCompile(`href="(http://127\.0\.0\.1:` + strconv.Itoa(port) + `/callback\?[^"]+)"`).FindStringSubmatch(body)
	if link == nil || !strings.Contains(body, strconv.Itoa(port)) || !strings.Contains(body, "auth login") {
		t.Fatalf("the page does not name the port and the command, or has no link on: %s", body)
	}
	next, err := url.Parse(html.UnescapeString(link[1]))
	if err != nil {
		t.Fatal(err)
	}
	if next.Query().Get("state") != "state-of-the-cli-0123" {
		t.Fatalf("link %s lacks the CLI's state", next)
	}
	reqBody, _ := json.Marshal(map[string]string{"code": next.Query().Get("code"), "code_verifier": verifier})
	status, out := h.call(nil, "POST", "/v1/auth/cli/token", string(reqBody), map[string]string{"Content-Type": "application/json"})
	if status != 200 || !strings.Contains(out, "mfys_") {
		t.Fatalf("trading the code: %d %s", status, out)
	}
}
