// Command gateway benchmarks mayfly's gateway on loopback, in one process:
// an upstream server; a client calling it directly; a bare
// httputil.ReverseProxy with the gateway's transport settings; and the
// mayfly gateway with every check, a real audit log on SQLite in a
// temporary folder, and metrics. It prints requests/s at saturation and
// p50/p99 latency at concurrency 1, and the ratios gateway/bare.
//
//	go run ./bench/gateway [-c 64] [-d 3s] [-n 3000] [-size 256] [-rounds 3] [-durable]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/bench/internal/goproxy"
	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/gateway"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/proccpu"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

type secrets struct{}

func (secrets) Reveal(context.Context, string) ([]byte, int, error) {
	return []byte("ghp_BenchUpstreamCredential0123456789abc"), 1, nil
}

type fixedPolicy struct{ p *policy.Policy }

func (f fixedPolicy) Current() *policy.Policy { return f.p }

func serve(h http.Handler) (string, func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return "http://" + l.Addr().String(), func() { srv.Close() }
}

func transport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   256,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

func main() {
	conc := flag.Int("c", 64, "concurrent clients for the throughput run")
	dur := flag.Duration("d", 3*time.Second, "duration of each throughput run")
	n := flag.Int("n", 3000, "sequential requests for the latency run")
	size := flag.Int("size", 256, "response body size")
	rounds := flag.Int("rounds", 3, "rounds over all targets; medians are reported")
	durable := flag.Bool("durable", false, "gateway waits for each entry's fsync (gateway_durable_audit)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of one throughput run (the first round's) to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile of the profiled throughput run to this file")
	profiled := flag.String("profile", "mayfly gateway", "the target -cpuprofile profiles: direct, bare proxy or mayfly gateway")
	flag.Parse()
	ctx := context.Background()

	body := []byte(strings.Repeat("x", *size))
	upURL, stopUp := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	defer stopUp()

	target, _ := url.Parse(upURL)
	bareURL, stopBare := serve(&httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  transport(),
		BufferPool: goproxy.NewBufferPool(256), // as the gateway: no 32 KiB garbage per response
	})
	defer stopBare()

	dir, err := os.MkdirTemp("", "mayfly-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := store.Open(ctx, store.Config{Path: filepath.Join(dir, "mayfly.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	hasher, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	leases := lease.New(db, hasher, lease.Options{})
	if err := leases.Load(ctx); err != nil {
		log.Fatal(err)
	}
	signer, _, _ := audit.GenerateKey("bench/audit")
	reg := prometheus.NewRegistry()
	aopts := auditlog.Options{Registerer: reg, DurableRequests: *durable}
	if auditlog.JournalSupported() { // as the server does on embedded SQLite
		aopts.Journal = filepath.Join(dir, "audit.journal")
	}
	alog, err := auditlog.Open(ctx, db, signer, aopts)
	if err != nil {
		log.Fatal(err)
	}
	defer alog.Close(ctx)
	pol, err := policy.Parse([]policy.File{{Name: "bench.yaml", Data: []byte(`
issuers:
  ci: {url: https://ci.example.com, audience: bench}
upstreams:
  api:
    url: ` + upURL + `
    credential: {secret: api-token, prefix: "Bearer "}
grants:
  read:
    upstream: api
    ttl: 1h
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`)}}, nil)
	if err != nil {
		log.Fatal(err)
	}
	tok, _, err := leases.Issue(ctx, lease.Request{Issuer: "ci", Subject: "bench", Job: "1", Claims: map[string]string{"iss": "https://ci.example.com", "repository": "acme/app"},
		Grants: []string{"read"}, TTL: time.Hour, MaxTTL: time.Hour, Source: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		log.Fatal(err)
	}
	ta := &timedAuditor{Log: alog, d: make([]time.Duration, 0, *n)}
	gw, err := gateway.New(gateway.Config{Leases: leases, Policies: fixedPolicy{pol}, Secrets: secrets{}, Auditor: ta, Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	gwURL, stopGW := serve(gw)
	defer stopGW()
	// The same gateway with its audit log switched off, on its own
	// metrics registry.
	gwOff, err := gateway.New(gateway.Config{Leases: leases, Policies: fixedPolicy{pol}, Secrets: secrets{}, Auditor: &nopAuditor{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		log.Fatal(err)
	}
	offURL, stopOff := serve(gwOff)
	defer stopOff()

	path := "/repos/acme/app/issues?state=open"
	targets := []struct{ name, url string }{
		{"direct", upURL + path},
		{"bare proxy", bareURL + path},
		{"mayfly gateway", gwURL + "/gw/api" + path},
		{"gw, audit off", offURL + "/gw/api" + path},
	}
	client := &http.Client{Transport: transport()}
	do := func(u string) error {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	type result struct {
		p50, p99 time.Duration
		rps      float64
		cpu      time.Duration // process CPU time per request at saturation
	}
	run := func(name, u string, profile bool) result {
		for range 200 { // warm up
			if err := do(u); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
		}
		lat := make([]time.Duration, 0, *n)
		for range *n {
			s := time.Now()
			if err := do(u); err != nil {
				log.Fatalf("%s: %v", name, err)
			}
			lat = append(lat, time.Since(s))
		}
		slices.Sort(lat)
		if profile {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
			if *memprofile != "" {
				runtime.MemProfileRate = 4096
				defer func() {
					mf, err := os.Create(*memprofile)
					if err != nil {
						log.Fatal(err)
					}
					pprof.Lookup("allocs").WriteTo(mf, 0)
					mf.Close()
					runtime.MemProfileRate = 0
				}()
			}
		}
		var count, fails atomic.Int64
		stop := time.Now().Add(*dur)
		var wg sync.WaitGroup
		start, cpu0 := time.Now(), proccpu.Used()
		for range *conc {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if err := do(u); err != nil {
						fails.Add(1)
						continue
					}
					count.Add(1)
				}
			})
		}
		wg.Wait()
		el, cpu := time.Since(start), proccpu.Used()-cpu0
		if fails.Load() > 0 {
			log.Printf("%s: %d failed requests", name, fails.Load())
		}
		return result{lat[len(lat)/2], lat[len(lat)*99/100], float64(count.Load()) / el.Seconds(), cpu / time.Duration(max(count.Load(), 1))}
	}
	// Rounds interleave the targets, so that a noisy neighbour or a CPU
	// frequency change hits all of them; medians are reported.
	runs := map[string][]result{}
	var ratios, cpuRatios, addedVsBare, addedVsDirect []float64
	for round := range *rounds {
		for _, t := range targets {
			runs[t.name] = append(runs[t.name], run(t.name, t.url, round == 0 && *cpuprofile != "" && t.name == *profiled))
		}
		d, b, g := runs["direct"][round], runs["bare proxy"][round], runs["mayfly gateway"][round]
		ratios = append(ratios, g.rps/b.rps)
		addedVsBare = append(addedVsBare, float64(g.p50-b.p50))
		addedVsDirect = append(addedVsDirect, float64(g.p50-d.p50))
		fmt.Fprintf(os.Stderr, "round %d: throughput gateway/bare %.0f%%, CPU per request bare/gateway %.0f%%, p50 added vs direct %v\n",
			round+1, 100*g.rps/b.rps, 100*float64(b.cpu)/float64(g.cpu), (g.p50 - d.p50).Round(time.Microsecond))
		cpuRatios = append(cpuRatios, float64(b.cpu)/float64(g.cpu))
	}
	res := map[string]result{}
	for name, rs := range runs {
		var p50, p99, rps, cpu []float64
		for _, r := range rs {
			p50, p99, rps, cpu = append(p50, float64(r.p50)), append(p99, float64(r.p99)), append(rps, r.rps), append(cpu, float64(r.cpu))
		}
		res[name] = result{time.Duration(measure.Median(p50)), time.Duration(measure.Median(p99)), measure.Median(rps), time.Duration(measure.Median(cpu))}
	}
	fmt.Printf("loopback, %d-byte responses; latency over %d sequential requests; throughput with %d clients for %v; median of %d rounds\n\n",
		*size, *n, *conc, *dur, *rounds)
	fmt.Printf("%-16s %10s %10s %12s %14s %14s %12s\n", "target", "p50", "p99", "req/s", "p50 added", "p99 added", "CPU/req")
	d := res["direct"]
	for _, t := range targets {
		r := res[t.name]
		fmt.Printf("%-16s %10v %10v %12.0f %14v %14v %12v\n", t.name, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rps,
			(r.p50 - d.p50).Round(time.Microsecond), (r.p99 - d.p99).Round(time.Microsecond), r.cpu.Round(time.Microsecond))
	}
	fmt.Printf("\ngateway/bare: throughput %.0f%%, CPU per request bare/gateway %.0f%%, p50 added vs bare %v, p50 added vs direct %v (medians of the per-round figures)\n",
		100*measure.Median(ratios), 100*measure.Median(cpuRatios), time.Duration(measure.Median(addedVsBare)).Round(time.Microsecond), time.Duration(measure.Median(addedVsDirect)).Round(time.Microsecond))
	slices.Sort(ta.d)
	if len(ta.d) > 0 {
		fmt.Printf("gateway wait for its audit entry (latency run): p50 %v, p99 %v\n",
			ta.d[len(ta.d)/2].Round(time.Microsecond), ta.d[len(ta.d)*99/100].Round(time.Microsecond))
	}
	fmt.Printf("audit log size after the run: %d entries", alog.Size())
	if mfs, err := reg.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() == "mayfly_audit_batch_size" {
				h := mf.GetMetric()[0].GetHistogram()
				fmt.Printf(", in %d group commits (mean %.1f entries)", h.GetSampleCount(), h.GetSampleSum()/float64(h.GetSampleCount()))
			}
		}
	}
	fmt.Println()
}

// timedAuditor records how long the gateway waits for its audit entries
// (the first 3000: the latency run).
type timedAuditor struct {
	*auditlog.Log
	mu   sync.Mutex
	d    []time.Duration
	full atomic.Bool // d is full: the throughput runs pay no clock reads or lock
}

// Add and Begin wait for the answer themselves, timed; the gateway's own
// Wait then returns at once.
func (t *timedAuditor) Add(ctx context.Context, ev audit.Event) auditlog.Future {
	var f auditlog.Future
	t.timed(ctx, ev, func(ctx context.Context, ev audit.Event) (int64, error) {
		f = t.Log.Add(ctx, ev)
		return f.Wait(ctx)
	})
	return f
}

func (t *timedAuditor) Begin(ctx context.Context, ev audit.Event) *auditlog.Intent {
	var in *auditlog.Intent
	t.timed(ctx, ev, func(ctx context.Context, ev audit.Event) (int64, error) {
		in = t.Log.Begin(ctx, ev)
		return in.Wait(ctx)
	})
	return in
}

func (t *timedAuditor) timed(ctx context.Context, ev audit.Event, appendFn func(context.Context, audit.Event) (int64, error)) (int64, error) {
	if t.full.Load() {
		return appendFn(ctx, ev)
	}
	s := time.Now()
	i, err := appendFn(ctx, ev)
	t.mu.Lock()
	if len(t.d) < cap(t.d) {
		t.d = append(t.d, time.Since(s))
	}
	t.full.Store(len(t.d) == cap(t.d))
	t.mu.Unlock()
	return i, err
}

// nopAuditor records nothing: the "audit off" row shows what the audit
// log costs the gateway, measured in the same rounds.
type nopAuditor struct{ n atomic.Int64 }

func (a *nopAuditor) Add(context.Context, audit.Event) auditlog.Future {
	return auditlog.Answered(a.n.Add(1), nil)
}

func (a *nopAuditor) Begin(context.Context, audit.Event) *auditlog.Intent {
	return &auditlog.Intent{Future: auditlog.Answered(a.n.Add(1), nil)}
}

func (a *nopAuditor) Finish(*auditlog.Intent, audit.Event, string) { a.n.Add(1) }
