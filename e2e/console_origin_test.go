package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The gateway answers on the console's origin (/gw/ beside /ui/ and /v1/),
// and passes an upstream's answer through as it is: an HTML page an
// upstream serves (an uploaded artifact, a reflected error page) runs its
// script with the console's origin. A job-token holder sends a signed-in
// admin a gateway link carrying the token as URL credentials
// (http://x:TOKEN@server/gw/…, which browsers turn into the Basic header
// the gateway takes); the page reads the session's CSRF token from
// /v1/auth/whoami and creates an admin token with the admin's session.
// Gateway answers are sandboxed (CSP sandbox): the page loads, its script
// never runs, and no admin token appears.
func TestConsoleOriginGatewayPageTakesOverSession(t *testing.T) {
	chrome := chromium(t)
	var served atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".html") {
			served.Add(1)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><html><body><p id="out">running</p><script>
(async () => {
  const out = document.getElementById("out");
  try {
    const who = await (await fetch(location.origin + "/v1/auth/whoami")).json();
    const r = await fetch(location.origin + "/v1/admin/tokens", {method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": who.csrf},
      body: JSON.stringify({name: "planted-by-upstream-page", role: "admin"})});
    out.textContent = "status " + r.status + " " + (await r.text());
  } catch (e) { out.textContent = "error " + e; }
})();
</script></body></html>`)
			return
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	n, addr := consoleNode(t)
	url := "http://" + addr
	// The attacker's job token: a grant that reads artifacts upstream.
	tok, _ := n.gatewayJob(t, "art", up.URL, "art-upstream-credential-0123456789", "artifacts", `
      - methods: [GET]
        paths: ["/files/**"]
`)

	_, ctx := headless(t, chrome)
	until := func(what, cond string) {
		t.Helper()
		if err := untilJS(ctx, cond); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// The admin signs in to the console.
	if err := signIn(ctx, url); err != nil {
		t.Fatalf("sign in: %v", err)
	}

	// The admin visits a page of another site, which sends the browser
	// on to a gateway link carrying the token holder's job token.
	link := "http://x:" + tok + "@" + addr + "/gw/art/files/report.html"
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<html><body><script>location.href = %q</script></body></html>`, link)
	}))
	t.Cleanup(evil.Close)
	if err := chromedp.Do(ctx, chromedp.Navigate(evil.URL)); err != nil {
		t.Fatalf("open evil page: %v", err)
	}
	until("page loaded", `!!document.getElementById("out") && document.readyState === "complete"`)
	if served.Load() == 0 {
		t.Fatal("the upstream never served the page: the test shows nothing")
	}
	// Long enough for the script's two fetches, had it run.
	time.Sleep(2 * time.Second)
	res, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("out").textContent`))
	if res != "running" {
		t.Errorf("the upstream page's script ran on the console's origin: %.200s", res)
	}

	// What the server now holds: an admin token nobody meant to make.
	st, body := n.req(t, n.client(t), "GET", "/v1/admin/tokens", "")
	planted := strings.Contains(body, "planted-by-upstream-page")
	if planted {
		t.Errorf("an upstream's page served at /gw/ ran with the console's origin and made an admin token with the admin's session (GET /v1/admin/tokens %d: %.300s)", st, body)
	}
}
