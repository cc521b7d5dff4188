package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/proccpu"
)

// BenchmarkExchange measures POST /v1/token through the server's whole
// handler in process (no TLS, no network): form parse, RS256 ID-token
// verification, jti, policy decision, the durable lease and its audit
// entry on embedded SQLite, the JSON answer. ID tokens are GitHub-shaped
// (devissuer), each sent once, and minted before the clock starts. It
// reports the process's CPU per exchange beside wall time; -cpuprofile and
// -benchmem show where it goes. issue 19's exchange row is measured on the
// real binary by go run ./bench/vault.
//
//	go test -run '^$' -bench 'Exchange$' -benchmem -benchtime 2000x ./internal/server/
func BenchmarkExchange(b *testing.B) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "data")
	res, err := Init(ctx, InitOptions{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	issSrv := httptest.NewUnstartedServer(nil)
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + issSrv.Listener.Addr().String(), Audience: "https://mayfly.test"})
	if err != nil {
		b.Fatal(err)
	}
	issSrv.Config.Handler = iss.Handler()
	issSrv.Start()
	b.Cleanup(issSrv.Close)
	s, err := New(ctx, Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0",
		Limits: ConfigLimits{TokenRate: 1e9, TokenBurst: 1 << 30, IssuerRate: 1e9}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	h := s.Handler()
	call := func(method, path, bearer, ctype, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		r.Header.Set("Content-Type", ctype)
		r.RemoteAddr = "127.0.0.1:40000"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := call("PUT", "/v1/secrets/gh", res.AdminToken, "application/json", `{"value":"`+plantedSecret+`"}`); w.Code != 200 {
		b.Fatalf("secret: %d %s", w.Code, w.Body)
	}
	pol := strings.Replace(policyYAML(iss.URL(), ""), `repository_id: "123456789"`, `repository: acme/app`, -1)
	if w := call("PUT", "/v1/policy", res.AdminToken, "application/yaml", pol); w.Code != 200 {
		b.Fatalf("policy: %d %s", w.Code, w.Body)
	}
	mint := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			tok, err := iss.Mint(nil, "https://mayfly.test", 10*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			out[i] = exchangeForm(tok, "deploy")
		}
		return out
	}
	exchange := func(body string) {
		if w := call("POST", "/v1/token", "", form, body); w.Code != http.StatusOK {
			b.Errorf("exchange: %d %s", w.Code, w.Body)
		}
	}
	exchange(mint(1)[0]) // the JWKS fetched, the statements prepared
	for _, clients := range []int{1, 32} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			bodies := mint(b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := proccpu.Used()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(len(bodies)) {
							return
						}
						exchange(bodies[i])
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64((proccpu.Used()-cpu0).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/op")
		})
	}
}
