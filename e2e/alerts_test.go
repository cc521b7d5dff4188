package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/alert"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// alertReceiver is a webhook on 127.0.0.1 that refuses its first delivery
// (503), so the server must retry, then keeps what it is sent.
type alertReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	posts int
	got   chan alertPost
}

type alertPost struct {
	body []byte
	hdr  http.Header
}

func newAlertReceiver(t *testing.T) *alertReceiver {
	rc := &alertReceiver{got: make(chan alertPost, 100)}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rc.mu.Lock()
		rc.posts++
		first := rc.posts == 1
		rc.mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rc.got <- alertPost{b, r.Header.Clone()}
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// TestLeakReportRaisesSignedAlert: a leak report that revokes a job token
// makes the real server deliver a signed alert, after a refused first
// attempt, naming the audit entry of the report, and no alert or log line
// holds the token, the upstream credential, the admin token or the key.
func TestLeakReportRaisesSignedAlert(t *testing.T) {
	rc := newAlertReceiver(t)
	kb := make([]byte, 32)
	rand.Read(kb)
	key := hex.EncodeToString(kb)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "alert.key")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`alerts:
  initial_backoff: 50ms
  targets:
    - name: soc
      url: %s/hook
      format: json
      hmac_key_file: %s
  rules:
    - rule: leak_revoked
    - rule: mass_revocation
      threshold: 5
    - rule: binding_mismatch
`, rc.srv.URL, keyFile)), 0o600)

	n := initDir(t)
	n.start(t, "--config", cfg)
	w := &aiWorld{n: n, c: n.client(t), is: newAIIssuer(t), up: newAIUpstream(t)}
	u, _ := url.Parse(n.url)
	w.port = u.Port()
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	if _, e, code := run(t, env, aiCred+"\n", "secret", "put", "ai-cred"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte(fmt.Sprintf(aiPolicy, w.is.srv.URL, n.url, w.up.srv.URL)), 0o600)
	if _, e, code := run(t, env, "", "policy", "apply", pol); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}

	tok := w.mustExchange(t, w.is.mint(t, n.url, nil), "pinned")
	code, body := n.req(t, w.c, "POST", "/v1/leaks", "pasted in a build log: "+tok+"\n")
	if code != 200 || !strings.Contains(body, `"revoked"`) {
		t.Fatalf("leak report: %d %s", code, body)
	}

	var p alertPost
	select {
	case p = <-rc.got:
	case <-time.After(60 * time.Second): // a bound on a hang, not a timing check
		t.Fatal("no alert delivered")
	}
	if err := alert.Verify([]byte(key), p.hdr.Get(alert.HeaderTimestamp), p.hdr.Get(alert.HeaderSignature), p.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("alert signature: %v\n%s", err, p.body)
	}
	if err := alert.Verify([]byte("another key of 32 bytes........."), p.hdr.Get(alert.HeaderTimestamp), p.hdr.Get(alert.HeaderSignature), p.body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("the signature verifies under another key")
	}
	var a alert.Alert
	if err := json.Unmarshal(p.body, &a); err != nil {
		t.Fatal(err)
	}
	if a.Rule != alert.RuleLeakRevoked || a.AuditIndex == nil || a.Event == nil || a.Event.Count != 1 || len(a.Event.Leases) != 1 {
		t.Fatalf("alert: %s", p.body)
	}
	rc.mu.Lock()
	if rc.posts < 2 {
		t.Fatalf("delivered in %d posts; the first was refused, so want a retry", rc.posts)
	}
	rc.mu.Unlock()

	// The index is the leak report's own audit entry.
	code, entries := n.req(t, w.c, "GET", fmt.Sprintf("/v1/audit/entries?start=%d&limit=1", *a.AuditIndex), "")
	if code != 200 {
		t.Fatalf("audit entries: %d %s", code, entries)
	}
	ent, err := audit.ParseEntry([]byte(strings.TrimSpace(entries)))
	if err != nil || ent.Index != *a.AuditIndex || ent.Type != audit.TypeLeak {
		t.Fatalf("entry %d is %s (%v), want the leak report", *a.AuditIndex, entries, err)
	}

	// A DPoP-bound token presented without a proof of its key.
	dkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	proof, err := dpop.NewProof(dkey, "POST", n.url+"/v1/token", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	code, out := w.exchange(t, w.is.mint(t, n.url, nil), "pinned", "", proof)
	bound, _ := out["access_token"].(string)
	if code != 200 || out["token_type"] != "DPoP" {
		t.Fatalf("bound exchange: %d %v", code, out)
	}
	if code, reached := w.gw(t, "", map[string]string{"Authorization": "DPoP " + bound}); code != 401 || reached {
		t.Fatalf("bound token without proof: %d, reached %v", code, reached)
	}
	select {
	case p = <-rc.got:
	case <-time.After(60 * time.Second):
		t.Fatal("no binding_mismatch alert delivered")
	}
	a = alert.Alert{}
	if err := json.Unmarshal(p.body, &a); err != nil || a.Rule != alert.RuleBindingMismatch || a.AuditIndex == nil || a.Event.Check != "dpop" {
		t.Fatalf("alert %s (%v), want binding_mismatch", p.body, err)
	}
	if strings.Contains(string(p.body), bound) {
		t.Fatal("the alert carries the bound token")
	}

	// Stop the server before reading its log (written by exec's copier).
	n.cmd.Process.Kill()
	n.cmd.Wait()
	for name, planted := range map[string]string{"job token": tok, "upstream credential": aiCred, "admin token": n.admin, "hmac key": key} {
		if strings.Contains(string(p.body), planted) || strings.Contains(fmt.Sprint(p.hdr), planted) {
			t.Fatalf("the alert carries the %s", name)
		}
		if name == "hmac key" && strings.Contains(n.logs.String(), planted) {
			t.Fatalf("the server log holds the %s", name)
		}
	}
}

// Several nodes on one database send each alert once: one node at a time
// reads the shared log for alerts, whichever node the leak was reported to.
func TestClusterAlertsOnce(t *testing.T) {
	rc := newAlertReceiver(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(up.Close)
	c := startClusterWith(t, storetest.FreshSchema(t, storetest.PostgresDSN(t)), 2, up.URL, fmt.Sprintf(`alerts:
  initial_backoff: 50ms
  targets:
    - name: soc
      url: %s/hook
      format: slack
  rules:
    - rule: leak_revoked
`, rc.srv.URL))
	ids := map[string]int{}
	for i, n := range c.nodes {
		hc := n.client(t)
		code, tok := c.exchange(t, hc, n, "calls")
		if code != 200 {
			t.Fatalf("exchange at node %d: %d", i, code)
		}
		if code, body := n.req(t, hc, "POST", "/v1/leaks", tok+"\n"); code != 200 || !strings.Contains(body, `"lease_id"`) {
			t.Fatalf("leak report at node %d: %d %s", i, code, body)
		}
		select {
		case p := <-rc.got:
			ids[p.hdr.Get(alert.HeaderAlertID)]++
		case <-time.After(60 * time.Second): // a bound on a hang, not a timing check
			t.Fatalf("no alert for the leak reported at node %d", i)
		}
	}
	// Both nodes poll the log every second: had both sent, the second
	// copies would be here by now.
	time.Sleep(3 * time.Second)
	for len(rc.got) > 0 {
		p := <-rc.got
		ids[p.hdr.Get(alert.HeaderAlertID)]++
	}
	if len(ids) != 2 {
		t.Fatalf("alerts by id: %v, want two distinct", ids)
	}
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("alert %s sent %d times", id, n)
		}
	}
}
