package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// chromium finds Debian's chromium; without it the browser tests skip,
// except in CI, which installs it (.ci/run).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (.ci/run installs it)")
	}
	t.Skip("chromium not installed")
	return ""
}

// freeAddr is a loopback address with a free port, for a server whose
// URL must be known before it starts (the SSO callback names it).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// consoleNode starts the real binary whose console signs humans in
// (admin_oidc) at a dev issuer that approves at once, listening on a
// loopback address known before it starts (the SSO callback names it).
func consoleNode(t *testing.T) (n *node, addr string) {
	t.Helper()
	sso := devissuertest.Start(t)
	addr = freeAddr(t)
	url := "http://" + addr
	n = initDir(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(devissuertest.AdminOIDCYAML(sso, url)), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t, "--insecure-http", "--listen", addr, "--config", cfg)
	if n.url != url {
		t.Fatalf("server at %s, not %s", n.url, url)
	}
	return n, addr
}

// headless starts Chromium (chrome, with opts beyond the defaults) until
// the test ends. bctx is the browser: its first run starts it, with no
// deadline of its own (a deadline there would end the browser); ctx
// bounds the rest, a failure bound only: a loaded machine may be slow,
// never wrong.
func headless(t *testing.T, chrome string, opts ...chromedp.ExecAllocatorOption) (bctx, ctx context.Context) {
	t.Helper()
	opts = append(append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true)), opts...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelA)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(cancelB)
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	t.Cleanup(cancel)
	return bctx, ctx
}

// untilJS waits, until ctx ends, for a JavaScript condition across a
// navigation (an evaluation the navigation cuts short is tried again).
func untilJS(ctx context.Context, cond string) error {
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		if err == nil && ok {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// signIn signs the browser in to the console at url: the dev issuer
// approves at once, and the console opens.
func signIn(ctx context.Context, url string) error {
	if err := chromedp.Do(ctx, chromedp.Navigate(url+"/ui/login")); err != nil {
		return err
	}
	return untilJS(ctx, `!!document.querySelector("#live-count")`)
}

// TestConsoleInBrowser drives headless Chromium through the console of the
// real binary: sign-in at the dev issuer, the live leases, a revocation
// with its confirmation, an audit entry's proof checked in the browser
// (and a tampered one failing), a policy diff, and a cross-site form post
// that the server refuses. It writes a screenshot of each page to
// $MAYFLY_SCREENSHOTS (default: the test's temporary directory).
func TestConsoleInBrowser(t *testing.T) {
	chrome := chromium(t)
	shots := os.Getenv("MAYFLY_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(up.Close)
	n, addr := consoleNode(t)
	url := "http://" + addr

	// A grant with a live job token and some traffic; a second policy
	// version; a refused exchange.
	tok, jobEnv := n.gatewayJob(t, "api", up.URL, "api-upstream-credential-0123456789", "calls", `
      - methods: [GET]
        paths: ["/r/**"]
`)
	c := n.client(t)
	for i := 0; i < 3; i++ {
		r, _ := http.NewRequest("GET", fmt.Sprintf("%s/gw/api/r/%d", n.url, i), nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(r)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("gateway call: %v", err)
		}
		resp.Body.Close()
	}
	_, pol := n.req(t, c, "GET", "/v1/policy", "")
	p2 := filepath.Join(t.TempDir(), "policy2.yaml")
	os.WriteFile(p2, []byte(strings.Replace(pol, "ttl: 5m", "ttl: 7m", 1)), 0o600)
	adminEnv := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_TOKEN=" + n.admin}
	if _, e, code := run(t, adminEnv, "", "policy", "apply", p2); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	// A refused exchange (an ID token that is not one).
	form := "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&subject_token=eyJhbGciOiJSUzI1NiJ9.e30.c2ln&scope=calls"
	if resp, err := c.Post(n.url+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(form)); err == nil {
		resp.Body.Close()
	}
	_ = jobEnv
	leaseID := onlyLease(t, n, c)

	// The browser.
	bctx, ctx := headless(t, chrome, chromedp.WindowSize(1400, 900))
	fail := func(what string, err error) {
		t.Helper()
		dctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		loc, _ := chromedp.Run(dctx, chromedp.Location())
		body, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
		// Stop the server before reading its log (exec's copier writes it).
		n.cmd.Process.Kill()
		n.cmd.Wait()
		t.Fatalf("%s: %v\nat %s: %.3000s\nserver log: %s", what, err, loc, body, n.logs)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		// Read by the page's own script, not by chromedp's DOM node ids:
		// after a navigation the page made itself (a form's submit), those
		// ids may still be the previous page's ("No node with given id").
		q, _ := json.Marshal(sel)
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? [e.innerText] : []; })()`, q)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](js))
			switch {
			case err == nil && len(got) == 1:
				return got[0]
			case time.Now().After(deadline):
				fail("text of "+sel, fmt.Errorf("no such element (last error: %v)", err))
			}
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			fail("screenshot "+name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// until waits for a JavaScript condition across a navigation (an
	// evaluation the navigation cuts short is tried again).
	until := func(what, cond string) {
		t.Helper()
		if err := untilJS(ctx, cond); err != nil {
			fail(what, err)
		}
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }

	// Sign-in: the dev issuer approves at once; the console opens.
	if err := signIn(ctx, url); err != nil {
		fail("sign in", err)
	}
	if who := text("#who"); !strings.Contains(who, "dev@example.com") || !strings.Contains(who, "admin") {
		t.Fatalf("signed in as %q", who)
	}
	shot("leases")

	// Revoke the lease: the confirmation says how many.
	do("revoke", chromedp.Click(chromedp.CSS(`tr[data-lease="`+leaseID+`"] button`)))
	until("confirmation", `!!document.querySelector("#confirm")`)
	if count := text("#confirm-count"); count != "1" {
		t.Fatalf("confirmation counts %q", count)
	}
	shot("revoke-confirm")
	do("confirm", chromedp.Click(chromedp.CSS("#confirm")))
	until("revoked", `!!document.querySelector("#result")`)
	if result := text("#result"); !strings.Contains(result, "Revoked 1 lease") {
		t.Fatalf("result %q", result)
	}
	if st, body := n.req(t, c, "GET", "/v1/leases?active=true", ""); st != 200 || strings.Contains(body, leaseID) {
		t.Fatalf("lease still live: %d %s", st, body)
	}

	// The audit log, and an entry's proof checked in the browser.
	do("audit", chromedp.Navigate(url+"/ui/audit"), visible("#entries"))
	shot("audit")
	// The filtered listing reads the audit index, which follows the log
	// (the page says how far it has come): until it has reached the
	// gateway request's entry the page lists none, so load it again.
	for {
		do("filter", chromedp.Navigate(url+"/ui/audit?type=gateway.request"), visible("#entries"))
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector("#entries a.entry")`))
		if err == nil && ok {
			break
		}
		if ctx.Err() != nil {
			fail("filter", ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#entries a.entry"), "href"))
	if err != nil || !href.Exists {
		fail("entry link", err)
	}
	do("proof", chromedp.Navigate(url+href.Value), visible(`#proof-status[data-result="verified"]`))
	if status := text("#proof-status"); !strings.Contains(status, "Verified in this browser") {
		t.Fatalf("proof status %q", status)
	}
	shot("audit-entry-verified")
	// One changed byte of what the server sent fails the check. (Every
	// gateway entry names its upstream; not every one has a status: on the
	// portable path the outcome is an entry of its own.)
	if changed, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		const el = document.getElementById("proof-data");
		const d = JSON.parse(el.textContent);
		const was = atob(d.entry);
		const now = was.replace('"upstream":"api"', '"upstream":"apx"');
		d.entry = btoa(now);
		el.textContent = JSON.stringify(d);
		return now !== was;
	})()`)); err != nil || !changed {
		fail("tamper", fmt.Errorf("changed %v: %v", changed, err))
	}
	do("recheck", chromedp.Click(chromedp.CSS("#recheck")), visible(`#proof-status[data-result="failed"]`))
	if status := text("#proof-status"); !strings.Contains(status, "FAILED") {
		t.Fatalf("tampered proof status %q", status)
	}
	shot("audit-entry-tampered")

	// Policy: the diff of the two versions.
	do("policy", chromedp.Navigate(url+"/ui/policy"), visible("#diff-form"),
		chromedp.SetValue(chromedp.CSS("#diff-a"), "1"), chromedp.SetValue(chromedp.CSS("#diff-b"), "2"),
		chromedp.Click(chromedp.CSS("#diff-go")))
	until("diff", `!!document.querySelector("#diff")`)
	if diff := text("#diff"); !strings.Contains(diff, "ttl: 5m") || !strings.Contains(diff, "ttl: 7m") {
		t.Fatalf("diff %q", diff)
	}
	shot("policy-diff")

	for _, p := range []struct{ name, path, sel string }{
		{"leaks", "/ui/leaks", "#leaks"}, {"refused", "/ui/refused", "#refused"},
		{"secrets", "/ui/secrets", "#secrets"}, {"health", "/ui/health", "#ready"},
	} {
		do(p.name, chromedp.Navigate(url+p.path), visible(p.sel))
		shot(p.name)
	}

	// A page of another origin posts a revocation form to the console with
	// the browser's session cookie and no CSRF token: refused, nothing done.
	n.gatewayJob(t, "api2", up.URL, "api-upstream-credential-9876543210", "calls2", `
      - methods: [GET]
        paths: ["/r/**"]
`)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<html><body><form id="f" method="post" action="%s/ui/leases/revoke">
<input name="grant" value="calls2"><input name="confirm" value="yes"></form>
<script>document.getElementById("f").submit()</script></body></html>`, url)
	}))
	t.Cleanup(evil.Close)
	do("csrf attempt", chromedp.Navigate(evil.URL))
	until("csrf attempt answered", `location.pathname === "/ui/leases/revoke" && document.readyState === "complete"`)
	if refusal := text("body"); !strings.Contains(refusal, "Refused") {
		t.Fatalf("cross-site post answered %q", refusal)
	}
	shot("csrf-refused")
	if st, body := n.req(t, c, "GET", "/v1/leases?active=true&grant=calls2", ""); st != 200 || !strings.Contains(body, `"calls2"`) {
		t.Fatalf("the cross-site post revoked: %d %s", st, body)
	}
	// The console's own form with a forged CSRF token: refused too.
	do("forged token", chromedp.Navigate(url+"/ui/leases?grant=calls2"), visible("#leases"))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
		for (const el of document.querySelectorAll('input[name="csrf"]')) el.value = "forged";
		return true;
	})()`)); err != nil {
		fail("forge", err)
	}
	do("forged post", chromedp.Click(chromedp.CSS(`#leases tbody button`)))
	until("forged post answered", `location.pathname === "/ui/leases/revoke" && document.readyState === "complete"`)
	if refusal := text("body"); !strings.Contains(refusal, "Refused") || !strings.Contains(refusal, "CSRF") {
		t.Fatalf("forged CSRF token answered %q", refusal)
	}
	if st, body := n.req(t, c, "GET", "/v1/leases?active=true&grant=calls2", ""); st != 200 || !strings.Contains(body, `"calls2"`) {
		t.Fatalf("the forged post revoked: %d %s", st, body)
	}
	t.Logf("screenshots in %s", shots)
}

// onlyLease is the id of the one live lease.
func onlyLease(t *testing.T, n *node, c *http.Client) string {
	t.Helper()
	st, body := n.req(t, c, "GET", "/v1/leases?active=true", "")
	var ls struct {
		Leases []struct {
			ID string `json:"lease_id"`
		} `json:"leases"`
	}
	if st != 200 || json.Unmarshal([]byte(body), &ls) != nil || len(ls.Leases) != 1 {
		t.Fatalf("leases: %d %s", st, body)
	}
	return ls.Leases[0].ID
}
