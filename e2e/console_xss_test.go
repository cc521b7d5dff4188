package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// TestConsoleRendersHostileFieldsInert plants markup in every field of the
// console an outsider chooses — an ID token's claims (a lease's subject and
// job, a refused exchange's repository and the grant it asked), a gateway
// request's path, a leak report's source and URL — and checks in Chromium
// that each page shows it as text: no element made of it, no handler run.
// (The CSP would block an injected handler anyway; the DOM is checked so
// that the escaping itself is proven, not only the CSP.)
func TestConsoleRendersHostileFieldsInert(t *testing.T) {
	chrome := chromium(t)
	const payload = `"'><img src=x onerror=window.__pwned=1><svg onload=window.__pwned=2>`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(up.Close)
	n, addr := consoleNode(t)
	c := n.client(t)
	iss := devissuertest.Start(t)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_TOKEN=" + n.admin}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte(`issuers:
  dev:
    url: `+iss.URL()+`
    audience: `+n.url+`
upstreams:
  api:
    url: `+up.URL+`
    credential:
      secret: api-token
      prefix: "Bearer "
grants:
  calls:
    upstream: api
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/r/**"]
    who: [{issuer: dev, claims: {repository: acme/app}}]
`), 0o600)
	if _, e, code := run(t, env, "api-upstream-credential-0123456789\n", "secret", "put", "api-token"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	if _, e, code := run(t, env, "", "policy", "apply", policy); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	exchange := func(claims map[string]any, scope string) (int, string) {
		t.Helper()
		idt, err := iss.Mint(claims, n.url, 0)
		if err != nil {
			t.Fatal(err)
		}
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "subject_token": {idt}, "scope": {scope}}
		resp, err := c.PostForm(n.url+"/v1/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.AccessToken
	}
	// A live lease whose subject (from ref) and job (run_id) hold markup.
	st, tok := exchange(map[string]any{"ref": "refs/heads/" + payload, "run_id": payload}, "calls")
	if st != 200 || tok == "" {
		t.Fatalf("exchange with hostile claims: %d", st)
	}
	// Refused exchanges: markup in the repository, and in the grant asked.
	if st, _ := exchange(map[string]any{"repository": "evil/" + payload}, "calls"); st == 200 {
		t.Fatal("exchange for another repository granted")
	}
	if st, _ := exchange(nil, payload); st == 200 {
		t.Fatal("exchange for a hostile grant name granted")
	}
	// A gateway request whose path holds markup (refused or not, recorded).
	req, _ := http.NewRequest("GET", n.url+"/gw/api/r/"+url.PathEscape(payload), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
	}
	// A leak report (no credential needed) whose source and URL hold markup.
	report, _ := json.Marshal([]map[string]string{{"token": "nothing-here", "type": "mayfly", "source": payload, "url": "https://x.example/" + payload}})
	if resp, err := c.Post(n.url+"/v1/leaks", "application/json", strings.NewReader(string(report))); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 200 {
		t.Fatalf("leak report: %d", resp.StatusCode)
	}

	_, ctx := headless(t, chrome)
	if err := signIn(ctx, "http://"+addr); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	type check struct {
		Elements int  `json:"elements"`
		Pwned    bool `json:"pwned"`
		Shown    bool `json:"shown"`
	}
	probe := fmt.Sprintf(`(() => { const m = document.querySelector("main"); if (!m) return null;
		return {elements: m.querySelectorAll("img, svg, [onerror], [onload]").length, pwned: !!window.__pwned,
			shown: m.innerText.includes(%q)}; })()`, "<img src=x onerror=")
	for _, page := range []string{"/ui/leases", "/ui/refused", "/ui/leaks", "/ui/audit", "/ui/audit?type=gateway.request", "/ui/audit"} {
		t.Run(page, func(t *testing.T) {
			// The audit listings read an index that follows the log: load
			// again until the planted entries are in it.
			var got *check
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(300 * time.Millisecond) {
				if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+page)); err != nil {
					t.Fatal(err)
				}
				res, err := chromedp.Run(ctx, chromedp.Evaluate[*check](probe))
				if err == nil && res != nil && res.Shown || time.Now().After(deadline) {
					got = res
					break
				}
			}
			if got == nil || !got.Shown {
				t.Fatalf("the planted markup is not shown as text: %+v", got)
			}
			if got.Elements != 0 || got.Pwned {
				t.Fatalf("planted markup became elements or ran: %+v", got)
			}
		})
	}
	// Each audit entry's own page (those of the last listing, the newest
	// first) shows the entry's fields and raw text.
	hrefs, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#entries a.entry")].map(a => a.getAttribute("href"))`))
	if err != nil || len(hrefs) == 0 {
		t.Fatalf("entry links: %v %v", hrefs, err)
	}
	for _, h := range hrefs {
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+h)); err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[*check](probe))
		if err != nil || got == nil || got.Elements != 0 || got.Pwned {
			t.Fatalf("%s: %+v %v", h, got, err)
		}
	}
}
