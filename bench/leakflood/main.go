// Command leakflood measures what a flood of leak reports does to other
// clients: one client's exchange and gateway-call latency with no flood
// and while a separate flooder process sends /v1/leaks reports of 1000
// made-up tokens as fast as they are answered, from many source addresses
// (127.0.0.2 and up: each has its own per-address rate, as a botnet's
// addresses would). The server is the real binary (TLS, embedded SQLite or
// PostgreSQL, default limits except the measuring client's own exchange
// rate). Rounds interleave quiet and flooded phases; it prints each phase's
// median latency, the ratios flooded/quiet per round (of the median, of the
// mean, which is one over the client's throughput, and of the 90th
// percentile) and their medians over the rounds (the figure issue 12
// bounds at 2), the server's CPU per second in each phase and what the
// flooder's reports got.
//
//	go run ./bench/leakflood [-rounds 20] [-d 1s] [-n 1000] [-flooders 8] [-addrs 200] [-nice 0]
//		[-limits YAML] [-path /v1/leaks] [-postgres DSN]
//
// Linux only (it reads /proc and sends from 127.0.0.0/8 addresses). The
// flooder shares this machine's cores with the server; -nice N lowers its
// priority, standing in for a flooder on other machines.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/token"
)

var (
	rounds   = flag.Int("rounds", 20, "interleaved rounds of quiet and flooded phases")
	phase    = flag.Duration("d", time.Second, "length of each measured phase, per operation")
	verbose  = flag.Bool("v", false, "say on stderr when each phase begins (to attach a profiler)")
	maxOps   = flag.Int("n", 1000, "most calls in one measured phase")
	flooders = flag.Int("flooders", 8, "concurrent flooding connections")
	addrs    = flag.Int("addrs", 200, "source addresses the flooder sends from (127.0.0.2 on)")
	perRep   = flag.Int("tokens", 1000, "made-up tokens per report")
	nice     = flag.Int("nice", 0, "niceness of the flooder process")
	pgDSN    = flag.String("postgres", "", "PostgreSQL DSN (default: embedded SQLite)")
	binFlag  = flag.String("bin", "", "mayfly binary (default: go build ./cmd/mayfly)")
	limits   = flag.String("limits", "", `more server limits, YAML, e.g. "leak_token_rate: 1e9" (the budget out of the way)`)
	path     = flag.String("path", "/v1/leaks", "where the flooder sends its reports (a path the server answers 404 gives the cost of any refused request of that size)")
	// The flooder role: this program started again by itself.
	floodURL = flag.String("flood", "", "(internal) flood this server")
	floodCA  = flag.String("ca", "", "(internal) CA file of the server to flood")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *floodURL != "" {
		flood()
		return
	}
	tmp, err := os.MkdirTemp("", "mayfly-leakflood-")
	check(err)
	defer os.RemoveAll(tmp)
	bin := *binFlag
	if bin == "" {
		bin = filepath.Join(tmp, "mayfly")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/mayfly").CombinedOutput(); err != nil {
			fatalf("build: %v\n%s", err, out)
		}
	}
	data := filepath.Join(tmp, "data")
	args := []string{"init", "--data-dir", data, "--json"}
	if *pgDSN != "" {
		args = append(args, "--postgres", *pgDSN)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		fatalf("init: %v %s", err, out)
	}
	var ini struct {
		AdminToken string `json:"admin_token"`
	}
	check(json.Unmarshal(out, &ini))

	issSrv := httptest.NewUnstartedServer(nil)
	// ES256: minting a token costs the harness ~50 µs, not RS256's ~1.5 ms.
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + issSrv.Listener.Addr().String(), Audience: "https://mayfly.bench", Algorithm: "ES256"})
	check(err)
	issSrv.Config.Handler = iss.Handler()
	issSrv.Start()
	defer issSrv.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer up.Close()

	// Default limits but the measuring client's own exchange rate: it is
	// one address asking as fast as it is answered.
	cfg := filepath.Join(tmp, "config.yaml")
	extra := ""
	if *limits != "" {
		extra = "  " + strings.ReplaceAll(strings.TrimSpace(*limits), "\n", "\n  ") + "\n"
	}
	check(os.WriteFile(cfg, []byte("limits:\n  token_rate: 1000000\n  token_burst: 1000000\n  issuer_rate: 1000000\n"+extra), 0o600))
	addrFile := filepath.Join(tmp, "addr")
	sargs := []string{"server", "--data-dir", data, "--listen", "127.0.0.1:0", "--addr-file", addrFile,
		"--config", cfg, "--log-level", "error", "--metrics-listen", "off"}
	if *pgDSN != "" {
		sargs = append(sargs, "--postgres", *pgDSN)
	}
	srv := exec.Command(bin, sargs...)
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	check(srv.Start())
	stopServer := func() { srv.Process.Signal(os.Interrupt); srv.Wait() }
	atExit = append(atExit, stopServer, func() { os.RemoveAll(tmp) })
	defer stopServer()
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			fatalf("server did not start")
		}
		if b, err := os.ReadFile(addrFile); err == nil {
			base = strings.TrimSpace(string(b))
		}
	}
	caFile := filepath.Join(data, "ca.pem")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(caFile), MaxIdleConnsPerHost: 4}}
	do := func(method, path, bearer, ctype, body string) (int, string) {
		r, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		resp, err := hc.Do(r)
		if err != nil {
			fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := do("PUT", "/v1/secrets/api-token", ini.AdminToken, "application/json", `{"value":"bench-upstream-credential-0123456789"}`); c != 200 {
		fatalf("secret: %d %s", c, b)
	}
	policy := `issuers:
  ci: {url: ` + iss.URL() + `, audience: https://mayfly.bench, algorithms: [ES256]}
upstreams:
  api: {url: "` + up.URL + `", credential: {secret: api-token, prefix: "Bearer "}}
grants:
  calls:
    upstream: api
    ttl: 1h
    allow: [{methods: [GET], paths: ["/r/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	if c, b := do("PUT", "/v1/policy", ini.AdminToken, "application/yaml", policy); c != 200 {
		fatalf("policy: %d %s", c, b)
	}
	// ID tokens are minted ahead: signing is the issuer's cost.
	idts := make(chan string, 1<<16)
	mint := func(n int) {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for range (n + 3 - w) / 4 {
					t, err := iss.Mint(nil, "https://mayfly.bench", 0)
					check(err)
					idts <- t
				}
			})
		}
		wg.Wait()
	}
	var body string
	exchange := func() (int, string) {
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {<-idts},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {"calls"}}
		c, b := do("POST", "/v1/token", "", "application/x-www-form-urlencoded", form.Encode())
		body = b
		var o struct {
			AccessToken string `json:"access_token"`
		}
		json.Unmarshal([]byte(b), &o)
		return c, o.AccessToken
	}
	mint(1)
	c, job := exchange()
	if c != 200 {
		fatalf("exchange: %d %s", c, body)
	}
	ops := []struct {
		name string
		do   func(i int) int
	}{
		{"exchange", func(int) int { c, _ := exchange(); return c }},
		{"gateway", func(i int) int { c, _ := do("GET", "/gw/api/r/"+strconv.Itoa(i), job, "", ""); return c }},
	}

	type sample struct {
		p50, p90 time.Duration
		mean     time.Duration // the phase's length over its calls: 1/throughput
		n        int
		cpu      float64 // server CPU seconds per second
		flooder  float64 // the flooder's CPU seconds per second (flooded phases)
	}
	results := map[string][2][]sample{}
	run := func(name string, op func(int) int) sample {
		if *verbose {
			log.Printf("phase %s begins", name)
		}
		var lat []time.Duration
		cpu0 := measure.CPU(srv.Process.Pid).Seconds()
		start := time.Now()
		for i := 0; time.Since(start) < *phase && i < *maxOps; i++ {
			t := time.Now()
			if c := op(i); c != 200 {
				fatalf("measured call answered %d", c)
			}
			lat = append(lat, time.Since(t))
		}
		el := time.Since(start).Seconds()
		cpu := (measure.CPU(srv.Process.Pid).Seconds() - cpu0) / el
		for len(idts) > 0 {
			<-idts
		}
		slices.Sort(lat)
		return sample{p50: lat[len(lat)/2], p90: lat[len(lat)*9/10], mean: time.Duration(el * float64(time.Second) / float64(len(lat))), n: len(lat), cpu: cpu}
	}
	fmt.Printf("leak flood: %s backend, TLS, %d flooding connections from %d addresses, %d tokens per report to %s, flooder nice %d, limits %q, %d cores, load %s\n",
		backend(), *flooders, *addrs, *perRep, *path, *nice, *limits, measure.NumCPU(), measure.LoadAvgs())
	// One flooder for the whole run, stopped (SIGSTOP) during quiet
	// phases: phases can be short and many, so that the machine's own
	// swings (other tenants' disk and CPU) fall on both kinds alike.
	fl := startFlooder(base, caFile)
	atExit = append(atExit, func() { fl.cmd.Process.Kill(); fl.cmd.Wait() })
	fl.pause()
	var floodSecs float64
	for r := range *rounds {
		for _, op := range ops {
			s := results[op.name]
			var q, f sample
			// ABBA: the quiet phase first in even rounds, last in odd ones.
			for k := range 2 {
				if op.name == "exchange" {
					mint(*maxOps)
				}
				if (k == 0) == (r%2 == 0) {
					q = run(op.name+" quiet", op.do)
					continue
				}
				fl.resume()
				time.Sleep(100 * time.Millisecond) // the flood is running again
				t := time.Now()
				fcpu := measure.CPU(fl.cmd.Process.Pid).Seconds()
				f = run(op.name+" flood", op.do)
				el := time.Since(t).Seconds()
				f.flooder = (measure.CPU(fl.cmd.Process.Pid).Seconds() - fcpu) / el
				floodSecs += el
				fl.pause()
			}
			s[0] = append(s[0], q)
			s[1] = append(s[1], f)
			results[op.name] = s
			fmt.Printf("round %2d %-8s quiet p50 %7s p90 %7s (n=%4d, server %.2f CPU) | flood p50 %7s p90 %7s (n=%4d, server %.2f CPU) | ratio p50 %.2f mean %.2f\n",
				r+1, op.name, q.p50.Round(time.Microsecond), q.p90.Round(time.Microsecond), q.n, q.cpu,
				f.p50.Round(time.Microsecond), f.p90.Round(time.Microsecond), f.n, f.cpu,
				float64(f.p50)/float64(q.p50), float64(f.mean)/float64(q.mean))
		}
	}
	st := fl.stop()
	fmt.Printf("\nmedians over %d rounds (load now %s)\n", *rounds, measure.LoadAvgs())
	fmt.Printf("%-9s %10s %10s %9s %10s %9s %10s %10s %12s\n", "", "quiet p50", "flood p50", "p50 ratio", "mean ratio", "p90 ratio", "quiet CPU", "flood CPU", "flooder CPU")
	for _, op := range ops {
		s := results[op.name]
		var ratios, rmean, r90 []float64
		for i := range s[0] {
			ratios = append(ratios, float64(s[1][i].p50)/float64(s[0][i].p50))
			rmean = append(rmean, float64(s[1][i].mean)/float64(s[0][i].mean))
			r90 = append(r90, float64(s[1][i].p90)/float64(s[0][i].p90))
		}
		md := func(xs []sample, f func(sample) float64) float64 {
			var v []float64
			for _, x := range xs {
				v = append(v, f(x))
			}
			return measure.Median(v)
		}
		p50 := func(x sample) float64 { return float64(x.p50) }
		cpu := func(x sample) float64 { return x.cpu }
		fcpu := func(x sample) float64 { return x.flooder }
		fmt.Printf("%-9s %10s %10s %9.2f %10.2f %9.2f %10.2f %10.2f %12.2f\n", op.name, time.Duration(md(s[0], p50)).Round(time.Microsecond),
			time.Duration(md(s[1], p50)).Round(time.Microsecond), measure.Median(ratios), measure.Median(rmean), measure.Median(r90), md(s[0], cpu), md(s[1], cpu), md(s[1], fcpu))
	}
	// Rates per second of flooded phases (the flooder also ran during the
	// 100 ms before each, which these slightly overstate).
	fmt.Printf("flooder: %.0f reports/s sent, %.1f/s worked (%.0f tokens/s), %.0f/s refused (429/413), %.1f/s other\n",
		float64(st.Sent)/floodSecs, float64(st.Took)/floodSecs, float64(st.Took)*float64(*perRep)/floodSecs,
		float64(st.Refused)/floodSecs, float64(st.Other)/floodSecs)
}

type floodStats struct {
	Sent, Took, Refused, Other int64
	Seconds                    float64
}

type flooder struct {
	cmd *exec.Cmd
	out io.ReadCloser
}

// startFlooder starts this program again in the flooder role and returns
// once its first report has been answered.
func startFlooder(base, caFile string) *flooder {
	self, err := os.Executable()
	check(err)
	args := []string{"-flood", base, "-path", *path, "-ca", caFile, "-flooders", strconv.Itoa(*flooders), "-addrs", strconv.Itoa(*addrs),
		"-tokens", strconv.Itoa(*perRep)}
	cmd := exec.Command(self, args...)
	if *nice != 0 {
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(*nice), self}, args...)...)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	check(err)
	check(cmd.Start())
	var line [1]byte
	if _, err := io.ReadFull(out, line[:]); err != nil {
		fatalf("flooder did not start: %v", err)
	}
	return &flooder{cmd: cmd, out: out}
}

// pause stops the flooder process where it is; resume lets it go on.
func (f *flooder) pause()  { check(stopProcess(f.cmd.Process)) }
func (f *flooder) resume() { check(continueProcess(f.cmd.Process)) }

func (f *flooder) stop() floodStats {
	continueProcess(f.cmd.Process)
	f.cmd.Process.Signal(os.Interrupt)
	var st floodStats
	if err := json.NewDecoder(f.out).Decode(&st); err != nil {
		fatalf("flooder: %v", err)
	}
	f.cmd.Wait()
	return st
}

// flood is the flooder role: it writes one byte when its first report is
// answered, floods until interrupted, then writes its counts as JSON.
func flood() {
	var sb strings.Builder
	for range *perRep {
		tok, err := token.New(token.Job)
		check(err)
		sb.WriteString(tok + "\n")
	}
	report := sb.String()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var sent, took, refused, other atomic.Int64
	var first sync.Once
	started := make(chan struct{})
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *flooders {
		wg.Go(func() {
			// Each connection sends from its own address, changed after
			// every report, so no per-address limit applies.
			clients := make([]*http.Client, 0, *addrs / *flooders + 1)
			for a := w; a < *addrs; a += *flooders {
				ip := net.IPv4(127, 0, byte((a+2)>>8), byte(a+2))
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
				clients = append(clients, &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
					TLSClientConfig: tlsConfig(*floodCA), DialContext: d.DialContext, MaxIdleConnsPerHost: 1}})
			}
			for i := 0; ctx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(ctx, "POST", *floodURL+*path, strings.NewReader(report))
				req.Header.Set("Content-Type", "text/plain")
				sent.Add(1)
				resp, err := clients[i%len(clients)].Do(req)
				if err != nil {
					if ctx.Err() == nil {
						other.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					took.Add(1)
				case 429, 413:
					refused.Add(1)
				default:
					other.Add(1)
				}
				first.Do(func() { close(started) })
			}
		})
	}
	select {
	case <-started:
		os.Stdout.Write([]byte{'\n'})
	case <-ctx.Done():
	}
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(floodStats{Sent: sent.Load(), Took: took.Load(), Refused: refused.Load(), Other: other.Load(),
		Seconds: time.Since(start).Seconds()})
}

func tlsConfig(caFile string) *tls.Config {
	pem, err := os.ReadFile(caFile)
	check(err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool}
}

func backend() string {
	if *pgDSN != "" {
		return "PostgreSQL"
	}
	return "SQLite"
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// atExit holds what a fatal error must still stop (the server, the
// flooder), since log.Fatal runs no deferred calls.
var atExit []func()

func fatalf(format string, args ...any) {
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
	log.Fatalf(format, args...)
}
