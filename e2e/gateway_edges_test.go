package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Through the real server: an upstream's redirect to its own URL keeps a
// following client in the gateway (before, Go's client took the job's
// mayfly token straight to the upstream: same host name); an upstream's
// Basic challenge is not passed on as mayfly's; and a stream a policy
// apply no longer allows is cut, though its grant and token stay.
func TestGatewayResponseAndLifetimeEdges(t *testing.T) {
	const cred = "edges-upstream-credential-0123456789" // mayfly:allow
	release := make(chan struct{})
	var mu sync.Mutex
	var auths []string
	var upURL string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		switch r.URL.Path {
		case "/r/moved":
			http.Redirect(w, r, upURL+"/r/target?x=1", http.StatusFound)
		case "/r/target":
			io.WriteString(w, "target reached")
		case "/r/auth":
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "/r/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, "data: two\n\n")
		}
	}))
	t.Cleanup(up.Close)
	upURL = up.URL
	n := initDir(t)
	n.start(t)
	tok, _ := n.gatewayJob(t, "api", up.URL, cred, "calls", `
      - methods: [GET]
        paths: ["/r/**"]
`)
	c := n.client(t)
	get := func(path string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest("GET", n.url+"/gw/api"+path, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp
	}

	// 1. The redirect is followed through the gateway.
	resp := get("/r/moved")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "target reached" || resp.Request.URL.String() != n.url+"/gw/api/r/target?x=1" {
		t.Fatalf("followed redirect: %d %q at %s", resp.StatusCode, body, resp.Request.URL)
	}
	mu.Lock()
	for _, a := range auths {
		if a != "Bearer "+cred {
			t.Errorf("the upstream was sent Authorization %q, not the injected credential", a)
		}
	}
	mu.Unlock()

	// 2. The upstream's challenge is not mayfly's.
	resp = get("/r/auth")
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" || resp.Header.Get("X-Upstream-WWW-Authenticate") != `Basic realm="upstream"` {
		t.Fatalf("upstream 401: %d %v", resp.StatusCode, resp.Header)
	}

	// 3. A policy apply that narrows the grant ends the stream it no
	// longer allows.
	stream := get("/r/stream")
	defer stream.Body.Close()
	first := make([]byte, len("data: one"))
	if _, err := io.ReadFull(stream.Body, first); err != nil {
		t.Fatalf("stream: %v", err)
	}
	code, src := n.req(t, c, "GET", "/v1/policy", "")
	if code != 200 || !strings.Contains(src, `paths: ["/r/**"]`) {
		t.Fatalf("GET /v1/policy: %d %s", code, src)
	}
	if code, out := n.req(t, c, "PUT", "/v1/policy", strings.Replace(src, `paths: ["/r/**"]`, `paths: ["/r/moved", "/r/target"]`, 1)); code != 200 {
		t.Fatalf("PUT /v1/policy: %d %s", code, out)
	}
	rest := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream.Body)
		rest <- err
	}()
	select {
	case err := <-rest:
		if err == nil {
			t.Fatal("the stream ran to its end under a policy that no longer allows it")
		}
	case <-time.After(3 * time.Second):
		close(release)
		t.Fatalf("3 s after the policy apply, the stream was still open (%v)", <-rest)
	}
	if resp := get("/r/target"); resp.StatusCode != 200 {
		t.Fatalf("the token itself must live on: %d", resp.StatusCode)
	}
}
