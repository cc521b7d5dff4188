package e2e

import (
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

// SPEC section 5: `git clone https://x:$MAYFLY_TOKEN@host/gw/…` works
// unchanged. The upstream is a real git smart-HTTP server (git
// http-backend); it must get the injected credential, never the job token.
func TestGitCloneThroughGateway(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	// A repository with one commit, served by git http-backend.
	root := t.TempDir()
	src := filepath.Join(root, "src")
	gitRun := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(gitBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	os.MkdirAll(src, 0o755)
	gitRun(src, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(src, "README"), []byte("hello from the upstream\n"), 0o644)
	gitRun(src, "add", ".")
	gitRun(src, "commit", "-q", "-m", "first")
	gitRun(root, "clone", "-q", "--bare", src, filepath.Join(root, "repos", "app.git"))

	var mu sync.Mutex
	var seen []string
	backend := &cgi.Handler{Path: gitBin, Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Join(root, "repos"), "GIT_HTTP_EXPORT_ALL=1"}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer git-upstream-credential-42" {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)

	n := initDir(t)
	n.start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	issSrv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: iss.Handler()}}
	issSrv.Start()
	t.Cleanup(issSrv.Close)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte(`issuers:
  dev:
    url: `+iss.URL()+`
    audience: `+n.url+`
upstreams:
  git:
    url: `+up.URL+`
    credential:
      secret: git-token
      prefix: "Bearer "
grants:
  clone:
    upstream: git
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/app.git/info/refs"]
      - methods: [POST]
        paths: ["/app.git/git-upload-pack"]
    who:
      - issuer: dev
        claims:
          repository: acme/app
`), 0o600)
	if _, e, code := run(t, env, "git-upstream-credential-42\n", "secret", "put", "git-token"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	if _, e, code := run(t, env, "", "policy", "apply", policy); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	idt, err := iss.Mint(nil, n.url, 0)
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "id")
	os.WriteFile(idFile, []byte(idt), 0o600)
	jobEnv := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN="}
	out, e, code := run(t, jobEnv, "", "login", "--grant", "clone", "--id-token-file", idFile)
	tok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(tok, "mfy_") {
		t.Fatalf("login: %d %s", code, e)
	}

	clone := func(dest string) (string, error) {
		u := strings.Replace(n.url, "https://", "https://x:"+tok+"@", 1) + "/gw/git/app.git"
		cmd := exec.Command(gitBin, "clone", "-q", u, dest)
		cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+filepath.Join(n.dir, "ca.pem"), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=true")
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	dest := filepath.Join(t.TempDir(), "app")
	if out, err := clone(dest); err != nil {
		t.Fatalf("git clone through the gateway: %v\n%s", err, strings.ReplaceAll(out, tok, "<token>"))
	}
	if b, err := os.ReadFile(filepath.Join(dest, "README")); err != nil || !strings.Contains(string(b), "hello from the upstream") {
		t.Fatalf("cloned content: %q %v", b, err)
	}
	mu.Lock()
	for _, a := range seen {
		if strings.Contains(a, tok) {
			t.Fatal("the upstream saw the job token")
		}
	}
	mu.Unlock()
	// Revoked: the same clone URL no longer works.
	run(t, jobEnv, "", "scan", "--stdin", "--revoke")
	if _, e, code := run(t, jobEnv, "leaked: "+tok+"\n", "scan", "--stdin", "--revoke"); code != 1 {
		t.Fatalf("scan --revoke: %d %s", code, e)
	}
	if _, err := clone(filepath.Join(t.TempDir(), "again")); err == nil {
		t.Fatal("clone with a revoked token succeeded")
	}
}
