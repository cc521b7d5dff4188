package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/server"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// liveServer is a real mayfly server in this process, on a loopback port,
// serving TLS with its data dir's certificate.
type liveServer struct {
	addr, admin, caFile, dir string
}

// startServer initialises a data dir, lets prepare write to it (or its
// store) before the server opens it, and serves it until the test ends.
func startServer(t *testing.T, cfg server.Config, prepare func(dir string)) *liveServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), "data")
	res, err := server.Init(ctx, server.InitOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(dir)
	}
	cfg.DataDir, cfg.Listen = dir, "127.0.0.1:0"
	cfg.AddrFile = filepath.Join(t.TempDir(), "addr")
	s, err := server.New(ctx, cfg, server.NewLogger(io.Discard, "text", "error"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close(context.Background()) })
	ls := &liveServer{admin: res.AdminToken, caFile: res.CAFile, dir: dir}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && ls.addr == ""; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(cfg.AddrFile)
		ls.addr = strings.TrimSpace(string(b))
	}
	if ls.addr == "" {
		t.Fatal("server did not start")
	}
	return ls
}

// env points the CLI at the server with tok as MAYFLY_TOKEN.
func (ls *liveServer) env(t *testing.T, tok string) {
	t.Setenv("MAYFLY_ADDR", ls.addr)
	t.Setenv("MAYFLY_CACERT", ls.caFile)
	t.Setenv("MAYFLY_TOKEN", tok)
	t.Setenv("MAYFLY_CLIENT_CERT", "")
	t.Setenv("MAYFLY_CLIENT_KEY", "")
	t.Setenv("XDG_STATE_HOME", t.TempDir())
}

// clientCA writes a CA and a client certificate signed by it.
func clientCA(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admins"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		ca, &key.PublicKey, caKey)
	kb, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "admins-ca.pem"), filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice-key.pem")
	for f, b := range map[string][]byte{
		caFile:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// With --admin-client-ca the CLI gets in with --client-cert/--client-key
// or MAYFLY_CLIENT_CERT/MAYFLY_CLIENT_KEY, and without them is told what to
// pass; every refusal of the control plane says which check failed.
func TestAdminRefusalsSayWhichCheck(t *testing.T) {
	ca, cert, key := clientCA(t)
	mtls := startServer(t, server.Config{AdminClientCA: ca}, nil)
	farAway := startServer(t, server.Config{AdminCIDRs: []string{"10.0.0.0/8"}}, nil)
	open := startServer(t, server.Config{}, nil)

	// An auditor token, for the role check.
	open.env(t, open.admin)
	out, stderr, code := runCLI(t, "", "admin", "token", "create", "reader", "--role", "auditor", "--format", "json")
	if code != exitOK {
		t.Fatalf("admin token create: exit %d, %s", code, stderr)
	}
	var created apitype.AdminTokenCreated
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Token == "" {
		t.Fatalf("admin token create --format json: %q %v", out, err)
	}
	badAdmin, _ := token.New(token.Admin)

	tests := []struct {
		name   string
		srv    *liveServer
		tok    string
		env    map[string]string
		args   []string
		code   int
		stderr []string
	}{
		{name: "no client certificate", srv: mtls, tok: mtls.admin, args: []string{"secret", "list"}, code: exitNegative,
			stderr: []string{"client certificate", "--client-cert", "MAYFLY_CLIENT_CERT"}},
		{name: "--client-cert", srv: mtls, tok: mtls.admin, args: []string{"secret", "list", "--client-cert", cert, "--client-key", key}},
		{name: "MAYFLY_CLIENT_CERT", srv: mtls, tok: mtls.admin, env: map[string]string{"MAYFLY_CLIENT_CERT": cert, "MAYFLY_CLIENT_KEY": key},
			args: []string{"leases", "list"}},
		{name: "policy show with a certificate", srv: mtls, tok: mtls.admin, args: []string{"policy", "show", "--client-cert", cert, "--client-key", key}},
		{name: "audit verify with a certificate", srv: mtls, tok: mtls.admin, env: map[string]string{"MAYFLY_CLIENT_CERT": cert, "MAYFLY_CLIENT_KEY": key},
			args: []string{"audit", "verify"}},
		{name: "certificate without key", srv: mtls, tok: mtls.admin, args: []string{"secret", "list", "--client-cert", cert}, code: exitUsage,
			stderr: []string{"--client-key"}},
		{name: "network", srv: farAway, tok: farAway.admin, args: []string{"secret", "list"}, code: exitNegative,
			stderr: []string{"not reachable from 127.0.0.1", "admin_cidrs"}},
		{name: "role", srv: open, tok: created.Token, args: []string{"secret", "rm", "x"}, code: exitNegative,
			stderr: []string{"needs the admin role", `"reader" has the auditor role`, "--role"}},
		{name: "token", srv: open, tok: badAdmin, args: []string{"secret", "list"}, code: exitNegative,
			stderr: []string{"not valid", "MAYFLY_TOKEN"}},
		{name: "http to the TLS port", srv: open, tok: open.admin, args: []string{"secret", "list", "--addr", strings.Replace(open.addr, "https://", "http://", 1)},
			code: exitUsage, stderr: []string{"speaks TLS", "use https://127.0.0.1:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.srv.env(t, tc.tok)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, stderr, code := runCLI(t, "", tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q lacks %q", stderr, want)
				}
			}
			if strings.Contains(stderr, tc.tok) {
				t.Error("stderr holds the admin token")
			}
			if code != exitOK {
				oneLineErr(t, tc.args, stderr)
			}
		})
	}
}

// leases list follows the server's pages up to --limit, and says so when
// more match: no listing is cut short silently.
func TestLeasesListPages(t *testing.T) {
	const total = 2345
	ls := startServer(t, server.Config{}, func(dir string) {
		ctx := context.Background()
		db, err := store.Open(ctx, store.Config{Path: datadir.Dir(dir).Database()})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		now := time.Now().UTC()
		for i := 0; i < total; i++ {
			var h [32]byte
			copy(h[:], fmt.Sprintf("hash-%05d", i))
			l := store.Lease{ID: fmt.Sprintf("lse_%05d", i), Hash: h, Issuer: "ci", Subject: "s", Job: fmt.Sprint(i), Grants: []string{"g"},
				Claims: map[string]string{}, IssuedAt: now.Add(-time.Duration(i/7) * time.Second), ExpiresAt: now.Add(time.Hour), MaxExpiresAt: now.Add(time.Hour)}
			if err := db.InsertLease(ctx, l); err != nil {
				t.Fatal(err)
			}
		}
	})
	ls.env(t, ls.admin)
	rows := func(out string) []string {
		var ids []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "lse_") {
				ids = append(ids, strings.Fields(l)[0])
			}
		}
		return ids
	}
	distinct := func(ids []string) int {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return len(m)
	}

	out, stderr, code := runCLI(t, "", "leases", "list")
	if code != exitOK || len(rows(out)) != defaultLeaseLimit || !strings.Contains(stderr, "showing the first 1000 leases; more match") {
		t.Fatalf("default: exit %d, %d rows, stderr %q", code, len(rows(out)), stderr)
	}
	out, stderr, code = runCLI(t, "", "leases", "list", "--limit", "0")
	if ids := rows(out); code != exitOK || len(ids) != total || distinct(ids) != total || stderr != "" {
		t.Fatalf("--limit 0: exit %d, %d rows (%d distinct), stderr %q", code, len(ids), distinct(ids), stderr)
	}
	out, _, code = runCLI(t, "", "leases", "list", "--limit", "1500", "--json")
	var page apitype.LeaseList
	if err := json.Unmarshal([]byte(out), &page); err != nil || code != exitOK || len(page.Leases) != 1500 || page.NextCursor == "" {
		t.Fatalf("--limit 1500 --json: exit %d, %d leases, cursor %q, %v", code, len(page.Leases), page.NextCursor, err)
	}
	out, stderr, code = runCLI(t, "", "leases", "list", "--limit", "0", "--cursor", page.NextCursor)
	rest := rows(out)
	seen := map[string]bool{}
	for _, l := range page.Leases {
		seen[l.LeaseID] = true
	}
	for _, id := range rest {
		if seen[id] {
			t.Fatalf("%s listed twice", id)
		}
	}
	if code != exitOK || len(rest) != total-1500 {
		t.Fatalf("--cursor: exit %d, %d rows, stderr %q", code, len(rest), stderr)
	}
	if _, stderr, code := runCLI(t, "", "leases", "list", "--cursor", "bogus!"); code != exitNegative || !strings.Contains(stderr, "malformed cursor") {
		t.Fatalf("bad cursor: exit %d, %q", code, stderr)
	}
}

// scan --revoke takes --addr and --cacert like every other client, and never
// follows a redirect with the tokens it found.
func TestScanRevokeClient(t *testing.T) {
	tok, _ := token.New(token.Job)
	adm, _ := token.New(token.Admin)
	pw, _ := token.NewPassword()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ci.log"), []byte("curl -H 'Authorization: Bearer "+tok+"'\nDATABASE_URL=postgres://r:"+pw+"@h/db\nMAYFLY_TOKEN="+adm+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var received []string
	leaks := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received = append(received, r.URL.Path+" "+string(b))
		mu.Unlock()
		json.NewEncoder(w).Encode(apitype.LeakResponse{Revoked: []apitype.RevokedLease{{LeaseID: "lse_1", Hint: token.Hint(tok)}}})
	}))
	t.Cleanup(leaks.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, leaks.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaks.Certificate().Raw}), 0o600)
	t.Setenv("MAYFLY_ADDR", "")
	t.Setenv("MAYFLY_CACERT", "")

	// Flags, no environment.
	out, stderr, code := runCLI(t, "", "scan", "--revoke", "--addr", leaks.URL, "--cacert", ca, dir)
	if code != exitNegative || !strings.Contains(out, "1 revoked") || !strings.Contains(out, "lse_1") {
		t.Fatalf("--addr --cacert: exit %d, out %q, err %q", code, out, stderr)
	}
	mu.Lock()
	// The admin token too: the server revokes a leaked one like any other.
	if len(received) != 1 || received[0] != "/v1/leaks "+tok+"\n"+pw+"\n"+adm+"\n" {
		t.Fatalf("server received %q", received)
	}
	received = nil
	mu.Unlock()

	// A redirect is refused, and the tokens go nowhere else.
	t.Setenv("MAYFLY_ADDR", redirector.URL)
	t.Setenv("MAYFLY_CACERT", ca)
	_, stderr, code = runCLI(t, "", "scan", "--revoke", dir)
	if code != exitUsage || !strings.Contains(stderr, "redirect") || strings.Contains(stderr, tok) || strings.Contains(stderr, pw) || strings.Contains(stderr, adm) {
		t.Fatalf("redirect: exit %d, err %q", code, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(received) != 0 {
		t.Fatalf("the redirect was followed: %q", received)
	}
}

// scan --revoke sends what it found in as many reports as the server
// takes: it splits past its own batch size, halves on 413, waits out a
// 429's Retry-After, and every token arrives exactly once.
func TestScanRevokeSplitsAndWaits(t *testing.T) {
	tests := []struct {
		name      string
		tokens    int
		serverCap int  // 413 beyond this many tokens
		busyFirst bool // the first report gets 429 Retry-After: 1
		maxSeen   int  // largest report the server should see accepted
	}{
		{"over one batch", 1200, 1000, false, leakBatch},
		{"server caps lower, busy at first", 7, 3, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body strings.Builder
			want := map[string]bool{}
			for range tt.tokens {
				tok, _ := token.New(token.Job)
				want[tok] = true
				body.WriteString("export TOKEN=" + tok + "\n")
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "ci.log"), []byte(body.String()), 0o600); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			got := map[string]int{}
			calls, largest := 0, 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				lines := strings.Fields(string(b))
				mu.Lock()
				defer mu.Unlock()
				calls++
				switch {
				case tt.busyFirst && calls == 1:
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				case len(lines) > tt.serverCap:
					w.WriteHeader(http.StatusRequestEntityTooLarge)
					return
				}
				largest = max(largest, len(lines))
				var sum apitype.LeakResponse
				for _, l := range lines {
					got[l]++
					sum.Revoked = append(sum.Revoked, apitype.RevokedLease{LeaseID: "lse_x", Hint: token.Hint(l)})
				}
				json.NewEncoder(w).Encode(sum)
			}))
			t.Cleanup(srv.Close)
			t.Setenv("MAYFLY_CACERT", "")
			out, stderr, code := runCLI(t, "", "scan", "--revoke", "--addr", srv.URL, dir)
			if code != exitNegative || !strings.Contains(out, fmt.Sprintf("sent %d token(s): %d revoked", tt.tokens, tt.tokens)) {
				t.Fatalf("exit %d, err %q, out tail %q", code, stderr, out[max(0, len(out)-300):])
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != len(want) || largest > tt.maxSeen {
				t.Fatalf("server got %d distinct tokens of %d, largest report %d (want ≤ %d)", len(got), len(want), largest, tt.maxSeen)
			}
			for tok, n := range got {
				if !want[tok] || n != 1 {
					t.Fatalf("token %s arrived %d times", token.Hint(tok), n)
				}
			}
			if tt.busyFirst && !strings.Contains(out+stderr, "retrying in 1s") {
				t.Fatalf("the 429 was not waited out: %q", out+stderr)
			}
		})
	}
}

// A mayfly:allow comment or a baseline quiets a finding in the report, but
// scan --revoke still sends every revocable secret it saw: the server
// answers a made-up one (a test's planted value) "unknown" at no cost,
// while a live one kept off the report by a comment a developer added to
// quiet the pre-commit hook, or by a baseline written before it was
// revoked, would stay usable (an admin token, for good). A /v1/leaks
// report of the same text revokes it whatever its comments say.
func TestScanRevokeSendsIgnoredFindings(t *testing.T) {
	tests := []struct {
		name     string
		line     string // the file's line around the token
		baseline bool   // a baseline of this file is given
		code     int    // the scan's exit status: the report still ignores it
	}{
		{"mayfly:allow comment", "ADMIN=%s # mayfly:allow", false, exitOK},
		{"in the baseline", "ADMIN=%s", true, exitOK},
		{"reported", "ADMIN=%s", false, exitNegative},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			adm, _ := token.New(token.Admin)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "ci.env"), []byte(fmt.Sprintf(tt.line, adm)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var received string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				received += string(b)
				mu.Unlock()
				json.NewEncoder(w).Encode(apitype.LeakResponse{RevokedAdmin: []apitype.RevokedAdminToken{{Hint: token.Hint(adm)}}})
			}))
			t.Cleanup(srv.Close)
			t.Setenv("MAYFLY_CACERT", "")
			args := []string{"scan", "--revoke", "--addr", srv.URL}
			if tt.baseline {
				base := filepath.Join(t.TempDir(), "baseline.json")
				if _, stderr, code := runCLI(t, "", "scan", "--format", "json", "--output", base, dir); code != exitNegative {
					t.Fatalf("baseline: exit %d, err %q", code, stderr)
				}
				args = append(args, "--baseline", base)
			}
			out, stderr, code := runCLI(t, "", append(args, dir)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; out %q, err %q", code, tt.code, out, stderr)
			}
			mu.Lock()
			defer mu.Unlock()
			if received != adm+"\n" {
				t.Fatalf("the server received %q, not the admin token (out %q, err %q)", received, out, stderr)
			}
			if !strings.Contains(out+stderr, "1 revoked") {
				t.Fatalf("no summary of the revocation: out %q, err %q", out, stderr)
			}
		})
	}
}
