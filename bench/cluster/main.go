// Command cluster measures mayfly nodes sharing one PostgreSQL database:
// exchanges and gateway calls per second with 1 node and with 3 nodes
// (real binaries, each its own process, plain HTTP on loopback), the
// PostgreSQL statements each request costs (pg_stat_statements), the CPU
// each request costs in the nodes and in PostgreSQL (from /proc), and how
// long a revocation takes to reach the other nodes (p50/p99).
//
// It starts a private PostgreSQL (initdb/pg_ctl from /usr/lib/postgresql/*
// on a 127.0.0.1 port, removed at the end) with pg_stat_statements loaded.
//
//	go run ./bench/cluster [-clients 16] [-duration 10s] [-rounds 2] [-per-node] [-top N] [-pprof DIR] [-control=false]
//
// Each round also serves the gateway phase's load with 1 and 3 processes
// of a pooled httputil.ReverseProxy that share nothing (control.go): the
// 3-vs-1 ratio the machine's shared cores allow without any cluster.
//
// -per-node gives every node the same number of clients, as a real
// cluster whose load grows with its nodes: statements per request then
// compare like with like (with one pool of clients spread over 3 nodes,
// each node's group commits are a third as full).
//
// Linux only (it reads /proc). On a machine whose cores are shared by the
// nodes, the database and the load generator, 3 nodes cannot do 3× one
// node's work: the ratio shows whether the database or the cluster's
// coordination is a limit (≥ 0.9: it is not).
package main

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

var (
	clients  = flag.Int("clients", 16, "concurrent clients")
	duration = flag.Duration("duration", 10*time.Second, "length of each measured phase")
	rounds   = flag.Int("rounds", 2, "interleaved rounds of 1 and 3 nodes")
	top      = flag.Int("top", 0, "print the N statements run most in each phase")
	pprofDir = flag.String("pprof", "", "write each node's CPU profile of the gateway phase to this directory (a -tags mayfly_pprof build)")
	perNode  = flag.Bool("per-node", false, "run -clients clients per node (the same load per node) instead of in all")
	base     = flag.String("base", "", "also build ./cmd/mayfly in this source tree (say, a worktree of main) and interleave its rounds with this tree's, for a before/after in one run")
	split    = flag.Bool("split-procs", false, "give each node GOMAXPROCS = cores / nodes (at least 1), as if each had its own share of the machine")
	first    = flag.Bool("first", false, "send every request to the first node (3 nodes run, one serves): separates the cluster's own costs from spreading the load")
	control  = flag.Bool("control", true, "each round, also serve the gateway phase's load with 1 and 3 processes of a pooled Go reverse proxy (no database): the machine's own 3-vs-1 ratio")
	role     = flag.String("role", "", "internal: goproxy runs one control proxy")
	upstream = flag.String("upstream", "", "internal: the control proxy's upstream")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *role == "goproxy" {
		runGoProxy(*upstream)
		return
	}
	tmp, err := os.MkdirTemp("", "mayfly-cluster-bench-")
	check(err)
	defer os.RemoveAll(tmp)
	if *pprofDir != "" {
		check(os.MkdirAll(*pprofDir, 0o755))
	}
	builds := []struct{ name, bin string }{{"this tree", build(tmp, ".", "mayfly")}}
	if *base != "" {
		builds = append([]struct{ name, bin string }{{"base " + *base, build(tmp, *base, "mayfly-base")}}, builds...)
	}
	pg := startPostgres(tmp)
	defer pg.stop()

	issSrv := httptest.NewUnstartedServer(nil)
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + issSrv.Listener.Addr().String(), Audience: "https://mayfly.bench"})
	check(err)
	issSrv.Config.Handler = iss.Handler()
	issSrv.Start()
	defer issSrv.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer up.Close()

	all := make([]map[int][]result, len(builds))
	ctl := map[int][]controlResult{}
	for r := 0; r < *rounds; r++ {
		if *control {
			for _, n := range []int{1, 3} {
				c := runControl(up.URL, n)
				ctl[n] = append(ctl[n], c)
				fmt.Printf("round %d, control (Go reverse proxies, no database), %d process(es): %.0f calls/s, %.0f µs CPU per call\n", r+1, n, c.perSec, c.cpuPerCall)
			}
		}
		for k := range builds {
			// The builds take turns at going first: later phases run on a
			// database that has taken more writes, so a fixed order
			// favours the first.
			b := k
			if r%2 == 1 {
				b = len(builds) - 1 - k
			}
			bd := builds[b]
			if all[b] == nil {
				all[b] = map[int][]result{}
			}
			for _, n := range []int{1, 3} {
				res := runCluster(tmp, bd.bin, pg, iss, up.URL, n, r*len(builds)+b)
				all[b][n] = append(all[b][n], res)
				fmt.Printf("round %d, %s, %d node(s): %s\n", r+1, bd.name, n, res)
			}
		}
	}
	ctlRatio := 0.0
	if *control {
		med := func(n int, f func(controlResult) float64) float64 { return median(ctl[n], f) }
		per := func(c controlResult) float64 { return c.perSec }
		cpu := func(c controlResult) float64 { return c.cpuPerCall }
		ctlRatio = med(3, per) / med(1, per)
		fmt.Printf("\n== control: pooled Go reverse proxies, no database, the gateway phase's load\n")
		fmt.Printf("%-34s %10s %10s %7s\n", "", "1 process", "3", "ratio")
		fmt.Printf("%-34s %10.0f %10.0f %7.2f\n", "calls/s", med(1, per), med(3, per), ctlRatio)
		fmt.Printf("%-34s %10.0f %10.0f\n", "CPU per call, µs", med(1, cpu), med(3, cpu))
	}
	for b, bd := range builds {
		fmt.Printf("\n== %s", bd.name)
		summarize(all[b], ctlRatio)
	}
}

// build builds dir's ./cmd/mayfly into tmp/name.
func build(tmp, dir, name string) string {
	bin, err := filepath.Abs(filepath.Join(tmp, name))
	check(err)
	args := []string{"build", "-o", bin}
	if *pprofDir != "" {
		args = append(args, "-tags", "mayfly_pprof")
	}
	cmd := exec.Command("go", append(args, "./cmd/mayfly")...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		log.Fatalf("build in %s: %v\n%s", dir, err, out)
	}
	return bin
}

// median is the median of f over xs (not empty).
func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		v = append(v, f(x))
	}
	return measure.Median(v)
}

// summarize prints the medians of one build's rounds, and where a cluster
// of such nodes stops scaling.
func summarize(results map[int][]result, ctlRatio float64) {
	med := func(n int, f func(result) float64) float64 { return median(results[n], f) }
	ex := func(r result) float64 { return r.exchangesPerSec }
	gw := func(r result) float64 { return r.gatewayPerSec }
	per := "in all"
	if *perNode {
		per = "per node"
	}
	fmt.Printf("\nmedians of %d rounds, %d clients %s, %v phases (machine: %d cores, shared)\n", *rounds, *clients, per, *duration, measure.NumCPU())
	fmt.Printf("%-34s %10s %10s %7s\n", "", "1 node", "3 nodes", "ratio")
	fmt.Printf("%-34s %10.0f %10.0f %7.2f\n", "exchanges/s", med(1, ex), med(3, ex), med(3, ex)/med(1, ex))
	fmt.Printf("%-34s %10.0f %10.0f %7.2f\n", "gateway calls/s", med(1, gw), med(3, gw), med(3, gw)/med(1, gw))
	if ctlRatio > 0 {
		fmt.Printf("%-34s %28.2f\n", "gateway ratio ÷ the control's", med(3, gw)/med(1, gw)/ctlRatio)
	}
	for _, n := range []int{1, 3} {
		fmt.Printf("%-34s %10.3f\n", fmt.Sprintf("statements/exchange, %d node(s)", n), med(n, func(r result) float64 { return r.stmtsPerExchange }))
		fmt.Printf("%-34s %10.3f\n", fmt.Sprintf("statements/gateway call, %d node(s)", n), med(n, func(r result) float64 { return r.stmtsPerGateway }))
		fmt.Printf("%-34s %10.0f µs node, %.0f µs PostgreSQL\n", fmt.Sprintf("CPU/exchange, %d node(s)", n),
			med(n, func(r result) float64 { return r.nodeCPUExchange }), med(n, func(r result) float64 { return r.dbCPUExchange }))
		fmt.Printf("%-34s %10.0f µs node, %.0f µs PostgreSQL\n", fmt.Sprintf("CPU/gateway call, %d node(s)", n),
			med(n, func(r result) float64 { return r.nodeCPUGateway }), med(n, func(r result) float64 { return r.dbCPUGateway }))
	}
	var props []time.Duration
	for _, r := range results[3] {
		props = append(props, r.propagation...)
	}
	slices.Sort(props)
	if len(props) > 0 {
		fmt.Printf("revocation reaching 2 other nodes: p50 %v, p99 %v, max %v (n=%d)\n", props[len(props)/2].Round(100*time.Microsecond),
			props[len(props)*99/100].Round(100*time.Microsecond), props[len(props)-1].Round(100*time.Microsecond), len(props))
	}
	for _, n := range []int{1, 3} {
		fmt.Printf("%-34s %10.0f µs per exchange, %.0f µs per gateway call\n", fmt.Sprintf("sequencer's PostgreSQL CPU, %d node(s)", n),
			med(n, func(r result) float64 { return r.seqExchange }), med(n, func(r result) float64 { return r.seqGateway }))
	}
	// Where N machines stop scaling: N nodes of C cores each serve
	// N*C/nodeCPU requests a second; the database (D cores) D/dbCPU; the
	// one sequencer (one PostgreSQL session, so one database core)
	// 1/seq; and PostgreSQL's connections (97 usable by default, 10 per
	// node) allow 9 nodes. The per-request costs are one node's (no
	// coordination noise), the sequencer's measured with 3 nodes at this
	// load, whose batches are small: a high estimate of its cost (go test
	// ./internal/auditlog -bench SharedSequencer drains full batches).
	const C, D = 8.0, 32.0
	fmt.Printf("\nwhere a cluster of %g-core nodes on a %g-core PostgreSQL stops scaling (nodes, requests/s):\n", C, D)
	for _, k := range []struct {
		name          string
		node, db, seq float64
	}{
		{"gateway calls", med(1, func(r result) float64 { return r.nodeCPUGateway }), med(1, func(r result) float64 { return r.dbCPUGateway }),
			med(3, func(r result) float64 { return r.seqGateway })},
		{"exchanges", med(1, func(r result) float64 { return r.nodeCPUExchange }), med(1, func(r result) float64 { return r.dbCPUExchange }),
			med(3, func(r result) float64 { return r.seqExchange })},
	} {
		perNode := C * 1e6 / k.node
		limits := []struct {
			what  string
			nodes float64
		}{
			{"PostgreSQL's CPU", D * 1e6 / k.db / perNode},
			{"the sequencer", 1e6 / k.seq / perNode},
			{"connections (default max_connections)", 97 / 10},
		}
		slices.SortFunc(limits, func(a, b struct {
			what  string
			nodes float64
		}) int {
			return cmp.Compare(a.nodes, b.nodes)
		})
		fmt.Printf("  %-14s one node %.0f/s; first limit %s at %.1f nodes (%.0f/s), then %s at %.1f, %s at %.1f\n", k.name, perNode,
			limits[0].what, limits[0].nodes, limits[0].nodes*perNode, limits[1].what, limits[1].nodes, limits[2].what, limits[2].nodes)
	}
}

type result struct {
	exchangesPerSec, gatewayPerSec    float64
	stmtsPerExchange, stmtsPerGateway float64
	nodeCPUExchange, dbCPUExchange    float64 // µs per request
	nodeCPUGateway, dbCPUGateway      float64
	seqExchange, seqGateway           float64 // µs of the sequencer's serial work per request
	errorsExchange, errorsGateway     map[int]int
	propagation                       []time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("%.0f exchanges/s (%.3f statements, errors %v), %.0f gateway calls/s (%.3f statements, errors %v)",
		r.exchangesPerSec, r.stmtsPerExchange, r.errorsExchange, r.gatewayPerSec, r.stmtsPerGateway, r.errorsGateway)
}

type node struct {
	dir, url string
	pprof    string // its profiling address, with -pprof
	cmd      *exec.Cmd
	logs     *bytes.Buffer
}

func runCluster(tmp, bin string, pg *postgres, iss *devissuer.Issuer, upURL string, n, round int) result {
	clients := *clients
	if *perNode {
		clients *= n
	}
	schema := fmt.Sprintf("bench_%d_%d", round, n)
	pg.exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
	pg.exec("CREATE SCHEMA " + schema)
	dsn := pg.dsn + "&search_path=" + schema
	var nodes []*node
	base := filepath.Join(tmp, schema)
	admin := ""
	for i := 0; i < n; i++ {
		dir := filepath.Join(base, fmt.Sprint(i))
		args := []string{"init", "--data-dir", dir, "--postgres", dsn, "--json"}
		if i > 0 {
			d0 := nodes[0].dir
			args = []string{"init", "--join", "--data-dir", dir, "--postgres", dsn, "--master-key-file", filepath.Join(d0, "master.key"),
				"--audit-key-file", filepath.Join(d0, "audit.key"), "--ca-cert", filepath.Join(d0, "ca.pem"), "--ca-key", filepath.Join(d0, "ca-key.pem")}
		}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			log.Fatalf("init node %d: %v %s", i, err, out)
		}
		if i == 0 {
			var res struct {
				AdminToken string `json:"admin_token"`
			}
			check(json.Unmarshal(out, &res))
			admin = res.AdminToken
		}
		nodes = append(nodes, &node{dir: dir})
	}
	cfg := filepath.Join(base, "config.yaml")
	check(os.WriteFile(cfg, []byte("limits:\n  token_rate: 1000000\n  token_burst: 1000000\n  issuer_rate: 1000000\n"), 0o600))
	for _, nd := range nodes {
		nd.start(bin, dsn, cfg, n)
	}
	defer func() {
		for _, nd := range nodes {
			nd.cmd.Process.Signal(os.Interrupt)
			nd.cmd.Wait()
		}
	}()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	do := func(nd *node, method, path, body string) (int, string) {
		r, _ := http.NewRequest(method, nd.url+path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+admin)
		if strings.HasPrefix(body, "token=") {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := hc.Do(r)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := do(nodes[0], "PUT", "/v1/secrets/api-token", `{"value":"bench-upstream-credential-0123456789"}`); c != 200 {
		log.Fatalf("secret: %d %s", c, b)
	}
	policy := `issuers:
  ci: {url: ` + iss.URL() + `, audience: https://mayfly.bench}
upstreams:
  api: {url: "` + upURL + `", credential: {secret: api-token, prefix: "Bearer "}}
grants:
  calls:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/r/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	if c, b := do(nodes[0], "PUT", "/v1/policy", policy); c != 200 {
		log.Fatalf("policy: %d %s", c, b)
	}
	for _, nd := range nodes { // every node follows the version
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if c, b := do(nd, "GET", "/v1/policy", ""); c == 200 && strings.Contains(b, "calls") {
				break
			}
			if time.Now().After(deadline) {
				log.Fatal("policy did not reach every node")
			}
		}
	}
	// ID tokens minted before the clock starts: RS256 signing is the
	// issuer's cost, not mayfly's. Enough for 2,500 exchanges a second
	// (a phase that uses them all ends early; its rate stays right), and
	// one per client for the gateway phase and 50 for propagation.
	need := 2500*int(duration.Seconds()) + clients + 50
	idts := make(chan string, need)
	var mint sync.WaitGroup
	for range runtime.NumCPU() {
		mint.Go(func() {
			for range need / runtime.NumCPU() {
				t, err := iss.Mint(nil, "https://mayfly.bench", 0)
				check(err)
				idts <- t
			}
		})
	}
	mint.Wait()
	reserve := make([]string, clients+50) // gateway phase, then propagation
	for i := range reserve {
		reserve[i] = <-idts
	}
	exchange := func(nd *node, idt string) (int, string) {
		if idt == "" {
			select {
			case idt = <-idts:
			default:
				return -1, ""
			}
		}
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {"calls"}}
		resp, err := hc.PostForm(nd.url+"/v1/token", form)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.AccessToken
	}
	var res result
	// The sequencer is one PostgreSQL session whatever the number of
	// nodes: its backend's CPU per request bounds what any cluster on one
	// database can take.
	var lastSeqPerReq float64
	phase := func(fn func(w, i int) int) (float64, float64, float64, float64, map[int]int) {
		pg.exec("SELECT pg_stat_statements_reset()")
		seqPID := pg.sequencerPID()
		_, seq0 := statUS(seqPID)
		s0 := pg.statements()
		var act0 activity
		if *top > 0 {
			act0 = pg.activity()
		}
		n0, d0 := cpuOf(nodes), pg.cpu()
		var ok atomic.Int64
		var mu sync.Mutex
		errs := map[int]int{}
		ctx, cancel := context.WithTimeout(context.Background(), *duration)
		start := time.Now()
		var wg sync.WaitGroup
		for w := range clients {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					switch code := fn(w, i); code {
					case 200:
						ok.Add(1)
					case -1:
						return
					default:
						mu.Lock()
						errs[code]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		cancel()
		el := time.Since(start)
		var actEnd activity
		if *top > 0 {
			actEnd = pg.activity()
		}
		if _, seq1 := statUS(seqPID); seqPID != 0 && seqPID == pg.sequencerPID() {
			lastSeqPerReq = (seq1 - seq0) / float64(ok.Load())
		} else {
			lastSeqPerReq = 0 // the sequencer changed: no figure
		}
		nreq := float64(ok.Load())
		stmts := float64(pg.statements() - s0)
		if *top > 0 {
			pg.printTop(*top, nreq)
			pg.printActivity(act0, actEnd, nreq)
			pg.printTables(schema)
		}
		return nreq / el.Seconds(), stmts / nreq, (cpuOf(nodes) - n0) / nreq, (pg.cpu() - d0) / nreq, errs
	}
	// target is the node of a client's i-th request.
	target := func(k int) int {
		if *first {
			return 0
		}
		return k % n
	}
	exProfiles := profile(nodes, "exchange", round, n)
	res.exchangesPerSec, res.stmtsPerExchange, res.nodeCPUExchange, res.dbCPUExchange, res.errorsExchange = phase(func(w, i int) int {
		c, _ := exchange(nodes[target(w+i)], "")
		return c
	})
	exProfiles.Wait()
	// One token per client, used on every node in turn.
	toks := make([]string, clients)
	for w := range toks {
		c, tok := exchange(nodes[0], reserve[w])
		if c != 200 {
			log.Fatalf("exchange for the gateway phase: %d", c)
		}
		toks[w] = tok
	}
	time.Sleep(500 * time.Millisecond) // every node has them (polling's bound)
	res.seqExchange = lastSeqPerReq
	profiles := profile(nodes, "gateway", round, n)
	res.gatewayPerSec, res.stmtsPerGateway, res.nodeCPUGateway, res.dbCPUGateway, res.errorsGateway = phase(func(w, i int) int {
		r, _ := http.NewRequest("GET", nodes[target(w+i)].url+"/gw/api/r/"+strconv.Itoa(i), nil)
		r.Header.Set("Authorization", "Bearer "+toks[w])
		resp, err := hc.Do(r)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	})
	res.seqGateway = lastSeqPerReq
	profiles.Wait()
	if n > 1 {
		// Revocation propagation: revoke on node 1, watch nodes 0 and 2.
		for _, idt := range reserve[clients:] {
			c, tok := exchange(nodes[1], idt)
			if c != 200 {
				break
			}
			time.Sleep(50 * time.Millisecond)
			resp, err := hc.PostForm(nodes[1].url+"/v1/revoke", url.Values{"token": {tok}})
			if err != nil || resp.StatusCode != 200 {
				continue
			}
			resp.Body.Close()
			start := time.Now()
			for _, nd := range []*node{nodes[0], nodes[2]} {
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
					c, b := do(nd, "POST", "/v1/introspect", "token="+tok)
					if c == 200 && strings.Contains(b, `"active":false`) {
						break
					}
				}
			}
			res.propagation = append(res.propagation, time.Since(start))
		}
	}
	return res
}

// profile, with -pprof, writes each node's CPU profile of a phase that
// starts now; wait for it once the phase is over.
func profile(nodes []*node, phase string, round, n int) *sync.WaitGroup {
	var profiles sync.WaitGroup
	if *pprofDir == "" {
		return &profiles
	}
	secs := int(duration.Seconds()) - 1
	for i, nd := range nodes {
		profiles.Go(func() {
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", nd.pprof, secs))
			check(err)
			defer resp.Body.Close()
			f, err := os.Create(filepath.Join(*pprofDir, fmt.Sprintf("%s-r%d-n%d-node%d.pprof", phase, round, n, i)))
			check(err)
			defer f.Close()
			io.Copy(f, resp.Body)
		})
	}
	return &profiles
}

func (nd *node) start(bin, dsn, cfg string, n int) {
	addr := filepath.Join(nd.dir, "addr")
	nd.cmd = exec.Command(bin, "server", "--data-dir", nd.dir, "--postgres", dsn, "--insecure-http", "--listen", "127.0.0.1:0",
		"--addr-file", addr, "--config", cfg, "--log-level", "error")
	nd.logs = &bytes.Buffer{}
	nd.cmd.Stdout, nd.cmd.Stderr = nd.logs, nd.logs
	nd.cmd.Env = os.Environ()
	if *split {
		nd.cmd.Env = append(nd.cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", max(1, measure.NumCPU()/n)))
	}
	if *pprofDir != "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		nd.pprof = l.Addr().String()
		l.Close()
		nd.cmd.Env = append(nd.cmd.Env, "MAYFLY_PPROF_LISTEN="+nd.pprof)
	}
	check(nd.cmd.Start())
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(addr); err == nil && len(b) > 0 {
			nd.url = strings.TrimSpace(string(b))
			return
		}
	}
	log.Fatalf("node did not start: %s", nd.logs)
}

// postgres is a private PostgreSQL instance.
type postgres struct {
	dir, bin, dsn string
	asUser        []string // runuser prefix when running as root
	db            *sql.DB
	pid           int
}

func startPostgres(tmp string) *postgres {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		log.Fatal("no initdb under /usr/lib/postgresql/*/bin")
	}
	p := &postgres{dir: filepath.Join(tmp, "pg"), bin: filepath.Dir(bins[len(bins)-1])}
	check(os.Mkdir(p.dir, 0o700))
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as the postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			log.Fatal("running as root and there is no postgres user to run PostgreSQL as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		check(os.Chmod(tmp, 0o711))
		check(os.Chown(p.dir, uid, gid))
		p.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	out, err := p.command("initdb", "-D", p.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8").CombinedOutput()
	if err != nil {
		log.Fatalf("initdb: %v %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on -c max_connections=100", port, p.dir)
	out, err = p.command("pg_ctl", "-D", p.dir, "-o", opts, "-w", "-l", filepath.Join(p.dir, "log"), "start").CombinedOutput()
	if err != nil {
		log.Fatalf("pg_ctl start: %v %s", err, out)
	}
	p.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	p.db, err = sql.Open("pgx", p.dsn)
	check(err)
	p.exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
	b, err := os.ReadFile(filepath.Join(p.dir, "postmaster.pid"))
	check(err)
	p.pid, _ = strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	return p
}

func (p *postgres) exec(q string) {
	if _, err := p.db.Exec(q); err != nil {
		log.Fatalf("%s: %v", q, err)
	}
}

// statements is the number of statements run so far (this query's own
// and the reset's excluded).
func (p *postgres) statements() int64 {
	var n sql.NullInt64
	check(p.db.QueryRow(`SELECT SUM(calls) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'`).Scan(&n))
	return n.Int64
}

// cpu is the CPU time (µs) the postmaster and its live children used.
func (p *postgres) cpu() float64 {
	total := 0.0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, cpu := statUS(pid)
		if pid == p.pid || ppid == p.pid {
			total += cpu
		}
	}
	return total
}

// sequencerPID is the backend holding the audit sequencer's advisory
// lock (0: none).
func (p *postgres) sequencerPID() int {
	var pid int
	p.db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7303886 AND objsubid = 2 AND granted LIMIT 1`).Scan(&pid)
	return pid
}

// printTop prints the statements run most, with the time PostgreSQL spent
// executing and planning each per request: wall time, so on a busy machine
// it includes waiting for a core and for locks, not only CPU.
func (p *postgres) printTop(n int, requests float64) {
	rows, err := p.db.Query(`SELECT calls, total_exec_time, total_plan_time, left(regexp_replace(query, '\s+', ' ', 'g'), 100) FROM pg_stat_statements
		WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT $1`, n)
	check(err)
	defer rows.Close()
	for rows.Next() {
		var calls int64
		var ms, plan float64
		var q string
		check(rows.Scan(&calls, &ms, &plan, &q))
		fmt.Printf("  %7.4f/request %6.1f µs/request (+%5.1f planning)  %s\n", float64(calls)/requests, ms*1000/requests, plan*1000/requests, q)
	}
}

// printTables prints how the busiest tables of schema were read since it
// was made: sequential scans (a young table's plans may choose them) and
// index scans, with rows per scan.
func (p *postgres) printTables(schema string) {
	rows, err := p.db.Query(`SELECT relname, seq_scan, seq_tup_read, COALESCE(idx_scan, 0), COALESCE(idx_tup_fetch, 0), n_dead_tup, analyze_count + autoanalyze_count
		FROM pg_stat_user_tables WHERE schemaname = $1 AND relname IN ('audit_pending', 'lease_events', 'audit_entries', 'leases') ORDER BY relname`, schema)
	check(err)
	defer rows.Close()
	for rows.Next() {
		var name string
		var seq, seqRows, idx, idxRows, dead, analyses int64
		check(rows.Scan(&name, &seq, &seqRows, &idx, &idxRows, &dead, &analyses))
		fmt.Printf("  %s so far: %d sequential scans (%d rows each), %d index scans (%.1f rows each), %d dead rows, analysed %d times\n",
			name, seq, seqRows/max(seq, 1), idx, float64(idxRows)/float64(max(idx, 1)), dead, analyses)
	}
}

// activity is what PostgreSQL did so far: commits, WAL, and CPU (µs) by
// kind of process.
type activity struct {
	commits, walRecords, walBytes, walWrites, walSyncs int64
	cpu                                                map[string]float64
}

func (p *postgres) activity() activity {
	var a activity
	// Statistics reach the views within a second of being counted.
	p.exec("SELECT pg_stat_clear_snapshot()")
	check(p.db.QueryRow(`SELECT (SELECT SUM(xact_commit) FROM pg_stat_database), wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal`).
		Scan(&a.commits, &a.walRecords, &a.walBytes, &a.walWrites, &a.walSyncs))
	a.cpu = map[string]float64{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, cpu := statUS(pid); pid == p.pid || ppid == p.pid {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			kind := "postmaster"
			if f := strings.Fields(strings.TrimPrefix(string(b), "postgres: ")); pid != p.pid && len(f) > 0 {
				kind = f[0]
				if strings.HasPrefix(kind, "postgres") { // "postgres postgres 127.0.0.1(port) …": a client's backend
					kind = "backends"
				}
			}
			a.cpu[kind] += cpu
		}
	}
	return a
}

// printActivity prints what PostgreSQL did per request from a0 to end
// (its CPU; the counters a second later, once flushed).
func (p *postgres) printActivity(a0, end activity, requests float64) {
	time.Sleep(1100 * time.Millisecond)
	a := p.activity()
	a.cpu = end.cpu
	fmt.Printf("  per request: %.2f commits, %.2f WAL records, %.0f WAL bytes, %.3f WAL writes, %.3f WAL flushes; PostgreSQL CPU µs:",
		float64(a.commits-a0.commits)/requests, float64(a.walRecords-a0.walRecords)/requests, float64(a.walBytes-a0.walBytes)/requests,
		float64(a.walWrites-a0.walWrites)/requests, float64(a.walSyncs-a0.walSyncs)/requests)
	var kinds []string
	for k := range a.cpu {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		if d := (a.cpu[k] - a0.cpu[k]) / requests; d >= 0.5 {
			fmt.Printf(" %s %.0f", k, d)
		}
	}
	fmt.Println()
}

func (p *postgres) stop() {
	p.db.Close()
	p.command("pg_ctl", "-D", p.dir, "-m", "fast", "-w", "stop").Run()
}

func (p *postgres) command(name string, args ...string) *exec.Cmd {
	all := append(append(append([]string{}, p.asUser...), filepath.Join(p.bin, name)), args...)
	return exec.Command(all[0], all[1:]...)
}

func cpuOf(nodes []*node) float64 {
	t := 0.0
	for _, nd := range nodes {
		_, c := statUS(nd.cmd.Process.Pid)
		t += c
	}
	return t
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// statUS is a process's parent and CPU time in microseconds, the unit
// this bench sums and prints.
func statUS(pid int) (int, float64) {
	ppid, cpu := measure.Stat(pid)
	return ppid, float64(cpu.Microseconds())
}
