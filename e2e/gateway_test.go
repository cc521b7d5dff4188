package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// gatewayJob prepares node n for gateway calls the way a pipeline would:
// a dev issuer; a policy with one upstream (named up, at upURL, its
// credential stored as the secret up-token) and one grant for the dev
// issuer's job (repository acme/app) whose allow rules are allowYAML (list
// items indented by six spaces); and a job token for that grant from
// `mayfly login`. It returns the token and the environment a job's mayfly
// commands run with.
func (n *node) gatewayJob(t *testing.T, up, upURL, credential, grant, allowYAML string) (string, []string) {
	t.Helper()
	iss := devissuertest.Start(t)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte(`issuers:
  dev:
    url: `+iss.URL()+`
    audience: `+n.url+`
upstreams:
  `+up+`:
    url: `+upURL+`
    credential:
      secret: `+up+`-token
      prefix: "Bearer "
grants:
  `+grant+`:
    upstream: `+up+`
    ttl: 5m
    allow:
`+strings.Trim(allowYAML, "\n")+`
    who: [{issuer: dev, claims: {repository: acme/app}}]
`), 0o600)
	if _, e, code := run(t, env, credential+"\n", "secret", "put", up+"-token"); code != 0 {
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
	out, e, code := run(t, jobEnv, "", "login", "--grant", grant, "--id-token-file", idFile)
	tok := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(tok, "mfy_") {
		t.Fatalf("login: %d %s", code, e)
	}
	return tok, jobEnv
}

// A kill -9 of the server at any moment never leaves a request that reached
// the upstream without its gateway.request entry (the gateway waits for the
// entry to be written before forwarding), and the log verifies afterwards.
func TestKillNineDuringGatewayTraffic(t *testing.T) {
	var mu sync.Mutex
	reached := map[string]bool{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached[r.URL.Path] = true
		mu.Unlock()
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	n := initDir(t)
	n.start(t)
	tok, _ := n.gatewayJob(t, "api", up.URL, "api-upstream-credential-0123456789", "calls", `
      - methods: [GET]
        paths: ["/r/**"]
`)
	c := n.client(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, _ := http.NewRequest("GET", fmt.Sprintf("%s/gw/api/r/%d-%d", n.url, w, i), nil)
				r.Header.Set("Authorization", "Bearer "+tok)
				resp, err := c.Do(r)
				if err != nil {
					return // the server was killed
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
	close(stop)
	wg.Wait()

	// What the store holds at the kill; the journal holds the rest, and
	// the next start folds it in.
	before := gatewayPaths(t, n.dir)
	n.start(t)
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
	if !strings.Contains(n.logs.String(), "folded in") && len(before) < len(reached) {
		t.Logf("restart logs: %s", n.logs)
	}
	_, size := openVerified(t, n.dir)
	recorded := gatewayPaths(t, n.dir)
	mu.Lock()
	defer mu.Unlock()
	if len(reached) < 50 {
		t.Fatalf("only %d requests reached the upstream before the kill", len(reached))
	}
	for p := range reached {
		if recorded[p] == 0 {
			t.Errorf("request %s reached the upstream but has no gateway.request entry", p)
		}
	}
	for p, n := range recorded {
		if n > 1 {
			t.Errorf("request %s has %d gateway.request entries, want one", p, n)
		}
	}
	t.Logf("%d of %d forwarded requests' entries were in the store at the kill, the rest in the journal", len(before), len(reached))
	t.Logf("%d forwarded requests; audit verified at size %d", len(reached), size)
}

// gatewayPaths returns the paths of the gateway.request entries of the
// data dir's audit log, read straight from the store.
func gatewayPaths(t *testing.T, dir string) map[string]int {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{Path: filepath.Join(dir, "mayfly.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recorded := map[string]int{}
	for start := int64(0); ; {
		es, err := db.AuditEntries(context.Background(), start, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return recorded
		}
		for _, raw := range es {
			e, err := audit.ParseEntry(raw)
			if err != nil {
				t.Fatalf("entry %d: %v", start, err)
			}
			// One entry per request (the decision, with its outcome when
			// the request finished before the kill).
			if e.Type == audit.TypeGateway && e.Upstream == "api" {
				recorded[e.Path]++
			}
		}
		start += int64(len(es))
	}
}
