// Command external measures mayfly the way a user does: every program in its
// own process, a separate load generator, and anchors measured in the same
// run. It starts an upstream, nginx (when installed), a pooled
// httputil.ReverseProxy and the real mayfly binary (built from ./cmd/mayfly,
// or given with -mayfly; -baseline adds a second binary, e.g. an older
// build, as a further target), and drives them with wrk and curl.
//
// Rows (select with -rows):
//
//	gateway  p50/p99 at concurrency 1 (wrk -c1), requests/s with -c
//	         connections (wrk -c64) and each proxy's CPU per request, read
//	         from /proc/PID/stat (nginx: master and workers)
//	tls      the same saturated run over TLS (HTTP/1.1, keep-alive)
//	download a -download-mib body over TLS with curl, HTTP/1.1 and HTTP/2
//	gzip     a gzip-encoded body of -download-mib (decoded size) to a
//	         client that accepts gzip (curl --compressed), plain HTTP
//	mask     `mayfly mask` with 100 secrets in a pipe over -mask-mib of
//	         build-log text, against `cat` in the same pipe
//	verify   offline `mayfly audit verify` of a data dir holding
//	         -verify-entries gateway-shaped entries
//
// Every row runs -rounds times, interleaved (each round measures every
// target once), and the medians are printed with the machine's load
// average. Needs Linux (/proc), wrk and curl; an anchor that is not
// installed (nginx) is skipped with a note.
//
//	go run ./bench/external [-rounds 3] [-d 3s] [-rows gateway,tls,download,gzip,mask,verify]
//
// -pprof DIR builds mayfly with -tags mayfly_pprof and saves a CPU profile
// of each mayfly target's saturated runs (gateway, tls) and downloads to DIR;
// read one with `go tool pprof -top BIN DIR/FILE`.
//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
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
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mayfly-sh/mayfly/bench/internal/goproxy"
	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

var (
	rounds      = flag.Int("rounds", 3, "interleaved rounds; medians are reported")
	dur         = flag.Duration("d", 3*time.Second, "length of each wrk run")
	conns       = flag.Int("c", 64, "connections for the saturated runs")
	rowsFlag    = flag.String("rows", "gateway,tls,download,gzip,mask,verify", "rows to measure")
	size        = flag.Int("size", 256, "response body bytes of the gateway and tls rows")
	downloadMiB = flag.Int("download-mib", 200, "body size of the download and gzip rows")
	maskMiB     = flag.Int("mask-mib", 1024, "input size of the mask row")
	gzipRate    = flag.String("gzip-rate", "119M", "curl --limit-rate of the gzip row's second client (119M: a 1 Gbit/s link)")
	verifyN     = flag.Int("verify-entries", 1000000, "audit entries of the verify row")
	mayflyBin   = flag.String("mayfly", "", "mayfly binary to measure (default: build ./cmd/mayfly)")
	baseline    = flag.String("baseline", "", "a second mayfly binary measured as target \"mayfly-base\" (before/after in one run)")
	pprofDir    = flag.String("pprof", "", "save CPU profiles of the mayfly targets here (builds with -tags mayfly_pprof)")
	keep        = flag.Bool("keep", false, "keep the temporary folder")
	serve       = flag.Bool("serve", false, "start every target, print their URLs and wait for SIGINT (for strace, perf or pprof by hand)")
	role        = flag.String("role", "", "internal: run as the upstream or the Go proxy")
	upstreamArg = flag.String("upstream", "", "internal: the Go proxy's upstream")
	certArg     = flag.String("cert", "", "internal: the Go proxy's TLS certificate and key, comma-separated")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	switch *role {
	case "upstream":
		runUpstream()
		return
	case "goproxy":
		runGoProxy()
		return
	}
	for _, tool := range []string{"wrk", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("%s is not installed (apt-get install -y wrk curl nginx)", tool)
		}
	}
	rows := map[string]bool{}
	for _, r := range strings.Split(*rowsFlag, ",") {
		rows[strings.TrimSpace(r)] = true
	}
	tmp, err := os.MkdirTemp("", "mayfly-external-")
	check(err)
	if *keep {
		log.Printf("temporary folder: %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{tmp: tmp}
	defer b.stopAll()
	b.run(rows)
}

type bench struct {
	tmp   string
	procs []*exec.Cmd
}

// table prints a row's result as soon as it is measured: a later row that
// fails loses nothing.
func (b *bench) table(lines []string) {
	fmt.Printf("\n%s\n\n", strings.Join(lines, "\n"))
}

// target is one program measured: its URLs and the process whose CPU counts.
type target struct {
	name      string
	plain     string // base URL for plain HTTP; the gateway prefix included
	tls       string // base URL over TLS
	pid       int    // 0: none (direct)
	token     string // Authorization for mayfly
	pprofAddr string
}

func (b *bench) run(rows map[string]bool) {
	self, err := os.Executable()
	check(err)
	up := b.start("upstream", exec.Command(self, "-role", "upstream", "-size", strconv.Itoa(*size), "-download-mib", strconv.Itoa(*downloadMiB)))
	log.Printf("upstream %s", up.url)

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

	// One data dir gives the certificate every TLS anchor serves, so that
	// all of them do the same handshake and record work (ECDSA P-256).
	iss := startIssuer()
	var mayflies []*target
	var certFile, keyFile string
	for _, name := range slices.Sorted(mapsKeys(bins)) {
		if rows["gateway"] || rows["gzip"] {
			mayflies = append(mayflies, b.startMayfly(name, bins[name], iss, up.url, false))
		}
		if rows["tls"] || rows["download"] {
			t := b.startMayfly(name+"-tls", bins[name], iss, up.url, true)
			mayflies = append(mayflies, t)
			certFile, keyFile = filepath.Join(b.tmp, name+"-tls", "server.pem"), filepath.Join(b.tmp, name+"-tls", "server-key.pem")
		}
	}
	goproxy := b.start("goproxy", exec.Command(self, "-role", "goproxy", "-upstream", up.url))
	var goproxyTLS *started
	if certFile != "" {
		goproxyTLS = b.start("goproxy-tls", exec.Command(self, "-role", "goproxy", "-upstream", up.url, "-cert", certFile+","+keyFile))
	}
	nginx := b.startNginx(up.url, certFile, keyFile)

	direct := &target{name: "direct", plain: up.url}
	pooled := &target{name: "go ReverseProxy (pooled)", plain: goproxy.url, pid: goproxy.pid}
	var plainTargets, tlsTargets []*target
	plainTargets = append(plainTargets, direct)
	if nginx != nil {
		plainTargets = append(plainTargets, &target{name: "nginx", plain: nginx.plain, pid: nginx.pid})
		tlsTargets = append(tlsTargets, &target{name: "nginx", tls: nginx.tls, pid: nginx.pid})
	}
	plainTargets = append(plainTargets, pooled)
	if goproxyTLS != nil {
		tlsTargets = append(tlsTargets, &target{name: "go ReverseProxy (pooled)", tls: goproxyTLS.url, pid: goproxyTLS.pid})
	}
	for _, m := range mayflies {
		if m.tls != "" {
			tlsTargets = append(tlsTargets, m)
		} else {
			plainTargets = append(plainTargets, m)
		}
	}

	if *serve {
		for _, t := range append(plainTargets, tlsTargets...) {
			fmt.Printf("%-26s pid %-7d %s%s token %s pprof %s\n", t.name, t.pid, t.plain, t.tls, t.token, t.pprofAddr)
		}
		waitSignal()
		return
	}
	if rows["gateway"] {
		b.gatewayRow(plainTargets)
	}
	if rows["tls"] {
		b.tlsRow(tlsTargets)
	}
	if rows["download"] {
		b.downloadRow(tlsTargets)
	}
	if rows["gzip"] {
		var ts []*target
		for _, t := range plainTargets {
			if t != direct {
				ts = append(ts, t)
			}
		}
		b.gzipRow(ts)
	}
	if rows["mask"] {
		b.maskRow(bins)
	}
	if rows["verify"] {
		b.verifyRow(bins)
	}
}

// ---- processes ----

type started struct {
	url string
	pid int
}

// start runs cmd and reads the URL it prints on its first line.
func (b *bench) start(name string, cmd *exec.Cmd) *started {
	stdout, err := cmd.StdoutPipe()
	check(err)
	cmd.Stderr = os.Stderr
	startChild(cmd)
	b.procs = append(b.procs, cmd)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		log.Fatalf("%s did not start: %v", name, err)
	}
	go io.Copy(io.Discard, stdout)
	return &started{url: strings.TrimSpace(line), pid: cmd.Process.Pid}
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

type nginxProc struct {
	plain, tls string
	pid        int
}

// startNginx runs nginx (master and one worker per core) with proxy_pass to
// the upstream over kept-alive connections, or returns nil when nginx is not
// installed.
func (b *bench) startNginx(upURL, cert, key string) *nginxProc {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
			}
		}
	}
	if bin == "" {
		log.Printf("nginx is not installed: its anchor rows are skipped (apt-get install -y nginx)")
		fmt.Printf("\nnginx: not installed; its anchor rows are skipped\n")
		return nil
	}
	dir := filepath.Join(b.tmp, "nginx")
	check(os.MkdirAll(dir, 0o755))
	up := strings.TrimPrefix(upURL, "http://")
	plainPort, tlsPort := freePort(), freePort()
	tlsServer := ""
	if cert != "" {
		tlsServer = fmt.Sprintf(`server {
    listen 127.0.0.1:%d ssl http2;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`, tlsPort, cert, key)
	}
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  proxy_max_temp_file_size 0;
  keepalive_requests 1000000;
  upstream up { server %[2]s; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:%[3]d;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  %[4]s
}
`, dir, up, plainPort, tlsServer)
	check(os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644))
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	startChild(cmd)
	b.procs = append(b.procs, cmd)
	plain := fmt.Sprintf("http://127.0.0.1:%d", plainPort)
	waitUp(plain)
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	log.Printf("nginx %s (%s)", plain, strings.TrimSpace(string(out)))
	n := &nginxProc{plain: plain, pid: cmd.Process.Pid}
	if cert != "" {
		n.tls = fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
	}
	return n
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

func waitUp(u string) {
	c := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := c.Get(u + "/r/ping"); err == nil {
			resp.Body.Close()
			return
		}
	}
	log.Fatalf("%s did not come up", u)
}

// startMayfly initialises a data dir, starts the server, stores the
// upstream credential and a policy, and exchanges an ID token for the
// mayfly token the load generators send.
func (b *bench) startMayfly(name, bin string, iss *issuer, upURL string, useTLS bool) *target {
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
	if !useTLS {
		args = append(args, "--insecure-http")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	var pprofAddr string
	if *pprofDir != "" {
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
	hc := &http.Client{Timeout: 30 * time.Second}
	if useTLS {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		check(err)
		pool.AppendCertsFromPEM(pem)
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	do := func(method, path, ctype, body, tok string) []byte {
		r, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		resp, err := hc.Do(r)
		check(err)
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			log.Fatalf("%s: %s %s: %d %s", name, method, path, resp.StatusCode, data)
		}
		return data
	}
	do("PUT", "/v1/secrets/api-token", "", `{"value":"bench-upstream-credential-0123456789"}`, res.AdminToken)
	do("PUT", "/v1/policy", "", `issuers:
  ci: {url: `+iss.url+`, audience: https://mayfly.bench}
upstreams:
  api: {url: "`+upURL+`", credential: {secret: api-token, prefix: "Bearer "}}
grants:
  calls:
    upstream: api
    ttl: 1h
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`, res.AdminToken)
	idt, err := iss.iss.Mint(nil, "https://mayfly.bench", 0)
	check(err)
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {"calls"}}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	check(json.Unmarshal(do("POST", "/v1/token", "application/x-www-form-urlencoded", form.Encode(), ""), &tok))
	t := &target{name: name, pid: cmd.Process.Pid, token: tok.AccessToken, pprofAddr: pprofAddr}
	if useTLS {
		t.tls = base + "/gw/api"
	} else {
		t.plain = base + "/gw/api"
	}
	log.Printf("%s %s (pid %d)", name, base, t.pid)
	return t
}

type issuer struct {
	iss *devissuer.Issuer
	url string
}

// startIssuer runs the OIDC issuer mayfly trusts, in this process: it is
// used only to set up, never while measuring.
func startIssuer() *issuer {
	srv := httptest.NewUnstartedServer(nil)
	u := "http://" + srv.Listener.Addr().String()
	iss, err := devissuer.New(devissuer.Options{URL: u, Audience: "https://mayfly.bench"})
	check(err)
	srv.Config.Handler = iss.Handler()
	srv.Start()
	return &issuer{iss: iss, url: u}
}

// ---- measuring ----

type wrkResult struct {
	rps, requests float64
	p50, p99      time.Duration
	errors        string
	cpu           time.Duration // the proxy's CPU per request
}

// wrk runs the load generator against u and reads the proxy's CPU around it.
func wrk(t *target, u string, threads, connections int) wrkResult {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(connections), "-d", fmt.Sprintf("%.0fs", dur.Seconds()), "--latency"}
	if t.token != "" {
		args = append(args, "-H", "Authorization: Bearer "+t.token)
	}
	cpu0 := measure.TreeCPU(t.pid)
	out, err := exec.Command("wrk", append(args, u)...).CombinedOutput()
	cpu := measure.TreeCPU(t.pid) - cpu0
	if err != nil {
		log.Fatalf("wrk %s: %v\n%s", u, err, out)
	}
	r := parseWrk(string(out))
	if r.requests > 0 {
		r.cpu = time.Duration(float64(cpu) / r.requests)
	}
	if r.errors != "" {
		log.Printf("%s: %s", t.name, r.errors)
	}
	return r
}

func parseWrk(out string) wrkResult {
	var r wrkResult
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "50%":
			r.p50 = parseDur(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99 = parseDur(f[1])
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) > 2 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseFloat(f[0], 64)
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx") || strings.HasPrefix(strings.TrimSpace(line), "Socket errors"):
			r.errors += strings.TrimSpace(line) + "; "
		}
	}
	return r
}

func parseDur(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return time.Duration(f * float64(u.unit))
		}
	}
	return 0
}

// profile records a CPU profile of a mayfly target while fn runs.
func profile(t *target, file string, fn func()) {
	if t.pprofAddr == "" {
		fn()
		return
	}
	secs := int(dur.Seconds())
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.pprofAddr, max(1, secs-1)))
		if err != nil {
			log.Printf("pprof %s: %v", t.name, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(*pprofDir, file))
		check(err)
		io.Copy(f, resp.Body)
		f.Close()
	}()
	fn()
	<-done
}

type series struct {
	load []float64
}

func (s *series) note() { s.load = append(s.load, measure.LoadAvg()) }

func (s *series) loadText() string {
	return fmt.Sprintf("load average (1 min) over the rounds: median %.1f, %.1f–%.1f", measure.Median(s.load), slices.Min(s.load), slices.Max(s.load))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func (b *bench) gatewayRow(ts []*target) {
	type res struct {
		p50, p99, cpu, added []time.Duration
		rps                  []float64
	}
	all := map[string]*res{}
	var s series
	for round := range *rounds {
		var direct time.Duration
		for _, t := range ts {
			r := all[t.name]
			if r == nil {
				r = &res{}
				all[t.name] = r
			}
			u := t.plain + "/r/repos/acme/app/issues?state=open"
			lat := wrk(t, u, 1, 1)
			var sat wrkResult
			profile(t, fmt.Sprintf("gateway-%s-%d.pprof", t.name, round+1), func() { sat = wrk(t, u, 2, *conns) })
			if t.name == "direct" {
				direct = lat.p50
			}
			r.p50, r.p99, r.rps, r.cpu = append(r.p50, lat.p50), append(r.p99, lat.p99), append(r.rps, sat.rps), append(r.cpu, sat.cpu)
			r.added = append(r.added, lat.p50-direct)
			s.note()
			log.Printf("gateway round %d %-26s p50 %8v p99 %8v (+%v over direct) | %6.0f req/s, CPU %v/req", round+1, t.name,
				lat.p50, lat.p99, lat.p50-direct, sat.rps, sat.cpu.Round(100*time.Nanosecond))
		}
	}
	var nginxCPU time.Duration
	if r := all["nginx"]; r != nil {
		nginxCPU = measure.Median(r.cpu)
	}
	out := []string{fmt.Sprintf("## gateway: plain HTTP, %d-byte responses, wrk -c1 for latency and -c%d -t2 for throughput, %v runs, medians of %d rounds; %s",
		*size, *conns, *dur, *rounds, s.loadText()),
		"", "| target | p50 (c=1) | p99 (c=1) | p50 added over direct | req/s (c=" + strconv.Itoa(*conns) + ") | CPU per request | CPU vs nginx |", "|---|---|---|---|---|---|---|"}
	for _, t := range ts {
		r := all[t.name]
		vs := "—"
		if nginxCPU > 0 && t.pid != 0 {
			vs = fmt.Sprintf("%.1f×", float64(measure.Median(r.cpu))/float64(nginxCPU))
		}
		cpu := "—"
		if t.pid != 0 {
			cpu = us(measure.Median(r.cpu))
		}
		out = append(out, fmt.Sprintf("| %s | %s | %s | %s | %.0f | %s | %s |", t.name, us(measure.Median(r.p50)), us(measure.Median(r.p99)), us(measure.Median(r.added)), measure.Median(r.rps), cpu, vs))
	}
	b.table(out)
}

func (b *bench) tlsRow(ts []*target) {
	type res struct {
		cpu []time.Duration
		rps []float64
	}
	all := map[string]*res{}
	var s series
	for round := range *rounds {
		for _, t := range ts {
			r := all[t.name]
			if r == nil {
				r = &res{}
				all[t.name] = r
			}
			var sat wrkResult
			profile(t, fmt.Sprintf("tls-%s-%d.pprof", t.name, round+1), func() { sat = wrk(t, t.tls+"/r/repos/acme/app/issues?state=open", 2, *conns) })
			r.rps, r.cpu = append(r.rps, sat.rps), append(r.cpu, sat.cpu)
			s.note()
			log.Printf("tls round %d %-26s %6.0f req/s, CPU %v/req", round+1, t.name, sat.rps, sat.cpu.Round(100*time.Nanosecond))
		}
	}
	var nginxCPU time.Duration
	if r := all["nginx"]; r != nil {
		nginxCPU = measure.Median(r.cpu)
	}
	out := []string{fmt.Sprintf("## tls: HTTP/1.1 over TLS (ECDSA P-256, the same certificate everywhere), keep-alive, wrk -c%d -t2, %v runs, medians of %d rounds; %s",
		*conns, *dur, *rounds, s.loadText()), "", "| target | req/s | CPU per request | CPU vs nginx TLS |", "|---|---|---|---|"}
	for _, t := range ts {
		r := all[t.name]
		vs := "—"
		if nginxCPU > 0 {
			vs = fmt.Sprintf("%.1f×", float64(measure.Median(r.cpu))/float64(nginxCPU))
		}
		out = append(out, fmt.Sprintf("| %s | %.0f | %s | %s |", t.name, measure.Median(r.rps), us(measure.Median(r.cpu)), vs))
	}
	b.table(out)
}

// curl fetches u and returns the wall time, the proxy's CPU time and the
// bytes curl wrote (decoded, with --compressed).
func curl(t *target, u string, extra ...string) (time.Duration, time.Duration, int64) {
	args := append([]string{"-sS", "-k", "-f"}, extra...)
	if t.token != "" {
		args = append(args, "-H", "Authorization: Bearer "+t.token)
	}
	cmd := exec.Command("curl", append(args, u)...)
	stdout, err := cmd.StdoutPipe()
	check(err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cpu0 := measure.TreeCPU(t.pid)
	start := time.Now()
	check(cmd.Start())
	n, _ := io.CopyBuffer(io.Discard, stdout, make([]byte, 1<<20))
	err = cmd.Wait()
	el := time.Since(start)
	cpu := measure.TreeCPU(t.pid) - cpu0
	if err != nil {
		log.Fatalf("curl %s %v: %v %s", u, extra, err, stderr.Bytes())
	}
	return el, cpu, n
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

func (b *bench) downloadRow(ts []*target) {
	type res struct {
		speed []float64
		cpu   []time.Duration
	}
	all := map[string]*res{}
	var s series
	var keys []string
	total := int64(*downloadMiB) << 20
	for round := range *rounds {
		for _, t := range ts {
			for _, proto := range []string{"--http1.1", "--http2"} {
				key := t.name + " " + strings.TrimPrefix(proto, "--")
				r := all[key]
				if r == nil {
					r = &res{}
					all[key] = r
					keys = append(keys, key)
				}
				var el, cpu time.Duration
				var n int64
				profile(t, fmt.Sprintf("download-%s-%s-%d.pprof", t.name, strings.TrimPrefix(proto, "--"), round+1), func() {
					el, cpu, n = curl(t, t.tls+"/big", proto)
				})
				if n != total {
					log.Fatalf("%s: downloaded %d bytes, want %d", key, n, total)
				}
				r.speed, r.cpu = append(r.speed, mibps(n, el)), append(r.cpu, cpu)
				s.note()
				log.Printf("download round %d %-34s %6.0f MiB/s, CPU %v", round+1, key, mibps(n, el), cpu)
			}
		}
	}
	out := []string{fmt.Sprintf("## download: %d MiB over TLS with curl, medians of %d rounds; %s", *downloadMiB, *rounds, s.loadText()),
		"", "| target | MiB/s | proxy CPU per download |", "|---|---|---|"}
	for _, k := range keys {
		out = append(out, fmt.Sprintf("| %s | %.0f | %.2f s |", k, measure.Median(all[k].speed), measure.Median(all[k].cpu).Seconds()))
	}
	b.table(out)
}

func (b *bench) gzipRow(ts []*target) {
	type res struct {
		speed, limited []float64
		cpu            []time.Duration
		wire           int64
	}
	all := map[string]*res{}
	var s series
	total := int64(*downloadMiB) << 20
	for round := range *rounds {
		for _, t := range ts {
			r := all[t.name]
			if r == nil {
				r = &res{}
				all[t.name] = r
			}
			// The wire size; the timed fetch that decodes as a
			// gzip-accepting client does; the same on a 1 Gbit/s link.
			_, _, wire := curl(t, t.plain+"/gz", "-H", "Accept-Encoding: gzip")
			var el, cpu time.Duration
			var n int64
			profile(t, fmt.Sprintf("gzip-%s-%d.pprof", t.name, round+1), func() { el, cpu, n = curl(t, t.plain+"/gz", "--compressed") })
			if n != total {
				log.Fatalf("%s: decoded %d bytes, want %d", t.name, n, total)
			}
			elLimited, _, _ := curl(t, t.plain+"/gz", "--compressed", "--limit-rate", *gzipRate)
			r.speed, r.cpu, r.wire = append(r.speed, mibps(n, el)), append(r.cpu, cpu), wire
			r.limited = append(r.limited, mibps(n, elLimited))
			s.note()
			log.Printf("gzip round %d %-26s %6.0f MiB/s decoded (%6.0f at --limit-rate %s), CPU %v, %d bytes on the wire", round+1, t.name,
				mibps(n, el), mibps(n, elLimited), *gzipRate, cpu, wire)
		}
	}
	out := []string{fmt.Sprintf("## gzip: a gzip-encoded body of %d MiB (decoded) to curl --compressed, plain HTTP, medians of %d rounds; %s", *downloadMiB, *rounds, s.loadText()),
		"", fmt.Sprintf("| target | decoded MiB/s, loopback | decoded MiB/s, client at --limit-rate %s | proxy CPU per body | bytes sent to the client |", *gzipRate), "|---|---|---|---|---|"}
	for _, t := range ts {
		r := all[t.name]
		out = append(out, fmt.Sprintf("| %s | %.0f | %.0f | %.2f s | %d MiB |", t.name, measure.Median(r.speed), measure.Median(r.limited), measure.Median(r.cpu).Seconds(), r.wire>>20))
	}
	b.table(out)
}

func (b *bench) maskRow(bins map[string]string) {
	dir := filepath.Join(b.tmp, "mask")
	check(os.MkdirAll(dir, 0o755))
	secrets := maskSecrets(100)
	check(os.WriteFile(filepath.Join(dir, "secrets"), append(bytes.Join(secrets, []byte("\n")), '\n'), 0o600))
	input := filepath.Join(dir, "input")
	f, err := os.Create(input)
	check(err)
	chunk := maskLog(secrets, 16<<20)
	var written int64
	for written < int64(*maskMiB)<<20 {
		n, err := f.Write(chunk[:min(int64(len(chunk)), int64(*maskMiB)<<20-written)])
		check(err)
		written += int64(n)
	}
	check(f.Close())
	names := append([]string{"cat"}, slices.Sorted(mapsKeys(bins))...)
	speed, cpuSpeed := map[string][]float64{}, map[string][]float64{}
	var s series
	for round := range *rounds {
		for _, name := range names {
			mid := exec.Command("cat")
			if name != "cat" {
				mid = exec.Command(bins[name], "mask", "--values-file", filepath.Join(dir, "secrets"))
			}
			// Warm the page cache, then time the pipe.
			exec.Command("sh", "-c", fmt.Sprintf("cat %q > /dev/null", input)).Run()
			el, cpu := pipe(input, mid)
			mbps, cpuMBps := float64(written)/1e6/el.Seconds(), float64(written)/1e6/cpu.Seconds()
			speed[name], cpuSpeed[name] = append(speed[name], mbps), append(cpuSpeed[name], cpuMBps)
			s.note()
			log.Printf("mask round %d %-12s %6.0f MB/s wall, %6.0f MB per CPU second of the middle process", round+1, name, mbps, cpuMBps)
		}
	}
	out := []string{fmt.Sprintf("## mask: `cat input | X | cat > /dev/null`, %d MiB of build-log text, 100 secrets, medians of %d rounds; %s", *maskMiB, *rounds, s.loadText()),
		"", "| X | MB/s (wall) | vs cat | MB per CPU second of X |", "|---|---|---|---|"}
	for _, name := range names {
		label := name
		if name != "cat" {
			label = name + " mask"
		}
		out = append(out, fmt.Sprintf("| %s | %.0f | %.0f %% | %.0f |", label, measure.Median(speed[name]), 100*measure.Median(speed[name])/measure.Median(speed["cat"]), measure.Median(cpuSpeed[name])))
	}
	b.table(out)
}

// pipe runs `cat input | mid | cat > /dev/null` and returns the wall time
// and mid's CPU time (user and system).
func pipe(input string, mid *exec.Cmd) (time.Duration, time.Duration) {
	src := exec.Command("cat", input)
	sink := exec.Command("cat")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	check(err)
	defer devnull.Close()
	r1, w1, err := os.Pipe()
	check(err)
	r2, w2, err := os.Pipe()
	check(err)
	src.Stdout, mid.Stdin, mid.Stdout, sink.Stdin, sink.Stdout = w1, r1, w2, r2, devnull
	mid.Stderr = os.Stderr
	start := time.Now()
	for _, c := range []*exec.Cmd{src, mid, sink} {
		check(c.Start())
	}
	// The children hold the pipe ends now.
	for _, f := range []*os.File{r1, w1, r2, w2} {
		f.Close()
	}
	for _, c := range []*exec.Cmd{src, mid, sink} {
		if err := c.Wait(); err != nil {
			log.Fatalf("%v: %v", c.Args, err)
		}
	}
	return time.Since(start), mid.ProcessState.UserTime() + mid.ProcessState.SystemTime()
}

func (b *bench) verifyRow(bins map[string]string) {
	// One data dir per binary (a newer build may migrate the schema).
	dirs := map[string]string{}
	for _, name := range slices.Sorted(mapsKeys(bins)) {
		dir := filepath.Join(b.tmp, "verify-"+name)
		if out, err := exec.Command(bins[name], "init", "--data-dir", dir, "--json").CombinedOutput(); err != nil {
			log.Fatalf("init: %v %s", err, out)
		}
		start := time.Now()
		fillAudit(dir, *verifyN)
		log.Printf("verify: %d entries written to %s in %v", *verifyN, dir, time.Since(start).Round(time.Millisecond))
		dirs[name] = dir
	}
	wall, cpu := map[string][]time.Duration{}, map[string][]time.Duration{}
	var s series
	for round := range *rounds {
		for _, name := range slices.Sorted(mapsKeys(bins)) {
			start := time.Now()
			cmd := exec.Command(bins[name], "audit", "verify", "--data-dir", dirs[name], "--no-state")
			out, err := cmd.CombinedOutput()
			el := time.Since(start)
			if err != nil {
				// e.g. a baseline older than the store's schema this
				// bench wrote with.
				log.Printf("verify %s: %v %s: not measured", name, err, out)
				continue
			}
			c := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			wall[name], cpu[name] = append(wall[name], el), append(cpu[name], c)
			s.note()
			log.Printf("verify round %d %-12s %v wall, %v CPU: %s", round+1, name, el.Round(time.Millisecond), c.Round(time.Millisecond), strings.TrimSpace(string(out)))
		}
	}
	scale := 1e6 / float64(*verifyN)
	out := []string{fmt.Sprintf("## verify: offline `mayfly audit verify --data-dir DIR --no-state` of %d gateway-shaped entries (SQLite), medians of %d rounds; %s", *verifyN, *rounds, s.loadText()),
		"", "| binary | wall per 1,000,000 entries | CPU per 1,000,000 entries |", "|---|---|---|"}
	for _, name := range slices.Sorted(mapsKeys(bins)) {
		if len(wall[name]) > 0 {
			out = append(out, fmt.Sprintf("| %s | %.2f s | %.2f s |", name, measure.Median(wall[name]).Seconds()*scale, measure.Median(cpu[name]).Seconds()*scale))
		}
	}
	b.table(out)
}

// ---- the upstream and the Go proxy (child processes) ----

func printURL(l net.Listener, scheme string) {
	fmt.Printf("%s://%s\n", scheme, l.Addr())
	os.Stdout.Sync()
}

// runUpstream serves /r/… (a small JSON body), /big (-download-mib of
// bytes) and /gz (the same size of JSON lines, gzip-encoded once at start).
func runUpstream() {
	small := []byte(strings.Repeat("x", *size))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = "abcdefghijklmnopqrstuvwxyz0123456789 \n"[i%38]
	}
	gz := gzipLines(int64(*downloadMiB) << 20)
	mux := http.NewServeMux()
	mux.HandleFunc("/r/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(small)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(int64(*downloadMiB)<<20, 10))
		for range *downloadMiB {
			if _, err := w.Write(big); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/gz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
		w.Write(gz)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	printURL(l, "http")
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	waitSignal()
}

// runGoProxy serves the anchor a Go programmer would write (goproxy).
func runGoProxy() {
	target, err := url.Parse(*upstreamArg)
	check(err)
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	proxy := goproxy.New(target, tr)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	if *certArg != "" {
		cert, key, _ := strings.Cut(*certArg, ",")
		printURL(l, "https")
		go srv.ServeTLS(l, cert, key)
	} else {
		printURL(l, "http")
		go srv.Serve(l)
	}
	waitSignal()
}

// waitSignal returns when the bench stops this process.
func waitSignal() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
