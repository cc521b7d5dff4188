// Command ghexchange measures what a grant on a github_app upstream with
// deliver: gateway costs the RFC 8693 exchange once its installation token
// is cached (SPEC section 9), against today's exchange of a grant on a
// stored secret: the same in-process handler, one client, the two grants'
// exchanges alternating one by one (so both see the same machine), the
// median and mean latency of each, and the machine's load average. -aa
// runs today's grant in both slots, to show the noise of the method.
//
//	go run ./bench/ghexchange [-rounds 10] [-n 200] [-aa] [-postgres DSN]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/server"
)

func main() {
	rounds := flag.Int("rounds", 10, "rounds")
	n := flag.Int("n", 200, "exchanges per grant per round")
	aa := flag.Bool("aa", false, "today's grant in both slots (an A/A run: the method's noise)")
	pg := flag.String("postgres", "", "PostgreSQL DSN (default: embedded SQLite)")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "mayfly-ghbench-")
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
	gh, err := githubtest.Start(githubtest.Options{Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app"}, Permissions: map[string]string{"contents": "write"}}}})
	check(err)
	defer gh.Close()

	addrFile := filepath.Join(dir, "addr")
	cfg := server.Config{DataDir: data, Listen: "127.0.0.1:0", AddrFile: addrFile, Postgres: *pg,
		Limits: server.ConfigLimits{TokenRate: 1e9, TokenBurst: 1 << 30, IssuerRate: 1e9, LeakRate: 1e9}}
	s, err := server.New(ctx, cfg, server.NewLogger(os.Stderr, "text", "error"))
	check(err)
	go s.Serve(ctx)
	defer s.Close(context.Background())
	var base string
	for base == "" {
		b, _ := os.ReadFile(addrFile)
		base = strings.TrimSpace(string(b))
		time.Sleep(10 * time.Millisecond)
	}
	admin, err := client.New(client.Config{Addr: base, CACertFile: res.CAFile, Token: res.AdminToken, AdminToken: true,
		Timeout: 10 * time.Second, Getenv: func(string) string { return "" }})
	check(err)
	_, err = admin.PutSecret(ctx, "gh", []byte("bench-upstream-credential"))
	check(err)
	_, err = admin.PutSecret(ctx, "gh-app-key", gh.PrivateKey)
	check(err)
	_, err = admin.ApplyPolicy(ctx, []byte(fmt.Sprintf(`issuers:
  ci: {url: %s, audience: https://mayfly.bench}
upstreams:
  api: {url: "http://127.0.0.1:1", credential: {secret: gh}}
  github:
    url: %s
    credential: {github_app: {app_id: "%s", private_key_secret: gh-app-key, installation_id: "7890"}}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository_id: "123456789"}}]
  release:
    upstream: github
    ttl: 10m
    github: {repositories: [app], permissions: {contents: write}}
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: ci, claims: {repository_id: "123456789"}}]
`, issuerURL, gh.URL, gh.AppID)))
	check(err)

	do := func(body string) int {
		req := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "127.0.0.1:1234"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	// Warm: the first release exchange mints the grant's shared token.
	for _, g := range []string{"deploy", "release"} {
		if code := do(mint(iss, 1, g)[0]); code != http.StatusOK {
			log.Fatalf("warm-up exchange for %s: %d", g, code)
		}
	}
	minted := gh.Calls("POST /app/installations/{id}/access_tokens")

	grants := []string{"deploy", "release"}
	if *aa {
		grants[1] = "deploy"
	}
	lat := [2][]time.Duration{}
	for r := 0; r < *rounds; r++ {
		a, b := mint(iss, *n, grants[0]), mint(iss, *n, grants[1])
		for i := 0; i < *n; i++ {
			// Alternate which goes first, so neither always follows the other.
			first := (i + r) % 2
			for k := 0; k < 2; k++ {
				slot := first ^ k
				body := a[i]
				if slot == 1 {
					body = b[i]
				}
				t := time.Now()
				if code := do(body); code != http.StatusOK {
					log.Fatalf("%s: exchange answered %d", grants[slot], code)
				}
				lat[slot] = append(lat[slot], time.Since(t))
			}
		}
	}
	if more := gh.Calls("POST /app/installations/{id}/access_tokens") - minted; more != 0 {
		log.Fatalf("%d tokens minted during the run: the cache was not used", more)
	}
	fmt.Printf("exchange with deliver: gateway on a cached GitHub App token vs a stored secret\n")
	fmt.Printf("%s backend, in-process handler, 1 client, %d × %d exchanges per grant alternating one by one; load average %s\n",
		backend(*pg), *rounds, *n, measure.LoadAvgs())
	names := [2]string{"stored secret (today)", "github_app, cached token"}
	if *aa {
		names[1] = "stored secret (again, A/A)"
	}
	var p50, mean [2]float64
	for k := 0; k < 2; k++ {
		p50[k], mean[k] = stats(lat[k])
		fmt.Printf("%-30s p50 %7.0fµs  mean %7.0fµs\n", names[k], p50[k], mean[k])
	}
	fmt.Printf("ratio (second / first): p50 %.3f, mean %.3f\n", p50[1]/p50[0], mean[1]/mean[0])
	cancel()
}

func backend(pg string) string {
	if pg != "" {
		return "PostgreSQL"
	}
	return "SQLite"
}

// stats returns the median and the mean, in microseconds.
func stats(v []time.Duration) (float64, float64) {
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return float64(s[len(s)/2].Microseconds()), float64(sum.Microseconds()) / float64(len(s))
}

func mint(iss *devissuer.Issuer, n int, grant string) []string {
	out := make([]string, n)
	for i := range out {
		tok, err := iss.Mint(map[string]any{"repository_id": "123456789"}, "https://mayfly.bench", 10*time.Minute)
		check(err)
		v := url.Values{}
		v.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
		v.Set("subject_token", tok)
		v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:id_token")
		v.Set("scope", grant)
		out[i] = v.Encode()
	}
	return out
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
