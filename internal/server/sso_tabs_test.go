package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/sso"
)

// Two sign-ins started in one browser (two tabs sent to /ui/login when
// the session ended) both finish, in either order: the second's login
// cookie does not replace the first's. Each is still bound to this
// browser: another browser cannot finish it. The login cookies a browser
// holds stay few however many sign-ins it starts.
func TestSSOTwoSignInsInOneBrowser(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("ops@example.com", devissuertest.GroupOperators))
	u, _ := url.Parse(h.url)
	// start sends browser to /ui/login and returns where the server sends
	// it (the provider), without going there.
	start := func(browser *http.Client) string {
		t.Helper()
		c := *browser
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Get(h.url + "/ui/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") == "" {
			t.Fatalf("/ui/login: %d", resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	// finish follows the provider's approval back to the callback.
	finish := func(browser *http.Client, authURL string) (int, string) {
		t.Helper()
		resp, err := browser.Get(authURL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	logins := func(browser *http.Client) int {
		n := 0
		for _, c := range browser.Jar.Cookies(u) {
			if strings.HasPrefix(c.Name, sso.LoginCookiePlain) {
				n++
			}
		}
		return n
	}
	for _, order := range []string{"first back first", "second back first"} {
		t.Run(order, func(t *testing.T) {
			b := devissuertest.Browser(t)
			first, second := start(b), start(b)
			if order == "second back first" {
				first, second = second, first
			}
			for i, authURL := range []string{first, second} {
				if st, body := finish(b, authURL); st != http.StatusOK || !strings.Contains(body, "Signed in") {
					t.Fatalf("sign-in %d of 2: %d %.300s", i+1, st, body)
				}
			}
			if n := logins(b); n != 0 {
				t.Errorf("%d login cookies left after both finished", n)
			}
		})
	}
	t.Run("another browser", func(t *testing.T) {
		b, other := devissuertest.Browser(t), devissuertest.Browser(t)
		authURL := start(b)
		start(other)
		if st, body := finish(other, authURL); st == http.StatusOK || !strings.Contains(body, "another browser") {
			t.Fatalf("another browser finished this one's sign-in: %d %.300s", st, body)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		b := devissuertest.Browser(t)
		var last string
		for range 20 {
			last = start(b)
		}
		if n := logins(b); n < 1 || n > 8 {
			t.Errorf("%d login cookies after 20 sign-ins started", n)
		}
		if st, body := finish(b, last); st != http.StatusOK || !strings.Contains(body, "Signed in") {
			t.Fatalf("the latest sign-in: %d %.300s", st, body)
		}
	})
}
