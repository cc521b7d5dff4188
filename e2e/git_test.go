package e2e

import (
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
	tok, jobEnv := n.gatewayJob(t, "git", up.URL, "git-upstream-credential-42", "clone", `
      - methods: [GET]
        paths: ["/app.git/info/refs"]
      - methods: [POST]
        paths: ["/app.git/git-upload-pack"]
`)

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
