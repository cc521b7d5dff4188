package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// cluster is several mayfly nodes (real binaries) on one PostgreSQL schema.
type cluster struct {
	dsn   string
	nodes []*node
	iss   *devissuer.Issuer
	aud   string
}

const clusterAudience = "https://mayfly.cluster.test"

// initPostgres runs init for the first node of a cluster.
func initPostgres(t *testing.T, dsn string) *node {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "node0")
	out, errOut, code := run(t, nil, "", "init", "--data-dir", dir, "--postgres", dsn, "--json")
	if code != 0 {
		t.Fatalf("init: %d %s", code, errOut)
	}
	var res struct {
		AdminToken string `json:"admin_token"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	return &node{dir: dir, admin: res.AdminToken}
}

// joinArgs are the init --join arguments taking from's keys from files.
func joinArgs(dir, dsn string, from *node) []string {
	return []string{"init", "--join", "--data-dir", dir, "--postgres", dsn, "--json",
		"--master-key-file", filepath.Join(from.dir, "master.key"), "--audit-key-file", filepath.Join(from.dir, "audit.key"),
		"--ca-cert", filepath.Join(from.dir, "ca.pem"), "--ca-key", filepath.Join(from.dir, "ca-key.pem")}
}

// startCluster initialises n nodes on a fresh schema (the first by init,
// the others by init --join), starts them with generous rate limits, and
// applies a policy with grants "calls" (GET /r/** on upstream api) and
// "mass" for a loopback issuer.
func startCluster(t *testing.T, n int, upURL string) *cluster {
	t.Helper()
	return startClusterOn(t, storetest.FreshSchema(t, storetest.PostgresDSN(t)), n, upURL)
}

// startClusterOn is startCluster on the database dsn.
func startClusterOn(t *testing.T, dsn string, n int, upURL string) *cluster {
	t.Helper()
	return startClusterWith(t, dsn, n, upURL, "")
}

// startClusterWith is startClusterOn with more server config (YAML) for
// every node.
func startClusterWith(t *testing.T, dsn string, n int, upURL, extraConfig string) *cluster {
	t.Helper()
	c := &cluster{dsn: dsn, iss: devissuertest.Start(t), aud: clusterAudience}
	first := initPostgres(t, dsn)
	c.nodes = append(c.nodes, first)
	for i := 1; i < n; i++ {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i))
		if _, e, code := run(t, nil, "", joinArgs(dir, dsn, first)...); code != 0 {
			t.Fatalf("join node %d: %d %s", i, code, e)
		}
		c.nodes = append(c.nodes, &node{dir: dir, admin: first.admin})
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte("limits:\n  token_rate: 100000\n  token_burst: 100000\n  issuer_rate: 100000\n  leak_rate: 100000\n"+extraConfig), 0o600)
	for _, nd := range c.nodes {
		nd.start(t, "--postgres", dsn, "--config", cfg, "--postgres-max-conns", "8")
	}
	env := c.env(first)
	if _, e, code := run(t, env, "upstream-credential-0123456789\n", "secret", "put", "api-token"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, []byte(c.policy(upURL, "calls", "mass")), 0o600)
	if _, e, code := run(t, env, "", "policy", "apply", policy); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	// Every node follows the version (within its 2 s sync).
	for _, nd := range c.nodes {
		c.waitFor(t, "the policy on "+nd.url, func() bool {
			code, body := nd.req(t, nd.client(t), "GET", "/v1/policy", "")
			return code == 200 && strings.Contains(body, "mass")
		})
	}
	return c
}

func (c *cluster) env(n *node) []string {
	return []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
}

func (c *cluster) policy(upURL string, grants ...string) string {
	var b strings.Builder
	b.WriteString("issuers:\n  dev:\n    url: " + c.iss.URL() + "\n    audience: " + c.aud + "\nupstreams:\n  api:\n    url: " + upURL +
		"\n    credential:\n      secret: api-token\n      prefix: \"Bearer \"\ngrants:\n")
	for _, g := range grants {
		b.WriteString("  " + g + ":\n    upstream: api\n    ttl: 10m\n    allow:\n      - methods: [GET]\n        paths: [\"/r/**\"]\n" +
			"    who: [{issuer: dev, claims: {repository: acme/app}}]\n")
	}
	return b.String()
}

func (c *cluster) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 20 s", what)
		}
	}
}

// exchange trades a fresh ID token for a job token of grant at node n.
func (c *cluster) exchange(t *testing.T, hc *http.Client, n *node, grant string) (int, string) {
	idt, err := c.iss.Mint(nil, c.aud, 0)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {grant}}
	resp, err := hc.PostForm(n.url+"/v1/token", form)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out.AccessToken
}

// active asks node n (its in-memory view) whether tok is live.
func active(t *testing.T, hc *http.Client, n *node, tok string) bool {
	r, _ := http.NewRequest("POST", n.url+"/v1/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	r.Header.Set("Authorization", "Bearer "+n.admin)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(r)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("introspect: %d %s", resp.StatusCode, body)
	}
	return strings.Contains(string(body), `"active":true`)
}

func revoke(hc *http.Client, n *node, tok string) int {
	resp, err := hc.PostForm(n.url+"/v1/revoke", url.Values{"token": {tok}})
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Adding a node: init --join with the cluster's keys from files or the
// environment works; keys that do not open the database are refused and
// nothing is written; a server whose audit key is not the log's does not
// start.
func TestClusterJoin(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	first := initPostgres(t, dsn)
	other := initDir(t) // another installation: other keys

	// A second init on the same database is refused.
	if _, e, code := run(t, nil, "", "init", "--data-dir", filepath.Join(t.TempDir(), "x"), "--postgres", dsn); code != 1 || !strings.Contains(e, "--join") {
		t.Fatalf("second init: %d %s", code, e)
	}
	mixes := []struct {
		name          string
		master, audit string // the node whose key is used
	}{
		{"wrong master key", "other", "first"},
		{"wrong audit key", "first", "other"},
		{"both wrong", "other", "other"},
	}
	for _, m := range mixes {
		t.Run(m.name, func(t *testing.T) {
			pick := map[string]*node{"first": first, "other": other}
			dir := filepath.Join(t.TempDir(), "node")
			args := joinArgs(dir, dsn, first)
			args[slices.Index(args, "--master-key-file")+1] = filepath.Join(pick[m.master].dir, "master.key")
			args[slices.Index(args, "--audit-key-file")+1] = filepath.Join(pick[m.audit].dir, "audit.key")
			_, e, code := run(t, nil, "", args...)
			if code != 1 || !strings.Contains(e, "keys do not match") || strings.Contains(e, "PRIVATE+KEY") {
				t.Fatalf("join with %s: exit %d %q", m.name, code, e)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("refused join left %s: %v", dir, err)
			}
		})
	}

	// From the environment.
	mk, _ := os.ReadFile(filepath.Join(first.dir, "master.key"))
	ak, _ := os.ReadFile(filepath.Join(first.dir, "audit.key"))
	dir := filepath.Join(t.TempDir(), "node-env")
	env := []string{"MAYFLY_MASTER_KEY=" + strings.TrimSpace(string(mk)), "MAYFLY_AUDIT_KEY=" + strings.TrimSpace(string(ak))}
	out, e, code := run(t, env, "", "init", "--join", "--data-dir", dir, "--postgres", dsn, "--json",
		"--ca-cert", filepath.Join(first.dir, "ca.pem"), "--ca-key", filepath.Join(first.dir, "ca-key.pem"))
	if code != 0 || !strings.Contains(out, `"joined":true`) {
		t.Fatalf("join from the environment: %d %s %s", code, out, e)
	}
	if _, err := os.Stat(filepath.Join(dir, "master.key")); !os.IsNotExist(err) {
		t.Fatal("a master key given in the environment was written to disk")
	}
	if _, _, code := run(t, env, "", "init", "--join", "--data-dir", dir, "--postgres", dsn,
		"--ca-cert", filepath.Join(first.dir, "ca.pem"), "--ca-key", filepath.Join(first.dir, "ca-key.pem")); code != 1 {
		t.Fatalf("second join into the same dir: exit %d", code)
	}

	// From files; the two nodes serve one cluster.
	second := &node{dir: filepath.Join(t.TempDir(), "node-files"), admin: first.admin}
	if _, e, code := run(t, nil, "", joinArgs(second.dir, dsn, first)...); code != 0 {
		t.Fatalf("join: %d %s", code, e)
	}
	first.start(t, "--postgres", dsn)
	second.start(t, "--postgres", dsn)
	hc := first.client(t) // the cluster's CA: the joined node's certificate verifies
	if code, body := second.req(t, hc, "PUT", "/v1/secrets/shared", `{"value":"shared-value-0123456789"}`); code != 200 {
		t.Fatalf("write on the joined node: %d %s", code, body)
	}
	if code, body := first.req(t, hc, "GET", "/v1/secrets/shared", ""); code != 200 {
		t.Fatalf("read on the first node: %d %s", code, body)
	}
	envNode := &node{dir: dir, admin: first.admin}
	t.Setenv("MAYFLY_MASTER_KEY", strings.TrimSpace(string(mk)))
	envNode.start(t, "--postgres", dsn)
	if code, body := envNode.req(t, hc, "GET", "/readyz", ""); code != 200 {
		t.Fatalf("node with its master key in the environment: %d %s", code, body)
	}

	// A node whose audit key was swapped for another does not start.
	bad := filepath.Join(t.TempDir(), "node-bad")
	if _, e, code := run(t, nil, "", joinArgs(bad, dsn, first)...); code != 0 {
		t.Fatalf("join: %s", e)
	}
	os.Remove(filepath.Join(bad, "audit.key"))
	b, _ := os.ReadFile(filepath.Join(other.dir, "audit.key"))
	os.WriteFile(filepath.Join(bad, "audit.key"), b, 0o600)
	_, e, code = run(t, []string{"MAYFLY_MASTER_KEY="}, "", "server", "--data-dir", bad, "--postgres", dsn, "--listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(e, "keys do not match") {
		t.Fatalf("server with another audit key: exit %d %q", code, e)
	}
}

// Three nodes: revocations reach the other nodes' views (pushed, with
// polling as the safety net), including while a mass revocation of
// 50,000 leases runs on one node and after it; tokens issued on one node
// are known to the others. The figures are logged (bench/cluster reports
// them); the test requires every revocation to arrive within the SPEC's
// 1 s with a large slack.
func TestClusterRevocationPropagation(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(up.Close)
	c := startCluster(t, 3, up.URL)
	a, b, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	hc := a.client(t)

	// Leases of the mass grant, written straight into the database as
	// issued long ago by a node that is gone.
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const mass = 50000
	now := time.Now()
	if _, err := db.Exec(`INSERT INTO leases (id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoke_reason)
		SELECT 'lse_' || lpad(to_hex(i), 24, '0'), sha256(i::text::bytea), 'dev', 'repo:acme/app', 'job-' || i, '{}', 'mass', $1, $2, $2, '', 0, '', 0, 0, ''
		FROM generate_series(1, $3) AS i`, now.UnixNano(), now.Add(time.Hour).UnixNano(), mass); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO lease_events (lease_id, kind, origin) SELECT 'lse_' || lpad(to_hex(i), 24, '0'), 'issue', 'gone' FROM generate_series(1, $1) AS i`, mass); err != nil {
		t.Fatal(err)
	}

	var toks []string
	for range 60 {
		code, tok := c.exchange(t, hc, b, "calls")
		if code != 200 {
			t.Fatalf("exchange: %d", code)
		}
		toks = append(toks, tok)
	}
	for _, tok := range toks {
		c.waitFor(t, "a token issued on another node", func() bool { return active(t, hc, n3, tok) })
	}
	measure := func(tok string) time.Duration {
		for {
			if code := revoke(hc, b, tok); code == 200 {
				break
			} else if code != 503 {
				t.Fatalf("revoke: %d", code)
			}
		}
		start := time.Now()
		c.waitFor(t, "a revocation", func() bool { return !active(t, hc, n3, tok) && !active(t, hc, a, tok) })
		return time.Since(start)
	}
	var quiet []time.Duration
	for _, tok := range toks[:20] {
		quiet = append(quiet, measure(tok))
	}
	// A mass revocation on node A; single revocations on node B meanwhile.
	massDone := make(chan int, 1)
	massStart := time.Now()
	go func() {
		slow := a.client(t)
		slow.Timeout = 5 * time.Minute
		code, body := a.req(t, slow, "POST", "/v1/leases/revoke", `{"grant":"mass"}`)
		if code != 200 {
			t.Logf("mass revocation: %d %s", code, body)
		}
		massDone <- code
	}()
	var during []time.Duration
	for _, tok := range toks[20:40] {
		during = append(during, measure(tok))
	}
	if code := <-massDone; code != 200 {
		t.Fatalf("mass revocation: %d", code)
	}
	t.Logf("mass revocation of %d leases took %v", mass, time.Since(massStart))
	var after []time.Duration
	for _, tok := range toks[40:] {
		after = append(after, measure(tok))
	}
	// The SPEC's bound is 1 s; five times that leaves room for a loaded
	// machine (bench/cluster measures the figures: p99 in milliseconds).
	const bound = 5 * time.Second
	for name, ds := range map[string][]time.Duration{"quiet": quiet, "during a mass revocation": during, "after it": after} {
		slices.Sort(ds)
		t.Logf("revocation reaching two other nodes, %s: p50 %v, max %v (n=%d)", name, ds[len(ds)/2], ds[len(ds)-1], len(ds))
		if ds[len(ds)-1] > bound {
			t.Errorf("a revocation %s took %v to reach the other nodes (bound %v)", name, ds[len(ds)-1], bound)
		}
	}
	// The mass revocation reached the other nodes too.
	var revoked int
	if err := db.QueryRow(`SELECT COUNT(*) FROM leases WHERE grants = 'mass' AND revoked_at IS NOT NULL`).Scan(&revoked); err != nil || revoked != mass {
		t.Fatalf("mass revocation revoked %d: %v", revoked, err)
	}
}

// Three nodes under concurrent exchanges and gateway calls, each job
// calling through a node other than the one that issued its token:
// no 5xx at all, and every token works on every node.
func TestClusterUnderLoad(t *testing.T) {
	storetest.PostgresDSN(t)
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	c := startCluster(t, 3, up.URL)
	hc := c.nodes[0].client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	var mu sync.Mutex
	statuses := map[string]map[int]int{"exchange": {}, "gateway": {}, "gateway-401-retried": {}}
	count := func(kind string, code int) {
		mu.Lock()
		statuses[kind][code]++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				issuer := c.nodes[(w+i)%3]
				code, tok := c.exchange(t, hc, issuer, "calls")
				count("exchange", code)
				if code != 200 {
					continue
				}
				user := c.nodes[(w+i+1)%3]
				for j := 0; j < 5 && ctx.Err() == nil; j++ {
					r, _ := http.NewRequest("GET", fmt.Sprintf("%s/gw/api/r/%d/%d/%d", user.url, w, i, j), nil)
					r.Header.Set("Authorization", "Bearer "+tok)
					resp, err := hc.Do(r)
					if err != nil {
						count("gateway", 0)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 401 && j == 0 {
						// Not yet known on that node: it follows within
						// milliseconds; the first call may race it.
						time.Sleep(20 * time.Millisecond)
						j--
						count("gateway-401-retried", 401)
						continue
					}
					count("gateway", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("statuses: %v; upstream calls %d", statuses, calls.Load())
	for kind, m := range statuses {
		for code, n := range m {
			if code != 200 && kind != "gateway-401-retried" {
				t.Errorf("%s: %d × %d", kind, n, code)
			}
		}
	}
	if statuses["exchange"][200] == 0 || statuses["gateway"][200] == 0 {
		t.Fatal("no traffic went through")
	}
}
