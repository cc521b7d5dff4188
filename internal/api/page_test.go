package api

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// The sign-in pages (the callback's, the CLI hand-over's, refusals,
// sign-out) admit their one inline style by its hash, not every inline
// style ('unsafe-inline'): markup slipped into one could otherwise restyle
// the page, e.g. lay a link over the CLI hand-over's.
func TestSignInPagesCSPAdmitsOnlyTheirStyle(t *testing.T) {
	for _, p := range []pageData{
		{Title: "Signed in", Text: "Signed in as someone.", Refresh: "/ui/", Link: "/ui/", LinkText: "Continue"},
		{Title: "Sign in the mayfly command line?", Text: "A program asks.", Link: "http://127.0.0.1:40123/callback?code=c&state=s", LinkText: "Sign in"},
		{Title: "mayfly", Text: "Signed in.", CSRF: "csrf-token"},
	} {
		t.Run(p.Title, func(t *testing.T) {
			w := httptest.NewRecorder()
			writePage(w, 200, p)
			csp := w.Header().Get("Content-Security-Policy")
			if strings.Contains(csp, "'unsafe-") {
				t.Errorf("CSP %q admits unsafe sources", csp)
			}
			for _, d := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
				if !strings.Contains(csp, d) {
					t.Errorf("CSP %q lacks %s", csp, d)
				}
			}
			styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(w.Body.String(), -1)
			if len(styles) != 1 {
				t.Fatalf("%d style elements, want 1", len(styles))
			}
			h := sha256.Sum256([]byte(styles[0][1]))
			if want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"; !strings.Contains(csp, want) {
				t.Errorf("CSP %q does not admit the page's style (%s)", csp, want)
			}
		})
	}
}
