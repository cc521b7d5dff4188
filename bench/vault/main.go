// Command vault measures mayfly's token exchange against the JWT login of
// HashiCorp Vault (or OpenBao, its fork with the same JWT auth method), the
// way a user would compare them: each server is its own process on this
// machine, both trust the same local OIDC issuer, and this program drives
// them with fresh RS256 ID tokens minted ahead of each run.
//
//   - mayfly: the real binary (built from ./cmd/mayfly, or -mayfly), `init`
//     (embedded SQLite), `server`, a policy whose grant is bound to the
//     claim repository_id; POST /v1/token (RFC 8693, SPEC §4).
//   - Vault: `vault server` with durable storage (-vault-storage: raft, its
//     recommended integrated storage, or file), initialised and unsealed
//     through its API, the jwt auth method configured with the issuer's
//     discovery URL and a role bound to the same audience and claim, issuing
//     service tokens (stored, like mayfly's leases); POST
//     /v1/auth/jwt/login. -vault-audit says whether Vault keeps a file
//     audit device (mayfly records every exchange in its audit log; Vault
//     records nothing unless an audit device is enabled): "file,none"
//     measures both.
//
// Both servers serve TLS with the same ECDSA P-256 certificate (mayfly's
// init makes it) to a keep-alive HTTP/1.1 client, or both plain HTTP on
// loopback with -tls=false. For each concurrency in -c, every round runs
// every target once (the order rotates between rounds) with -n exchanges
// (a quarter of that at concurrency 1); the medians of exchanges/s, latency
// and each server's CPU and write system calls per exchange (from /proc)
// are printed with the ratio to Vault and the load average. The load generator is this process
// and shares the machine's cores with the servers, as it does for both.
//
//	go run ./bench/vault -vault /path/to/vault [-rounds 3] [-n 2000] [-c 1,16,32]
//
// Without a Vault binary at -vault the comparison says "skipped" and mayfly
// is measured alone. -baseline OLD_MAYFLY adds an older mayfly build as a
// further target (before/after in the same run); -pprof DIR builds mayfly
// with -tags mayfly_pprof and saves a CPU profile of one extra run at each
// concurrency to DIR (and the allocations since start). Linux only (it reads /proc).
//go:build linux

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

var (
	rounds       = flag.Int("rounds", 3, "interleaved rounds; medians are reported")
	perRun       = flag.Int("n", 2000, "exchanges per run (a quarter of it at concurrency 1)")
	concFlag     = flag.String("c", "1,16,32", "concurrencies (clients, each on its own keep-alive connection)")
	vaultBin     = flag.String("vault", "", "the vault (or bao) binary; absent: the comparison is skipped")
	vaultStorage = flag.String("vault-storage", "raft", "Vault storage backends to measure, comma-separated: raft, file (not in a -tags minimal build)")
	vaultAudit   = flag.String("vault-audit", "file,none", "Vault audit devices to measure, comma-separated: file (a file audit device), none")
	mayflyBin    = flag.String("mayfly", "", "mayfly binary to measure (default: build ./cmd/mayfly)")
	baseline     = flag.String("baseline", "", "a second mayfly binary measured as target \"mayfly-base\"")
	useTLS       = flag.Bool("tls", true, "both servers serve TLS (the same certificate); false: both plain HTTP on loopback")
	pprofDir     = flag.String("pprof", "", "save CPU profiles of mayfly's exchanges here (builds with -tags mayfly_pprof)")
	keep         = flag.Bool("keep", false, "keep the temporary folder (data dirs, Vault's log and audit file)")
)

const (
	audience = "https://mayfly.bench"
	repoID   = "123456789"
)

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	var concs []int
	for _, s := range strings.Split(*concFlag, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			log.Fatalf("-c: %q is not a positive number", s)
		}
		concs = append(concs, c)
	}
	tmp, err := os.MkdirTemp("", "mayfly-vault-")
	check(err)
	if *keep {
		log.Printf("temporary folder: %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{tmp: tmp}
	defer b.stopAll()
	b.run(concs)
}

type bench struct {
	tmp   string
	procs []*exec.Cmd
}

// target is one server measured: how to make an exchange's request from an
// ID token, and how to tell that the answer is a token.
type target struct {
	name      string
	pid       int
	client    *http.Client
	url       string // the exchange endpoint
	ctype     string
	body      func(idToken string) []byte
	want      []byte // the 200 answer holds this
	pprofAddr string
}

func (b *bench) run(concs []int) {
	iss := startIssuer()
	bins := map[string]string{}
	if *mayflyBin != "" {
		bins["mayfly"] = *mayflyBin
	} else {
		bins["mayfly"] = filepath.Join(b.tmp, "bin", "mayfly")
		args := []string{"build", "-o", bins["mayfly"]}
		if *pprofDir != "" {
			args = append(args, "-tags", "mayfly_pprof")
		}
		out, err := exec.Command("go", append(args, "./cmd/mayfly")...).CombinedOutput()
		if err != nil {
			log.Fatalf("go build ./cmd/mayfly: %v\n%s", err, out)
		}
	}
	if *baseline != "" {
		bins["mayfly-base"] = *baseline
	}
	if *pprofDir != "" {
		check(os.MkdirAll(*pprofDir, 0o755))
	}
	var targets []*target
	var cert, key string
	for _, name := range []string{"mayfly", "mayfly-base"} {
		if bins[name] == "" {
			continue
		}
		t, dir := b.startMayfly(name, bins[name], iss)
		targets = append(targets, t)
		cert, key = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	}

	vaultNote := ""
	if _, err := os.Stat(*vaultBin); *vaultBin == "" || err != nil {
		vaultNote = fmt.Sprintf("Vault: skipped (no binary at -vault %q); mayfly measured alone", *vaultBin)
		fmt.Printf("\n%s\n", vaultNote)
	} else {
		out, _ := exec.Command(*vaultBin, "version").CombinedOutput()
		vaultNote = "Vault: " + strings.TrimSpace(string(out))
		for _, storage := range strings.Split(*vaultStorage, ",") {
			for _, audit := range strings.Split(*vaultAudit, ",") {
				targets = append(targets, b.startVault(strings.TrimSpace(storage), strings.TrimSpace(audit), iss, cert, key))
			}
		}
	}

	// Warm every target (connections, TLS sessions, caches, the JIT of
	// nothing: Go) with a short untimed run at the highest concurrency.
	maxC := slices.Max(concs)
	warm := iss.mintForms(maxC * 8)
	for _, t := range targets {
		r := runExchanges(t, maxC, warm)
		if r.failed > 0 {
			log.Fatalf("%s: %d of %d warm-up exchanges failed: %s", t.name, r.failed, len(warm), r.firstErr)
		}
	}

	type key2 struct {
		name string
		c    int
	}
	res := map[key2]*series{}
	var load []float64
	for round := range *rounds {
		for _, c := range concs {
			n := *perRun
			if c == 1 {
				n = max(1, n/4)
			}
			// One set of fresh ID tokens per (round, concurrency), each
			// token sent once to each target: every server sees each
			// token once (mayfly refuses a jti it has already exchanged).
			toks := iss.mintForms(n)
			order := slices.Clone(targets)
			rot := round % len(order)
			order = append(order[rot:], order[:rot]...)
			for _, t := range order {
				time.Sleep(300 * time.Millisecond) // background work of the last run settles
				cpu0, w0 := measure.CPU(t.pid), measure.Writes(t.pid)
				r := runExchanges(t, c, toks)
				cpu := measure.CPU(t.pid) - cpu0
				w := measure.Writes(t.pid) - w0
				if r.failed > 0 {
					log.Fatalf("%s c=%d: %d of %d exchanges failed: %s", t.name, c, r.failed, len(toks), r.firstErr)
				}
				s := res[key2{t.name, c}]
				if s == nil {
					s = &series{}
					res[key2{t.name, c}] = s
				}
				rate := float64(len(toks)) / r.elapsed.Seconds()
				s.rate = append(s.rate, rate)
				s.cpu = append(s.cpu, cpu/time.Duration(len(toks)))
				s.writes = append(s.writes, float64(w)/float64(len(toks)))
				s.p50 = append(s.p50, r.quantile(0.5))
				s.p99 = append(s.p99, r.quantile(0.99))
				load = append(load, measure.LoadAvg())
				log.Printf("round %d c=%-3d %-24s %7.0f exchanges/s  p50 %8v  p99 %8v  CPU %v/exchange  %.1f writes/exchange  load %.1f", round+1, c, t.name,
					rate, r.quantile(0.5).Round(time.Microsecond), r.quantile(0.99).Round(time.Microsecond),
					(cpu / time.Duration(len(toks))).Round(time.Microsecond), float64(w)/float64(len(toks)), measure.LoadAvg())
			}
		}
	}

	proto := "TLS (ECDSA P-256, the same certificate), HTTP/1.1 keep-alive"
	if !*useTLS {
		proto = "plain HTTP on loopback, keep-alive"
	}
	fmt.Printf("\n## exchanges: mayfly POST /v1/token vs Vault JWT login, fresh RS256 ID tokens, %s; medians of %d interleaved rounds, %d exchanges a run (%d at c=1); load average (1 min) over the runs: median %.1f, %.1f–%.1f\n%s\n",
		proto, *rounds, *perRun, max(1, *perRun/4), measure.Median(load), slices.Min(load), slices.Max(load), vaultNote)
	for _, c := range concs {
		fmt.Printf("\n### concurrency %d\n\n| target | exchanges/s | p50 | p99 | server CPU per exchange | server write calls per exchange | mayfly's exchanges/s ÷ this |\n|---|---|---|---|---|---|---|\n", c)
		m := res[key2{"mayfly", c}]
		for _, t := range targets {
			s := res[key2{t.name, c}]
			ratio := "—"
			if t.name != "mayfly" {
				ratio = fmt.Sprintf("%.1f×", measure.Median(m.rate)/measure.Median(s.rate))
			}
			fmt.Printf("| %s | %.0f | %s | %s | %s | %.1f | %s |\n", t.name, measure.Median(s.rate), ms(measure.Median(s.p50)), ms(measure.Median(s.p99)), us(measure.Median(s.cpu)), measure.Median(s.writes), ratio)
		}
	}

	if *pprofDir != "" {
		for _, c := range concs {
			for _, t := range targets {
				if t.pprofAddr == "" {
					continue
				}
				n := *perRun * 2
				s := res[key2{t.name, c}]
				secs := max(1, int(float64(n)/measure.Median(s.rate)*0.9))
				toks := iss.mintForms(n)
				file := filepath.Join(*pprofDir, fmt.Sprintf("exchange-%s-c%d.pprof", t.name, c))
				done := make(chan struct{})
				go func() {
					defer close(done)
					resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.pprofAddr, secs))
					if err != nil {
						log.Printf("pprof %s: %v", t.name, err)
						return
					}
					defer resp.Body.Close()
					f, err := os.Create(file)
					check(err)
					io.Copy(f, resp.Body)
					f.Close()
				}()
				runExchanges(t, c, toks)
				<-done
				log.Printf("profile of %s at c=%d (%d s): %s", t.name, c, secs, file)
				// What was allocated since the server started (the
				// measured runs and this one): where GC work comes from.
				allocs := filepath.Join(*pprofDir, fmt.Sprintf("exchange-%s-c%d.allocs.pprof", t.name, c))
				if resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/allocs", t.pprofAddr)); err != nil {
					log.Printf("pprof %s: %v", t.name, err)
				} else {
					f, err := os.Create(allocs)
					check(err)
					io.Copy(f, resp.Body)
					f.Close()
					resp.Body.Close()
				}
			}
		}
	}
}

type series struct {
	rate     []float64
	p50, p99 []time.Duration
	cpu      []time.Duration
	writes   []float64 // write system calls per exchange
}

// ---- the servers ----

// startMayfly initialises a data dir, starts the server with rate limits
// out of the way, and applies a policy trusting the issuer.
func (b *bench) startMayfly(name, bin string, iss *issuer) (*target, string) {
	dir := filepath.Join(b.tmp, name)
	out, err := exec.Command(bin, "init", "--data-dir", dir, "--json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		log.Fatalf("%s init: %v", name, err)
	}
	var res struct {
		AdminToken string `json:"admin_token"`
	}
	check(json.Unmarshal(out, &res))
	cfg := filepath.Join(dir, "bench-config.yaml")
	check(os.WriteFile(cfg, []byte("limits:\n  token_rate: 1000000\n  token_burst: 1000000\n  issuer_rate: 1000000\n"), 0o600))
	addrFile := filepath.Join(dir, "addr")
	args := []string{"server", "--data-dir", dir, "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--config", cfg,
		"--log-level", "error", "--metrics-listen", "off"}
	if !*useTLS {
		args = append(args, "--insecure-http")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	var pprofAddr string
	if *pprofDir != "" && name == "mayfly" {
		pprofAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
		cmd.Env = append(os.Environ(), "MAYFLY_PPROF_LISTEN="+pprofAddr)
	}
	startChild(cmd)
	b.procs = append(b.procs, cmd)
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			base = strings.TrimSpace(string(b))
		}
	}
	if base == "" {
		log.Fatalf("%s did not start", name)
	}
	hc := newClient(filepath.Join(dir, "ca.pem"))
	call(hc, "PUT", base+"/v1/secrets/api-token", `{"value":"bench-upstream-credential-0123456789"}`, "Authorization", "Bearer "+res.AdminToken)
	call(hc, "PUT", base+"/v1/policy", `issuers:
  ci: {url: `+iss.url+`, audience: `+audience+`}
upstreams:
  api: {url: "http://127.0.0.1:1", credential: {secret: api-token, prefix: "Bearer "}}
grants:
  deploy:
    upstream: api
    ttl: 1h
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository_id: "`+repoID+`"}}]
`, "Authorization", "Bearer "+res.AdminToken)
	log.Printf("%s %s (pid %d)", name, base, cmd.Process.Pid)
	return &target{
		name: name, pid: cmd.Process.Pid, client: hc, url: base + "/v1/token",
		ctype: "application/x-www-form-urlencoded",
		body: func(idt string) []byte {
			return []byte(url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {"deploy"}}.Encode())
		},
		want:      []byte(`"access_token":"mfy_`),
		pprofAddr: pprofAddr,
	}, dir
}

// startVault starts `vault server` on storage (raft or file), initialises
// and unseals it through the API (one key share), enables the jwt auth
// method trusting the issuer and a role bound like mayfly's grant, and,
// with audit "file", a file audit device.
func (b *bench) startVault(storage, audit string, iss *issuer, cert, key string) *target {
	name := "vault-" + storage + "-audit-" + audit
	dir := filepath.Join(b.tmp, name)
	check(os.MkdirAll(filepath.Join(dir, "data"), 0o700))
	port, clusterPort := freePort(), freePort()
	scheme, listenerTLS := "https", fmt.Sprintf("tls_cert_file = %q\n  tls_key_file = %q", cert, key)
	if !*useTLS {
		scheme, listenerTLS = "http", "tls_disable = true"
	}
	var store string
	switch storage {
	case "raft":
		store = fmt.Sprintf("storage \"raft\" {\n  path = %q\n  node_id = \"bench\"\n}", filepath.Join(dir, "data"))
	case "file":
		store = fmt.Sprintf("storage \"file\" {\n  path = %q\n}", filepath.Join(dir, "data"))
	default:
		log.Fatalf("-vault-storage: %q is neither raft nor file", storage)
	}
	if audit != "file" && audit != "none" {
		log.Fatalf("-vault-audit: %q is neither file nor none", audit)
	}
	conf := fmt.Sprintf(`%s
listener "tcp" {
  address = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  %s
}
api_addr = "%s://127.0.0.1:%d"
cluster_addr = "https://127.0.0.1:%d"
disable_mlock = true
ui = false
log_level = "warn"
`, store, port, clusterPort, listenerTLS, scheme, port, clusterPort)
	check(os.WriteFile(filepath.Join(dir, "vault.hcl"), []byte(conf), 0o600))
	logf, err := os.Create(filepath.Join(dir, "vault.log"))
	check(err)
	cmd := exec.Command(*vaultBin, "server", "-config", filepath.Join(dir, "vault.hcl"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "VAULT_DISABLE_USER_LOCKOUT=true")
	startChild(cmd)
	b.procs = append(b.procs, cmd)
	base := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	hc := newClient(filepath.Join(filepath.Dir(cert), "ca.pem"))

	// Up (any answer from /sys/health), initialised, unsealed, active.
	health := func() int {
		resp, err := hc.Get(base + "/v1/sys/health")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(name+" to listen", func() bool { return health() != 0 })
	var initRes struct {
		Keys      []string `json:"keys"`
		RootToken string   `json:"root_token"`
	}
	check(json.Unmarshal(call(hc, "PUT", base+"/v1/sys/init", `{"secret_shares":1,"secret_threshold":1}`), &initRes))
	call(hc, "PUT", base+"/v1/sys/unseal", fmt.Sprintf(`{"key":%q}`, initRes.Keys[0]))
	waitFor(name+" to become active", func() bool { return health() == 200 })
	root := func(method, path, body string) []byte {
		return call(hc, method, base+path, body, "X-Vault-Token", initRes.RootToken)
	}
	root("POST", "/v1/sys/auth/jwt", `{"type":"jwt"}`)
	root("POST", "/v1/auth/jwt/config", fmt.Sprintf(`{"oidc_discovery_url":%q,"bound_issuer":%q}`, iss.url, iss.url))
	root("PUT", "/v1/sys/policies/acl/deploy", `{"policy":"path \"secret/data/deploy/*\" { capabilities = [\"read\"] }"}`)
	root("POST", "/v1/auth/jwt/role/bench", fmt.Sprintf(`{"role_type":"jwt","user_claim":"sub","bound_audiences":[%q],
		"bound_claims":{"repository_id":%q},"token_policies":["deploy"],"token_ttl":"1h","token_max_ttl":"1h"}`, audience, repoID))
	if audit == "file" {
		root("PUT", "/v1/sys/audit/file", fmt.Sprintf(`{"type":"file","options":{"file_path":%q}}`, filepath.Join(dir, "audit.log")))
	}
	log.Printf("%s %s (pid %d)", name, base, cmd.Process.Pid)
	return &target{
		name: name, pid: cmd.Process.Pid, client: hc, url: base + "/v1/auth/jwt/login",
		ctype: "application/json",
		body: func(idt string) []byte {
			return []byte(`{"role":"bench","jwt":"` + idt + `"}`)
		},
		want: []byte(`"client_token":"hvs.`),
	}
}

// newClient trusts caFile (mayfly's init CA, which issued the certificate
// both servers serve) and keeps up to 256 connections alive.
func newClient(caFile string) *http.Client {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(caFile)
	check(err)
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     10 * time.Minute,
	}}
}

// call makes a set-up request and dies unless it succeeds (2xx).
func call(hc *http.Client, method, u, body string, header ...string) []byte {
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	check(err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	check(err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		log.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, data)
	}
	return data
}

func waitFor(what string, ok func() bool) {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	log.Fatalf("timed out waiting for %s", what)
}

func (b *bench) stopAll() {
	for _, c := range slices.Backward(b.procs) {
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
		}
	}
}

// startChild starts cmd so that it gets SIGTERM when the bench dies, even
// by log.Fatal: nothing it started outlives it.
func startChild(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	check(cmd.Start())
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ---- the issuer and the load ----

type issuer struct {
	iss *devissuer.Issuer
	url string
}

// startIssuer runs the OIDC issuer both servers trust, in this process;
// they fetch its discovery document and keys at set-up and cache them.
func startIssuer() *issuer {
	srv := httptest.NewUnstartedServer(nil)
	u := "http://" + srv.Listener.Addr().String()
	iss, err := devissuer.New(devissuer.Options{URL: u, Audience: audience})
	check(err)
	srv.Config.Handler = iss.Handler()
	srv.Start()
	return &issuer{iss: iss, url: u}
}

// mintForms signs n fresh ID tokens (GitHub Actions' claim shape, RS256,
// each its own jti) with the claim both servers' rules bind.
func (i *issuer) mintForms(n int) []string {
	out := make([]string, n)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < n; k += 2 {
				tok, err := i.iss.Mint(map[string]any{"repository_id": repoID}, audience, 10*time.Minute)
				check(err)
				out[k] = tok
			}
		}()
	}
	wg.Wait()
	return out
}

type runResult struct {
	lat      []time.Duration
	elapsed  time.Duration
	failed   int
	firstErr string
}

func (r runResult) quantile(q float64) time.Duration {
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// runExchanges sends every token once to t from c concurrent clients. The
// request bodies are built before the clock starts.
func runExchanges(t *target, c int, toks []string) runResult {
	bodies := make([][]byte, len(toks))
	for i, tok := range toks {
		bodies[i] = t.body(tok)
	}
	var mu sync.Mutex
	r := runResult{lat: make([]time.Duration, 0, len(toks))}
	next := 0
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.NewBuffer(make([]byte, 0, 4096))
			for {
				mu.Lock()
				if next >= len(bodies) {
					mu.Unlock()
					return
				}
				body := bodies[next]
				next++
				mu.Unlock()
				t0 := time.Now()
				errText := exchange(t, body, buf)
				d := time.Since(t0)
				mu.Lock()
				r.lat = append(r.lat, d)
				if errText != "" {
					r.failed++
					if r.firstErr == "" {
						r.firstErr = errText
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

// exchange makes one request and says what was wrong with its answer ("":
// a 200 carrying a token).
func exchange(t *target, body []byte, buf *bytes.Buffer) string {
	req, err := http.NewRequest("POST", t.url, bytes.NewReader(body))
	check(err)
	req.Header.Set("Content-Type", t.ctype)
	resp, err := t.client.Do(req)
	if err != nil {
		return err.Error()
	}
	buf.Reset()
	_, err = io.Copy(buf, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch {
	case err != nil:
		return err.Error()
	case resp.StatusCode != 200:
		return fmt.Sprintf("%d %.300s", resp.StatusCode, buf.Bytes())
	case !bytes.Contains(buf.Bytes(), t.want):
		return fmt.Sprintf("200 without %s", t.want)
	}
	return ""
}

// ---- measuring ----

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
