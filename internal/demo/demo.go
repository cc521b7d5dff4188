// Package demo runs mayfly's whole story on one machine with nothing else
// installed: a server on embedded storage in a temporary folder, a local CI
// issuer, a sample upstream API, and a job that exchanges its ID token,
// calls through the gateway, leaks its token, sees the scanner get it
// revoked, gets a GitHub App installation token of its own from a local
// GitHub double that dies with its lease when it leaks too, and ends with a
// verified audit log. Each step is printed with
// what happened and how long it took.
//
// It is a user of the other packages, over real HTTP on loopback; it never
// reaches into a server's internals.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/scan"
	"github.com/mayfly-sh/mayfly/internal/server"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// upstreamCredential is the sample API's real credential: stored in
// mayfly, injected by the gateway, never seen by the job.
const upstreamCredential = "sample-upstream-credential-7f3a9c2e"

// Run plays the story, writing each step to w. dir, when not empty, keeps
// the data directory there instead of a temporary folder.
func Run(ctx context.Context, w io.Writer, dir string) error {
	d := &demo{w: w, start: time.Now()}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mayfly-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	return d.run(ctx, filepath.Join(dir, "data"))
}

type demo struct {
	w     io.Writer
	start time.Time
	n     int
}

func (d *demo) step(title string, fn func() (string, error)) error {
	d.n++
	t := time.Now()
	detail, err := fn()
	took := time.Since(t)
	if err != nil {
		fmt.Fprintf(d.w, "%2d. %-52s FAILED (%s)\n    %v\n", d.n, title, round(took), err)
		return fmt.Errorf("demo step %d (%s): %w", d.n, title, err)
	}
	fmt.Fprintf(d.w, "%2d. %-52s ok  (%s)\n", d.n, title, round(took))
	for _, line := range strings.Split(strings.TrimRight(detail, "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(d.w, "      %s\n", line)
		}
	}
	return nil
}

func round(t time.Duration) time.Duration {
	if t > time.Second {
		return t.Round(10 * time.Millisecond)
	}
	return t.Round(10 * time.Microsecond)
}

// sampleAPI is an upstream that accepts only the real credential and
// remembers what it received, so the demo can show what reached it.
type sampleAPI struct {
	mu       sync.Mutex
	received []string
}

func (s *sampleAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.received = append(s.received, r.Method+" "+r.URL.Path+" auth="+r.Header.Get("Authorization"))
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+upstreamCredential {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"repository":"acme/app","deployments":3,"path":%q}`, r.URL.Path)
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func (d *demo) run(ctx context.Context, dataDir string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fmt.Fprintf(d.w, "mayfly demo: a CI job gets a just-in-time token, uses it, leaks it, and the leak is worthless.\n\n")

	var init *server.InitResult
	if err := d.step("init a data dir (keys, TLS CA, audit key, admin)", func() (s string, err error) {
		init, err = server.Init(ctx, server.InitOptions{DataDir: dataDir})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("data dir %s\nfirst admin token %s (shown once; stored only as a keyed hash)", dataDir, token.Hint(init.AdminToken)), nil
	}); err != nil {
		return err
	}

	// The sample upstream and the local CI issuer, on loopback.
	api := &sampleAPI{}
	apiLn, err := listen()
	if err != nil {
		return err
	}
	apiSrv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go apiSrv.Serve(apiLn)
	defer apiSrv.Close()
	issLn, err := listen()
	if err != nil {
		return err
	}
	issuerURL := "http://" + issLn.Addr().String()
	iss, err := devissuer.New(devissuer.Options{URL: issuerURL})
	if err != nil {
		return err
	}
	issSrv := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go issSrv.Serve(issLn)
	defer issSrv.Close()
	// A local GitHub: the App endpoints and a repository API.
	gh, err := githubtest.Start(githubtest.Options{Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app"}, Permissions: map[string]string{"contents": "write", "pull_requests": "write"}},
	}})
	if err != nil {
		return err
	}
	defer gh.Close()

	var base string
	var gwClient *http.Client
	var admin *client.Client
	var srv *server.Server
	if err := d.step("start the server (TLS, embedded SQLite)", func() (string, error) {
		addrFile := filepath.Join(filepath.Dir(dataDir), "addr")
		srv, err = server.New(ctx, server.Config{DataDir: dataDir, Listen: "127.0.0.1:0", AddrFile: addrFile},
			server.NewLogger(io.Discard, "text", "error"))
		if err != nil {
			return "", err
		}
		go srv.Serve(ctx)
		for i := 0; i < 500 && base == ""; i++ {
			b, _ := os.ReadFile(addrFile)
			base = strings.TrimSpace(string(b))
			time.Sleep(10 * time.Millisecond)
		}
		if base == "" {
			return "", fmt.Errorf("server did not start")
		}
		// The same client as the CLI's, trusting the data dir's CA; the
		// environment plays no part in the demo.
		noEnv := func(string) string { return "" }
		admin, err = client.New(client.Config{Addr: base, CACertFile: init.CAFile, Token: init.AdminToken, AdminToken: true,
			Timeout: 10 * time.Second, UserAgent: "mayfly-demo", Getenv: noEnv})
		if err != nil {
			return "", err
		}
		tlsCfg, err := client.TLSConfig(init.CAFile, "", "")
		if err != nil {
			return "", err
		}
		gwClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		return fmt.Sprintf("listening on %s\nlocal CI issuer %s, sample upstream API http://%s", base, issuerURL, apiLn.Addr()), nil
	}); err != nil {
		return err
	}
	defer srv.Close(context.Background())

	if err := d.step("store the upstream credential (encrypted at rest)", func() (string, error) {
		out, err := admin.PutSecret(ctx, "sample-api-token", []byte(upstreamCredential))
		if err != nil {
			return "", err
		}
		if _, err := admin.PutSecret(ctx, "gh-app-key", gh.PrivateKey); err != nil {
			return "", err
		}
		return fmt.Sprintf("secret sample-api-token version %d, and the GitHub App's private key gh-app-key; no endpoint returns a value", out.Version), nil
	}); err != nil {
		return err
	}
	policy := fmt.Sprintf(`issuers:
  local-ci:
    url: %s
    audience: %s
upstreams:
  sample:
    url: http://%s
    credential:
      secret: sample-api-token
      header: Authorization
      prefix: "Bearer "
grants:
  deploy:
    upstream: sample
    ttl: 5m
    max_ttl: 30m
    bind_source_ip: true
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
      - methods: [POST]
        paths: ["/repos/acme/app/deployments"]
    who:
      - issuer: local-ci
        claims:
          repository: acme/app
          ref: refs/heads/main
  release:
    upstream: github
    ttl: 5m
    deliver: job
    bind_source_ip: true
    github:
      repositories: [app]
      permissions: {contents: write}
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
    who:
      - issuer: local-ci
        claims:
          repository: acme/app
          ref: refs/heads/main
`, issuerURL, issuerURL, apiLn.Addr())
	policy = strings.Replace(policy, "grants:\n", fmt.Sprintf(`  github:
    url: %s
    credential:
      github_app: {app_id: "%s", private_key_secret: gh-app-key, owner: acme}
grants:
`, gh.URL, gh.AppID), 1)
	if err := d.step("apply the policy (a new audited version)", func() (string, error) {
		out, err := admin.ApplyPolicy(ctx, []byte(policy))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("policy version %d: grant deploy = GET /repos/acme/app/**, POST …/deployments, 5 min, bound to the job's address", out.Version), nil
	}); err != nil {
		return err
	}

	var jobToken string
	if err := d.step("the job exchanges its CI ID token (RFC 8693)", func() (string, error) {
		idt, err := iss.Mint(map[string]any{"repository": "acme/app", "ref": "refs/heads/main"}, issuerURL, 5*time.Minute)
		if err != nil {
			return "", err
		}
		out, _, err := admin.Exchange(ctx, client.ExchangeRequest{IDToken: idt, Grants: []string{"deploy"}})
		if err != nil {
			return "", err
		}
		jobToken = out.AccessToken
		return fmt.Sprintf("job token %s, lease %s, expires in %ds, scope %s", token.Hint(jobToken), out.LeaseID, out.ExpiresIn, out.Scope), nil
	}); err != nil {
		return err
	}
	gw := func(method, path string, want int) (map[string]any, error) {
		return call(gwClient, method, base+"/gw/sample"+path, "Bearer "+jobToken, "application/json", "{}", want)
	}
	if err := d.step("the job calls the API through the gateway", func() (string, error) {
		out, err := gw("GET", "/repos/acme/app/deployments", 200)
		if err != nil {
			return "", err
		}
		if _, err := gw("POST", "/repos/acme/app/deployments", 200); err != nil {
			return "", err
		}
		api.mu.Lock()
		last := api.received[len(api.received)-1]
		api.mu.Unlock()
		if strings.Contains(last, jobToken) {
			return "", fmt.Errorf("the upstream saw the job token")
		}
		return fmt.Sprintf("GET and POST allowed; upstream answered %v deployments\nthe upstream got the injected credential, never the job token", out["deployments"]), nil
	}); err != nil {
		return err
	}
	if err := d.step("out-of-scope calls are refused before the upstream", func() (string, error) {
		before := len(api.received)
		if _, err := gw("DELETE", "/repos/acme/app", 403); err != nil {
			return "", err
		}
		if _, err := gw("GET", "/repos/acme/other-app/secrets", 403); err != nil {
			return "", err
		}
		if _, err := gw("GET", "/repos/acme/app/%2e%2e/other-app", 400); err != nil {
			return "", err
		}
		if len(api.received) != before {
			return "", fmt.Errorf("a refused call reached the upstream")
		}
		return "DELETE → 403, another repository → 403, encoded traversal → 400; the upstream saw none", nil
	}); err != nil {
		return err
	}

	jobLog := fmt.Sprintf("#12 [deploy 3/5] RUN curl -H \"Authorization: Bearer %s\" https://api.example.com\n#12 DONE 0.4s\n", jobToken)
	if err := d.step("the job leaks its token; the scanner finds it", func() (string, error) {
		sc, err := scan.New(scan.Options{})
		if err != nil {
			return "", err
		}
		var found []string
		for _, f := range sc.ScanBytes("job.log", []byte(jobLog)) {
			if f.Rule == scan.RuleMayflyJob && f.Verified {
				found = append(found, f.Secret)
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("scanner found %d mayfly tokens, want 1", len(found))
		}
		out, err := admin.ReportLeaks(ctx, []byte(strings.Join(found, "\n")))
		if err != nil {
			return "", err
		}
		if len(out.Revoked) != 1 {
			return "", fmt.Errorf("leak report revoked %d tokens: %+v", len(out.Revoked), out)
		}
		return fmt.Sprintf("job.log:1 mayfly-job-token %s (checksum verified)\nPOST /v1/leaks → revoked %s before answering", token.Hint(found[0]), out.Revoked[0].LeaseID), nil
	}); err != nil {
		return err
	}
	if err := d.step("the leaked token is now worthless", func() (string, error) {
		before := len(api.received)
		out, err := gw("GET", "/repos/acme/app/deployments", 401)
		if err != nil {
			return "", err
		}
		if len(api.received) != before {
			return "", fmt.Errorf("the revoked token reached the upstream")
		}
		return fmt.Sprintf("gateway → 401 %v", out["error"]), nil
	}); err != nil {
		return err
	}
	var ghToken, ghLease string
	ghClient := &http.Client{Timeout: 10 * time.Second}
	if err := d.step("a job gets its own GitHub App token (deliver: job)", func() (string, error) {
		idt, err := iss.Mint(map[string]any{"repository": "acme/app", "ref": "refs/heads/main"}, issuerURL, 5*time.Minute)
		if err != nil {
			return "", err
		}
		out, _, err := admin.Exchange(ctx, client.ExchangeRequest{IDToken: idt, Grants: []string{"release"}})
		if err != nil {
			return "", err
		}
		c, ok := out.UpstreamCredentials["github"]
		if !ok || !gh.Live(c.Token) {
			return "", fmt.Errorf("no live GitHub token in the exchange")
		}
		ghToken, ghLease = c.Token, out.LeaseID
		if _, err := call(ghClient, "GET", gh.URL+"/repos/acme/app", "token "+ghToken, "", "", 200); err != nil {
			return "", err
		}
		return fmt.Sprintf("lease %s got installation token %s… (contents: write on acme/app only, until %s)\nthe job calls GitHub with it directly: 200", out.LeaseID, ghToken[:8], c.ExpiresAt), nil
	}); err != nil {
		return err
	}
	if err := d.step("that leaks too: lease revoked, GitHub token deleted", func() (string, error) {
		sc, err := scan.New(scan.Options{})
		if err != nil {
			return "", err
		}
		var found []string
		for _, f := range sc.ScanBytes("job.log", []byte("export GH_TOKEN="+ghToken+"\n")) {
			// GitHub's stateless tokens (its 2026 form, which the double
			// issues) have no checksum to verify: mayfly's keyed hash of
			// the tokens it minted decides.
			if f.Rule == scan.RuleGitHubAppToken {
				found = append(found, f.Secret)
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("scanner found %d GitHub App tokens, want 1", len(found))
		}
		out, err := admin.ReportLeaks(ctx, []byte(found[0]))
		if err != nil {
			return "", err
		}
		if len(out.Revoked) != 1 || out.Revoked[0].LeaseID != ghLease {
			return "", fmt.Errorf("leak report revoked %+v", out)
		}
		for i := 0; i < 200 && gh.Live(ghToken); i++ {
			time.Sleep(25 * time.Millisecond)
		}
		if gh.Live(ghToken) {
			return "", fmt.Errorf("the token still works at GitHub")
		}
		if _, err := call(ghClient, "GET", gh.URL+"/repos/acme/app", "token "+ghToken, "", "", 401); err != nil {
			return "", err
		}
		return fmt.Sprintf("job.log:1 github-app-token %s… found by mayfly's keyed hash → lease %s revoked\nDELETE /installation/token confirmed; GitHub now answers 401", ghToken[:8], ghLease), nil
	}); err != nil {
		return err
	}
	return d.step("verify the tamper-evident audit log", func() (string, error) {
		time.Sleep(1100 * time.Millisecond) // one checkpoint interval, so the last entries are signed
		key, err := admin.AuditKey(ctx)
		if err != nil {
			return "", err
		}
		cp, err := admin.AuditCheckpoint(ctx)
		if err != nil {
			return "", err
		}
		size, _, err := audit.ParseCheckpoint(cp, key)
		if err != nil {
			return "", err
		}
		entries, err := admin.AuditEntries(ctx, 0, int(size), audit.MaxLineSize)
		if err != nil {
			return "", err
		}
		res, err := audit.VerifyStream(ctx, bytes.NewReader(entries), cp, key, audit.VerifyOptions{})
		if err != nil {
			return "", err
		}
		if res.FirstBad >= 0 {
			return "", fmt.Errorf("audit log broken at index %d: %s", res.FirstBad, res.Reason)
		}
		var types []string
		seen := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(string(entries)), "\n") {
			var e struct{ Type string }
			json.Unmarshal([]byte(line), &e)
			if !seen[e.Type] {
				seen[e.Type] = true
				types = append(types, e.Type)
			}
		}
		return fmt.Sprintf("%d entries recomputed into the signed Merkle root: intact\nrecorded: %s\ndone in %s", res.Size, strings.Join(types, ", "), round(time.Since(d.start))), nil
	})
}

func call(c *http.Client, method, u, auth, ctype, body string, want int) (map[string]any, error) {
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out map[string]any
	json.Unmarshal(b, &out)
	if resp.StatusCode != want {
		return out, fmt.Errorf("%s %s: status %d, want %d: %s", method, redactURL(u), resp.StatusCode, want, strings.TrimSpace(string(b)))
	}
	return out, nil
}

func redactURL(u string) string {
	if i := strings.Index(u, "/gw/"); i >= 0 {
		return u[i:]
	}
	if i := strings.Index(u, "/v1/"); i >= 0 {
		return u[i:]
	}
	return u
}
