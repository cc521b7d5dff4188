// Command pgrole measures PostgreSQL-role exchanges through the real HTTPS
// server (SPEC section 9): the latency of an exchange that makes a role per
// lease, against a plain exchange (a stored-secret grant) in interleaved
// rounds of the same process, and the time from revoking 1,000 such leases
// at once (one admin call) until the last role is gone from the database.
//
//	go run ./bench/pgrole [-rounds 10] [-per 20] [-revoke 1000] [-pg postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable]
//
// -pg is a superuser DSN: the harness makes its own database and admin
// role there and drops them at the end.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/bench/internal/measure"
	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/server"
)

func main() {
	rounds := flag.Int("rounds", 10, "interleaved rounds")
	per := flag.Int("per", 20, "exchanges of each kind per round")
	revokeN := flag.Int("revoke", 1000, "leases revoked at once")
	pgDSN := flag.String("pg", envOr("MAYFLY_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "superuser DSN of the upstream server")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	up := setupUpstream(ctx, *pgDSN)
	defer up.drop()

	dir, err := os.MkdirTemp("", "mayfly-bench-pgrole-")
	check(err)
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "data")
	res, err := server.Init(ctx, server.InitOptions{DataDir: data})
	check(err)
	issuerSrv := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + issuerSrv.Listener.Addr().String()
	iss, err := devissuer.New(devissuer.Options{URL: issuerURL, Audience: "https://mayfly.bench"})
	check(err)
	issuerSrv.Config.Handler = iss.Handler()
	issuerSrv.Start()
	defer issuerSrv.Close()
	addrFile := filepath.Join(dir, "addr")
	cfg := server.Config{DataDir: data, Listen: "127.0.0.1:0", AddrFile: addrFile,
		Limits: server.ConfigLimits{TokenRate: 1e9, TokenBurst: 1 << 30, IssuerRate: 1e9, LeakRate: 1e9, AdminRate: 1e9, AdminBurst: 1 << 30}}
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
	admin := func(method, path, body string) string {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+res.AdminToken)
		resp, err := client.Do(req)
		check(err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			log.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return string(b)
	}
	js := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	admin("PUT", "/v1/secrets/gh", `{"value":"bench-upstream-credential"}`)
	admin("PUT", "/v1/secrets/db-admin", `{"value":`+js(up.adminDSN)+`}`)
	admin("PUT", "/v1/policy", fmt.Sprintf(`issuers:
  ci: {url: %s, audience: https://mayfly.bench}
upstreams:
  api: {url: "http://127.0.0.1:1", credential: {secret: gh}}
  %s:
    postgres:
      admin_dsn_secret: db-admin
      creation: %s
      revocation: %s
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository_id: "1"}}]
  migrate:
    upstream: %s
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {repository_id: "1"}}]
`, issuerURL, up.name, js(up.creation()), js(up.revocation()), up.name))

	exchange := func(body string) (time.Duration, int) {
		t0 := time.Now()
		resp, err := client.Post(base+"/v1/token", "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			return 0, 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t0), resp.StatusCode
	}
	// Warm both paths (TLS session, admin pool).
	for _, g := range []string{"deploy", "migrate"} {
		for _, b := range bodies(iss, g, 3) {
			if _, code := exchange(b); code != 200 {
				log.Fatalf("warm-up %s: %d", g, code)
			}
		}
	}
	var plain, role []time.Duration
	for r := 0; r < *rounds; r++ {
		for _, kind := range []string{"deploy", "migrate"} {
			for _, b := range bodies(iss, kind, *per) {
				d, code := exchange(b)
				if code != 200 {
					log.Fatalf("exchange %s: %d", kind, code)
				}
				if kind == "deploy" {
					plain = append(plain, d)
				} else {
					role = append(role, d)
				}
			}
		}
	}
	fmt.Printf("PostgreSQL-role exchange benchmark: SQLite store, HTTPS on loopback, 1 client, %d interleaved rounds of %d; load average %s\n", *rounds, *per, measure.LoadAvgs())
	fmt.Printf("%-34s %8s %8s %8s\n", "exchange", "n", "p50", "p99")
	fmt.Printf("%-34s %8d %8s %8s\n", "plain (stored-secret grant)", len(plain), pct(plain, 50), pct(plain, 99))
	fmt.Printf("%-34s %8d %8s %8s\n", "PostgreSQL role (creates a role)", len(role), pct(role, 50), pct(role, 99))

	// Revoke many leases at once.
	if *revokeN > 0 {
		// Clear what the rounds made so the count below is only these.
		admin("POST", "/v1/leases/revoke", `{"grant":"migrate"}`)
		up.waitRoles(0, 2*time.Minute)
		bs := bodies(iss, "migrate", *revokeN)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, b := range bs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, code := exchange(b); code != 200 {
					log.Fatalf("exchange: %d", code)
				}
			}()
		}
		wg.Wait()
		if n := up.countRoles(); n != *revokeN {
			log.Fatalf("%d roles, want %d", n, *revokeN)
		}
		load := measure.LoadAvgs()
		t0 := time.Now()
		admin("POST", "/v1/leases/revoke", `{"grant":"migrate"}`)
		answered := time.Since(t0)
		up.waitRoles(0, 5*time.Minute)
		fmt.Printf("revoke %d PostgreSQL-role leases at once: answered in %v, last role dropped after %v (load average %s)\n",
			*revokeN, answered.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), load)
	}
	cancel()
	s.Close(context.Background())
}

func bodies(iss *devissuer.Issuer, grant string, n int) []string {
	out := make([]string, n)
	for i := range out {
		tok, err := iss.Mint(map[string]any{"repository_id": "1"}, "https://mayfly.bench", 10*time.Minute)
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

func pct(ds []time.Duration, p int) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%.1fms", float64(s[len(s)*p/100].Microseconds())/1000)
}

// upstream is the harness's own database and admin role.
type upstream struct {
	super, adminDSN, db, adminRole, group, name string
}

func setupUpstream(ctx context.Context, super string) *upstream {
	var b [5]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	u := &upstream{super: super, db: "mfb_db_" + id, adminRole: "mfb_admin_" + id, group: "mfb_group_" + id, name: "bench-db-" + id}
	conn, err := pgx.Connect(ctx, super)
	check(err)
	defer conn.Close(ctx)
	for _, q := range []string{"CREATE ROLE " + u.adminRole + " LOGIN CREATEROLE PASSWORD 'bench'", "CREATE ROLE " + u.group + " NOLOGIN",
		"GRANT " + u.group + " TO " + u.adminRole + " WITH ADMIN OPTION", "GRANT pg_signal_backend TO " + u.adminRole,
		"CREATE DATABASE " + u.db + " OWNER " + u.adminRole} {
		_, err := conn.Exec(ctx, q)
		check(err)
	}
	pu, err := url.Parse(super)
	check(err)
	pu.Path = "/" + u.db
	pu.User = url.UserPassword(u.adminRole, "bench")
	u.adminDSN = pu.String()
	return u
}

func (u *upstream) creation() string {
	return `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}' IN ROLE ` + u.group + ";"
}

func (u *upstream) revocation() string {
	return `REASSIGN OWNED BY "{{name}}" TO ` + u.group + `; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`
}

func (u *upstream) countRoles() int {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u.super)
	check(err)
	defer conn.Close(ctx)
	var n int
	check(conn.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mayfly\_%\_'||$1`, pgsql.UpstreamSuffix(u.name)).Scan(&n))
	return n
}

func (u *upstream) waitRoles(want int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for u.countRoles() != want {
		if time.Now().After(deadline) {
			log.Fatalf("roles still there after %v", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *upstream) drop() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u.super)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "DROP DATABASE IF EXISTS "+u.db+" WITH (FORCE)")
	rows, err := conn.Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'mayfly\_%\_'||$1`, pgsql.UpstreamSuffix(u.name))
	if err == nil {
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, n := range names {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgsql.QuoteIdent(n))
		}
	}
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+u.group)
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+u.adminRole)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
