package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// privatePostgres is a PostgreSQL server of the test's own (initdb and
// pg_ctl from /usr/lib/postgresql/*/bin, on a loopback port), for the
// fault cases that stop the database. It is removed when the test ends.
type privatePostgres struct {
	t        *testing.T
	bin, dir string
	opts     string
	asUser   []string // runuser prefix when the test runs as root
	dsn      string
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no initdb under /usr/lib/postgresql/*/bin: the database fault tests must run in CI")
		}
		t.Skip("no initdb under /usr/lib/postgresql/*/bin")
	}
	tmp := t.TempDir()
	p := &privatePostgres{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: filepath.Join(tmp, "pg")}
	if err := os.Mkdir(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as the postgres user,
		// who must be able to reach its directory.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and there is no postgres user to run PostgreSQL as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{filepath.Dir(tmp), tmp} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(p.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	if out, err := p.command("initdb", "-D", p.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p.opts = fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100", port, p.dir)
	p.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	p.start()
	t.Cleanup(func() { p.command("pg_ctl", "-D", p.dir, "-m", "immediate", "-w", "stop").Run() })
	return p
}

func (p *privatePostgres) start() {
	p.t.Helper()
	out, err := p.command("pg_ctl", "-D", p.dir, "-o", p.opts, "-w", "-t", "120", "-l", filepath.Join(p.dir, "log"), "start").CombinedOutput()
	if err != nil {
		p.t.Fatalf("pg_ctl start: %v %s", err, out)
	}
}

func (p *privatePostgres) stop() {
	p.t.Helper()
	if out, err := p.command("pg_ctl", "-D", p.dir, "-m", "fast", "-w", "-t", "120", "stop").CombinedOutput(); err != nil {
		p.t.Fatalf("pg_ctl stop: %v %s", err, out)
	}
}

func (p *privatePostgres) command(name string, args ...string) *exec.Cmd {
	all := append(append(append([]string{}, p.asUser...), filepath.Join(p.bin, name)), args...)
	return exec.Command(all[0], all[1:]...)
}

// traffic is concurrent jobs against a cluster: each exchanges an ID
// token at a node and makes gateway calls with it there. It records what
// was acknowledged and every status by node.
type traffic struct {
	c     *cluster
	hc    *http.Client
	nodes atomic.Pointer[[]*node] // where jobs go
	stop  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	leases   map[string]string // acknowledged exchanges: lease id -> token
	gateway  int               // gateway calls answered 200
	statuses map[string]map[int]int
}

func startTraffic(t *testing.T, c *cluster, hc *http.Client, workers int) *traffic {
	tr := &traffic{c: c, hc: hc, stop: make(chan struct{}), leases: map[string]string{}, statuses: map[string]map[int]int{}}
	ns := append([]*node{}, c.nodes...)
	tr.nodes.Store(&ns)
	for w := range workers {
		tr.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-tr.stop:
					return
				default:
				}
				ns := *tr.nodes.Load()
				nd := ns[(w+i)%len(ns)]
				code, tok, lease := tr.exchange(t, nd)
				tr.count(nd, "exchange", code)
				if code != 200 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				tr.mu.Lock()
				tr.leases[lease] = tok
				tr.mu.Unlock()
				for j := range 3 {
					r, _ := http.NewRequest("GET", fmt.Sprintf("%s/gw/api/r/%d/%d/%d", nd.url, w, i, j), nil)
					r.Header.Set("Authorization", "Bearer "+tok)
					code := 0
					if resp, err := hc.Do(r); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						code = resp.StatusCode
					}
					tr.count(nd, "gateway", code)
					if code == 200 {
						tr.mu.Lock()
						tr.gateway++
						tr.mu.Unlock()
					}
				}
			}
		})
	}
	t.Cleanup(tr.end)
	return tr
}

func (tr *traffic) end() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

func (tr *traffic) count(nd *node, kind string, code int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	k := nd.url + " " + kind
	if tr.statuses[k] == nil {
		tr.statuses[k] = map[int]int{}
	}
	tr.statuses[k][code]++
}

// oks counts the 200s answered so far.
func (tr *traffic) oks() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, m := range tr.statuses {
		n += m[200]
	}
	return n
}

// exchange is cluster.exchange that also returns the lease id.
func (tr *traffic) exchange(t *testing.T, nd *node) (int, string, string) {
	idt, err := tr.c.iss.Mint(nil, tr.c.aud, 0)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {"calls"}}
	resp, err := tr.hc.PostForm(nd.url+"/v1/token", form)
	if err != nil {
		return 0, "", ""
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		LeaseID     string `json:"lease_id"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out.AccessToken, out.LeaseID
}

var sequenceCount = regexp.MustCompile(`(?m)^mayfly_audit_sequence_seconds_count (\d+)`)

// sequenced is how many batches node n has sequenced (its metric).
func sequenced(t *testing.T, hc *http.Client, n *node) int {
	code, body := n.req(t, hc, "GET", "/metrics", "")
	if code != 200 {
		t.Fatalf("metrics of %s: %d", n.url, code)
	}
	m := sequenceCount.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// checkAcknowledged stops the nodes still running, then checks that the
// shared audit log verifies, that nothing is left pending, and that every
// exchange and gateway call acknowledged is in the database: its lease,
// and its audit entry.
func checkAcknowledged(t *testing.T, c *cluster, tr *traffic) {
	t.Helper()
	for _, nd := range c.nodes {
		if nd.cmd.ProcessState == nil {
			nd.cmd.Process.Signal(os.Interrupt)
			nd.cmd.Wait()
		}
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{PostgresDSN: c.dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pub, _ := os.ReadFile(filepath.Join(c.nodes[0].dir, "audit.pub"))
	res, err := audit.Verify(ctx, db, strings.TrimSpace(string(pub)), audit.VerifyOptions{})
	if err != nil || !res.OK() {
		t.Fatalf("audit verify: %+v %v", res, err)
	}
	var pending int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("%d audit entries left pending (%v)", pending, err)
	}
	raw, err := db.AuditEntries(ctx, 0, int(res.Size)+1)
	if err != nil {
		t.Fatal(err)
	}
	exchanged := map[string]bool{}
	gateway := 0
	for _, b := range raw {
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Type == audit.TypeExchange && e.Status == 200:
			exchanged[e.Lease] = true
		case e.Type == audit.TypeGateway:
			gateway++
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for lease := range tr.leases {
		var n int
		if err := db.SQL().QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM leases WHERE id = ?`), lease).Scan(&n); err != nil || n != 1 {
			t.Errorf("acknowledged lease %s: %d rows (%v)", lease, n, err)
		}
		if !exchanged[lease] {
			t.Errorf("acknowledged exchange of lease %s has no audit entry", lease)
		}
	}
	if gateway < tr.gateway {
		t.Errorf("%d gateway entries for %d acknowledged calls", gateway, tr.gateway)
	}
	t.Logf("audit verified at size %d: %d acknowledged exchanges, %d acknowledged gateway calls", res.Size, len(tr.leases), tr.gateway)
}

// kill -9 of the node that sequences the shared audit log, under load on
// every node: another node takes over, the others answer no 5xx
// throughout, nothing acknowledged is lost (leases, audit entries), and
// the log verifies with nothing left pending.
func TestClusterSequencerKilled(t *testing.T) {
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	c := startCluster(t, 3, up.URL)
	hc := c.nodes[0].client(t)
	tr := startTraffic(t, c, hc, 6)
	c.waitFor(t, "traffic", func() bool { return tr.oks() > 100 })

	// The sequencer is the node whose count of sequenced batches grows.
	victim := -1
	c.waitFor(t, "a sequencer", func() bool {
		var before [3]int
		for i, nd := range c.nodes {
			before[i] = sequenced(t, hc, nd)
		}
		time.Sleep(200 * time.Millisecond)
		for i, nd := range c.nodes {
			if sequenced(t, hc, nd) > before[i] {
				victim = i
				return true
			}
		}
		return false
	})
	var rest []*node
	for i, nd := range c.nodes {
		if i != victim {
			rest = append(rest, nd)
		}
	}
	v := c.nodes[victim]
	if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v.cmd.Wait()
	tr.nodes.Store(&rest)
	killedAt := tr.oks()
	// Another node sequences; traffic goes on through the others.
	c.waitFor(t, "another sequencer", func() bool {
		for _, nd := range rest {
			if sequenced(t, hc, nd) > 0 {
				return true
			}
		}
		return false
	})
	c.waitFor(t, "traffic after the kill", func() bool { return tr.oks() > killedAt+200 })
	tr.end()
	t.Logf("node %d (the sequencer) killed; statuses: %v", victim, tr.statuses)
	for k, m := range tr.statuses {
		for code, n := range m {
			if code >= 500 || code == 0 && !strings.HasPrefix(k, v.url+" ") {
				t.Errorf("%s: %d × status %d", k, n, code)
			}
		}
	}
	checkAcknowledged(t, c, tr)
}

// The database stops under load and comes back: the nodes fail closed
// meanwhile (503, /readyz unready, nothing reaches the upstream), recover
// by themselves without a restart (exchanges, gateway calls, revocations
// reaching the other node), and nothing acknowledged is lost.
func TestClusterDatabaseRestart(t *testing.T) {
	pg := startPrivatePostgres(t)
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	c := startClusterOn(t, pg.dsn, 2, up.URL)
	a, b := c.nodes[0], c.nodes[1]
	hc := a.client(t)
	code, held := c.exchange(t, hc, a, "calls")
	if code != 200 {
		t.Fatalf("exchange: %d", code)
	}
	gw := func(n *node, tok, path string) int {
		r, _ := http.NewRequest("GET", n.url+"/gw/api/r/"+path, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(r)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	c.waitFor(t, "the token on the other node", func() bool { return gw(b, held, "before") == 200 })
	tr := startTraffic(t, c, hc, 4)
	c.waitFor(t, "traffic", func() bool { return tr.oks() > 100 })

	pg.stop()
	for _, n := range c.nodes {
		c.waitFor(t, "/readyz unready on "+n.url, func() bool {
			code, _ := n.req(t, hc, "GET", "/readyz", "")
			return code == 503
		})
	}
	before := calls.Load()
	for i, n := range c.nodes {
		if code := gw(n, held, fmt.Sprintf("down/%d", i)); code != 503 {
			t.Errorf("gateway call on %s with the database down: %d", n.url, code)
		}
		if code, _ := c.exchange(t, hc, n, "calls"); code != 503 {
			t.Errorf("exchange on %s with the database down: %d", n.url, code)
		}
	}
	if got := calls.Load(); got != before {
		t.Errorf("%d calls reached the upstream with the database down", got-before)
	}

	pg.start()
	for i, n := range c.nodes {
		c.waitFor(t, "recovery of "+n.url, func() bool {
			code, _ := n.req(t, hc, "GET", "/readyz", "")
			return code == 200 && gw(n, held, fmt.Sprintf("up/%d", i)) == 200
		})
	}
	recovered := tr.oks()
	c.waitFor(t, "traffic after the restart", func() bool { return tr.oks() > recovered+100 })
	// A revocation on one node reaches the other again.
	code, tok := c.exchange(t, hc, a, "calls")
	if code != 200 {
		t.Fatalf("exchange after the restart: %d", code)
	}
	c.waitFor(t, "a new token on the other node", func() bool { return active(t, hc, b, tok) })
	if code := revoke(hc, a, tok); code != 200 {
		t.Fatalf("revoke after the restart: %d", code)
	}
	c.waitFor(t, "a revocation after the restart", func() bool { return !active(t, hc, b, tok) })
	tr.end()
	t.Logf("statuses: %v", tr.statuses)
	for k, m := range tr.statuses {
		for code, n := range m {
			if code != 200 && code != 503 {
				t.Errorf("%s: %d × status %d", k, n, code)
			}
		}
	}
	checkAcknowledged(t, c, tr)
}
