package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// lateBody is a request body sent only once the server asks for it
// (Expect: 100-continue, which net/http answers when the handler first
// reads the body, after it has checked the caller): its first read runs
// meanwhile, as an admin's revocation would land while a body trickles in.
type lateBody struct {
	once      sync.Once
	meanwhile func()
	r         io.Reader
}

func (b *lateBody) Read(p []byte) (int, error) {
	b.once.Do(b.meanwhile)
	return b.r.Read(p)
}

// A session revoked while its request's body was still arriving does
// nothing with that request, on the API and in the console: whoever stole
// the cookie must not keep a request open to finish it once revoked.
func TestSessionRevokedWhileBodyArrives(t *testing.T) {
	h := newSSOHarness(t, nil)
	tests := []struct {
		name, path, contentType string
		body                    func(csrf string) string
		header                  bool // the CSRF token in a header, not the form
		entry                   string
	}{
		{name: "API", path: "/v1/admin/tokens", contentType: "application/json", header: true, entry: audit.TypeAdminCreate,
			body: func(string) string { return `{"name":"backdoor","role":"admin"}` }},
		{name: "console, CSRF in the form", path: "/ui/leases/revoke", contentType: "application/x-www-form-urlencoded", entry: audit.TypeRevoke,
			body: func(csrf string) string {
				return url.Values{"grant": {"x"}, "confirm": {"yes"}, "csrf": {csrf}}.Encode()
			}},
		{name: "console, CSRF in a header", path: "/ui/leases/revoke", contentType: "application/x-www-form-urlencoded", header: true, entry: audit.TypeRevoke,
			body: func(string) string { return url.Values{"grant": {"x"}, "confirm": {"yes"}}.Encode() }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := "admin" + string(rune('a'+i)) + "@example.com"
			h.iss.SetUser(devissuertest.User(user, devissuertest.GroupAdmins))
			b := devissuertest.Browser(t)
			csrf := devissuertest.SignIn(t, b, h.url)
			_, wb := h.call(b, "GET", "/v1/auth/whoami", "", nil)
			var who struct{ Session string }
			if err := json.Unmarshal([]byte(wb), &who); err != nil || who.Session == "" {
				t.Fatalf("whoami: %s", wb)
			}
			body := &lateBody{r: strings.NewReader(tt.body(csrf)), meanwhile: func() {
				if st, body := h.call(nil, "DELETE", "/v1/admin/sessions/"+who.Session, "", map[string]string{"Authorization": "Bearer " + h.admin}); st != 200 {
					t.Errorf("revoke session: %d %s", st, body)
				}
			}}
			req, _ := http.NewRequest("POST", h.url+tt.path, body)
			req.ContentLength = int64(len(tt.body(csrf)))
			req.Header.Set("Content-Type", tt.contentType)
			req.Header.Set("Expect", "100-continue")
			req.Header.Set("Origin", h.url)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			if tt.header {
				req.Header.Set("X-CSRF-Token", csrf)
			}
			late := &http.Client{Jar: b.Jar, Timeout: time.Minute, Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
			t.Cleanup(late.CloseIdleConnections)
			resp, err := late.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("status %d, want 401: %s", resp.StatusCode, got)
			}
			for _, e := range h.auditEntries(tt.entry) {
				if e["admin"] == "oidc:"+user {
					t.Errorf("the revoked session acted: %v", e)
				}
			}
		})
	}
}
