package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// BenchmarkLeakFlood measures one client's exchanges and gateway calls
// with nothing else running (quiet) and while 8 others flood /v1/leaks with
// reports of 1000 made-up tokens each, as fast as they are answered, from
// what the per-address limit takes for many addresses (leak_rate is set
// out of the way). It reports both latencies, their ratio (flood/quiet)
// and how many reports the node worked on and refused.
//
// The flooders run in this process: they share its Go scheduler and CPU
// with the server, and once limits.leak_token_rate is spent they spin on
// 429s answered in microseconds, so the ratio mostly measures them. The
// figure issue 12 bounds at 2 comes from go run ./bench/leakflood (the real
// binary, the flood in a process of its own); this benchmark shows where
// the node's time goes (-cpuprofile) and how many reports it works on.
//
//	go test -run '^$' -bench LeakFlood -benchtime 200x ./internal/server/
func BenchmarkLeakFlood(b *testing.B) {
	env := newFloodEnv(b)
	// ID tokens are minted before the clock starts: signing is the
	// issuer's work, not the node's.
	var idts []string
	ops := map[string]func(b *testing.B, i int){
		"exchange": func(b *testing.B, i int) {
			env.call(b, "POST", "/v1/token", "", form, exchangeForm(idts[i], "deploy"))
		},
		"gateway": func(b *testing.B, i int) {
			env.call(b, "GET", "/gw/api/repos/acme/app/x", env.jobToken, "", "")
		},
	}
	for _, name := range []string{"exchange", "gateway"} {
		op := ops[name]
		b.Run(name, func(b *testing.B) {
			run := func() time.Duration {
				idts = idts[:0]
				if name == "exchange" {
					for range b.N {
						idts = append(idts, env.issuer.mint(b, nil))
					}
				}
				start := time.Now()
				for i := 0; i < b.N; i++ {
					op(b, i)
				}
				return time.Since(start)
			}
			quiet := run()
			stop := env.flood(b, 8)
			flooded := run()
			took, refused := stop()
			b.ReportMetric(float64(quiet.Nanoseconds())/float64(b.N), "quiet-ns/op")
			b.ReportMetric(float64(flooded.Nanoseconds())/float64(b.N), "flood-ns/op")
			b.ReportMetric(float64(flooded)/float64(quiet), "flood/quiet")
			b.ReportMetric(float64(took)/flooded.Seconds(), "reports/s")
			b.ReportMetric(float64(refused)/flooded.Seconds(), "refused/s")
		})
	}
}

type floodEnv struct {
	http     *httptest.Server
	issuer   *testIssuer
	admin    string
	jobToken string
	client   *http.Client
}

func newFloodEnv(b *testing.B) *floodEnv {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "data")
	res, err := Init(ctx, InitOptions{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	e := &floodEnv{issuer: newTestIssuer(b), admin: res.AdminToken,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	b.Cleanup(up.Close)
	s, err := New(ctx, Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0",
		Limits: ConfigLimits{TokenRate: 1e6, TokenBurst: 1e6, IssuerRate: 1e6, LeakRate: 1e6}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	e.http = httptest.NewServer(s.Handler())
	b.Cleanup(e.http.Close)
	e.call(b, "PUT", "/v1/secrets/gh", e.admin, "application/json", `{"value":"`+plantedSecret+`"}`)
	pol := strings.Replace(policyYAML(e.issuer.srv.URL, ""), "http://127.0.0.1:1", up.URL, 1)
	e.call(b, "PUT", "/v1/policy", e.admin, "application/yaml", pol)
	out := e.call(b, "POST", "/v1/token", "", form, exchangeForm(e.issuer.mint(b, nil), "deploy"))
	tok, _, _ := strings.Cut(strings.TrimPrefix(out, `{"access_token":"`), `"`)
	if !strings.HasPrefix(tok, "mfy_") {
		b.Fatalf("exchange: %s", out)
	}
	e.jobToken = tok
	return e
}

// call does one request and fails unless it answers 200.
func (e *floodEnv) call(b *testing.B, method, path, bearer, ctype, body string) string {
	req, _ := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		b.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return string(out)
}

// flood starts n senders of leak reports (1000 made-up tokens each); stop
// ends them and says how many reports were answered 200 and how many were
// turned away.
func (e *floodEnv) flood(b *testing.B, n int) (stop func() (took, refused int64)) {
	var sb strings.Builder
	for range 1000 {
		tok, _ := token.New(token.Job)
		fmt.Fprintln(&sb, tok)
	}
	report := sb.String()
	var took, refused atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := c.Post(e.http.URL+"/v1/leaks", "text/plain", strings.NewReader(report))
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					took.Add(1)
				} else {
					refused.Add(1)
				}
			}
		}()
	}
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		c.CloseIdleConnections()
		return took.Load(), refused.Load()
	}
}
