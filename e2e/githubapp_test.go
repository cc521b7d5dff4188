package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// GitHub App installation tokens through the real binary, against the
// GitHub double (SPEC section 9): deliver: job hands the job its own token
// (login --format env, exec), which dies when the job's lease ends — on a
// leak found by scan --revoke, or when exec ends — and deliver: gateway
// injects the grant's shared token. On both stores.
func TestGitHubAppTokens(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		n := initDir(t)
		n.start(t)
		testGitHubAppTokens(t, n)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
		n := initPostgres(t, dsn)
		n.start(t, "--postgres", dsn)
		testGitHubAppTokens(t, n)
	})
}

func testGitHubAppTokens(t *testing.T, n *node) {
	gh, err := githubtest.Start(githubtest.Options{Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app", "lib"}, Permissions: map[string]string{"contents": "write", "pull_requests": "write"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	iss := devissuertest.Start(t)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	if _, e, code := run(t, env, string(gh.PrivateKey), "secret", "put", "gh-app-key"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte(`issuers:
  dev: {url: `+iss.URL()+`, audience: `+n.url+`}
upstreams:
  github:
    url: `+gh.URL+`
    credential:
      github_app: {app_id: "`+gh.AppID+`", private_key_secret: gh-app-key, owner: acme}
grants:
  release:
    upstream: github
    ttl: 5m
    deliver: job
    bind_source_ip: true
    github: {repositories: [app], permissions: {contents: write}}
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: dev, claims: {repository: acme/app}}]
  read:
    upstream: github
    ttl: 5m
    github: {repositories: [app], permissions: {contents: read}}
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: dev, claims: {repository: acme/app}}]
`), 0o600)
	if _, e, code := run(t, env, "", "policy", "apply", pol); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	jobEnv := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN="}
	idFile := func() string {
		idt, err := iss.Mint(nil, n.url, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "id")
		os.WriteFile(f, []byte(idt), 0o600)
		return f
	}
	waitDeleted := func(tok string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if !gh.Live(tok) {
				return
			}
		}
		t.Fatalf("the installation token was not deleted at GitHub\n%s", n.logs)
	}

	t.Run("deliver job, leaked, found by scan --revoke", func(t *testing.T) {
		out, e, code := run(t, jobEnv, "", "login", "--grant", "release", "--id-token-file", idFile(), "--format", "env")
		if code != 0 {
			t.Fatalf("login: %d %s", code, e)
		}
		var ghTok, mfy string
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "GH_TOKEN="); ok {
				ghTok = v
			}
			if v, ok := strings.CutPrefix(l, "MAYFLY_TOKEN="); ok {
				mfy = v
			}
		}
		if !strings.HasPrefix(ghTok, "ghs_") || !gh.Live(ghTok) {
			t.Fatalf("no live GH_TOKEN in:\n%s", out)
		}
		if got := gh.Tokens()[ghTok]; got.Permissions["contents"] != "write" || len(got.Repositories) != 1 {
			t.Fatalf("token scope %+v", got)
		}
		// The job goes direct to GitHub with it.
		req, _ := http.NewRequest("GET", gh.URL+"/repos/acme/app", nil)
		req.Header.Set("Authorization", "token "+ghTok)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("direct call: %v %v", resp, err)
		}
		// It leaks into a log; the scanner finds it and revokes its lease.
		so, se, code := run(t, jobEnv, "build log\nGH_TOKEN="+ghTok+"\n", "scan", "--stdin", "--revoke")
		if code != 1 || !strings.Contains(so+se, "revoked lse_") {
			t.Fatalf("scan --revoke: %d\n%s\n%s", code, so, se)
		}
		waitDeleted(ghTok)
		c := n.client(t)
		req, _ = http.NewRequest("GET", n.url+"/gw/github/repos/acme/app", nil)
		req.Header.Set("Authorization", "Bearer "+mfy)
		if resp, err := c.Do(req); err != nil || resp.StatusCode != 401 {
			t.Fatalf("the lease of the leaked token lives: %v %v", resp, err)
		}
	})

	t.Run("deliver job through exec: masked, deleted when exec ends", func(t *testing.T) {
		outFile := filepath.Join(t.TempDir(), "tok")
		out, e, code := run(t, append(jobEnv, "OUT="+outFile), "", "exec", "--grant", "release", "--id-token-file", idFile(), "--",
			"sh", "-c", `echo "token=$GH_TOKEN"; printf %s "$GH_TOKEN" > "$OUT"`)
		if code != 0 || !strings.Contains(out, "token=***") || strings.Contains(out, "ghs_") {
			t.Fatalf("exec: %d %q %s", code, out, e)
		}
		b, err := os.ReadFile(outFile)
		if err != nil || !strings.HasPrefix(string(b), "ghs_") {
			t.Fatalf("the command had no GH_TOKEN: %q %v", b, err)
		}
		waitDeleted(string(b))
	})

	t.Run("deliver gateway: the shared token is injected", func(t *testing.T) {
		out, e, code := run(t, jobEnv, "", "login", "--grant", "read", "--id-token-file", idFile(), "--format", "json")
		if code != 0 {
			t.Fatalf("login: %s", e)
		}
		var tr struct {
			AccessToken string         `json:"access_token"`
			Creds       map[string]any `json:"upstream_credentials"`
		}
		if err := json.Unmarshal([]byte(out), &tr); err != nil || tr.Creds != nil {
			t.Fatalf("response %s: %v", out, err)
		}
		c := n.client(t)
		for i := 0; i < 3; i++ {
			req, _ := http.NewRequest("GET", n.url+"/gw/github/repos/acme/app/contents/README", nil)
			req.Header.Set("Authorization", "Bearer "+tr.AccessToken)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"installation":7890`) {
				t.Fatalf("gateway call: %d %s", resp.StatusCode, body)
			}
		}
		if n := gh.Calls("POST /app/installations/{id}/access_tokens"); n != 3 {
			// one per job login above (2) and one shared token for the grant
			t.Fatalf("%d tokens minted; the shared one is cached", n)
		}
	})
}
