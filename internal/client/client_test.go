package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/token"
)

const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newToken(t *testing.T, k token.Kind) string {
	t.Helper()
	tok, err := token.New(k)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"https://mayfly.example:8443/": "https://mayfly.example:8443",
		"http://127.0.0.1:8443":        "http://127.0.0.1:8443",
		"http://[::1]:1/":              "http://[::1]:1",
		"http://localhost:1":           "http://localhost:1",
		"https://h/prefix/":            "https://h/prefix",
		"http://mayfly.example":        "",
		"http://10.0.0.1:80":           "",
		"ftp://x":                      "",
		"":                             "",
		"mayfly.example:8443":          "",
		"https://u:p@h":                "",
		"https://h/?q=1":               "",
	} {
		got, err := NormalizeAddr(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// MAYFLY_ADDR with user info, a query or a fragment is refused, and the
// refusal, printed to the CLI's stderr (a CI log), quotes the address
// without them, also when it does not parse.
func TestNormalizeAddrNeverQuotesAPassword(t *testing.T) {
	const pw = "PLANTEDaddrPassw0rd" // mayfly:allow
	for _, tt := range []struct{ addr, shown string }{
		{"https://ci:" + pw + "@mayfly.example.com", `"https://xxxxx@mayfly.example.com"`},
		{"http://ci:" + pw + "@mayfly.example.com", `"http://xxxxx@mayfly.example.com"`},
		{"https://" + pw + "@mayfly.example.com", `"https://xxxxx@mayfly.example.com"`},
		{"https://ci:" + pw + "%zz@mayfly.example.com", `"https://xxxxx@mayfly.example.com"`},
		{"ci:" + pw + "@mayfly.example.com", `"xxxxx@mayfly.example.com"`},
		{"https://mayfly.example.com/?token=" + pw, `"https://mayfly.example.com/?xxxxx"`},
		{"https://mayfly.example.com/#" + pw, `"https://mayfly.example.com/#xxxxx"`},
	} {
		_, err := NormalizeAddr(tt.addr)
		if err == nil {
			t.Fatalf("%s accepted", tt.addr)
		}
		if strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), tt.shown) {
			t.Errorf("NormalizeAddr: %v; want it to quote %s", err, tt.shown)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine("a\n\x1b[31mb\t\tc  ", 100); got != "a [31mb c" {
		t.Errorf("got %q", got)
	}
	// Format characters (bidi overrides, zero-width) reorder or hide
	// what follows them as surely as an escape sequence.
	if got := OneLine("lse_1\u202ecba\u200bd", 100); got != "lse_1 cba d" {
		t.Errorf("got %q", got)
	}
	if got := OneLine(strings.Repeat("x", 10), 4); got != "xxxx…" {
		t.Errorf("got %q", got)
	}
}

// Flags win over the environment; MAYFLY_TOKEN is read only for admin
// clients (in a job it holds the job token).
func TestConfigFromEnvironment(t *testing.T) {
	admin := newToken(t, token.Admin)
	env := envFrom(map[string]string{EnvAddr: "http://127.0.0.1:1/", EnvToken: admin, EnvCACert: ""})
	tests := []struct {
		name      string
		cfg       Config
		addr      string
		adminErr  error
		wantToken string
	}{
		{name: "env", cfg: Config{Getenv: env, AdminToken: true}, addr: "http://127.0.0.1:1", wantToken: admin},
		{name: "flag wins", cfg: Config{Getenv: env, AdminToken: true, Addr: "http://127.0.0.1:2"}, addr: "http://127.0.0.1:2", wantToken: admin},
		{name: "job side ignores MAYFLY_TOKEN", cfg: Config{Getenv: env}, addr: "http://127.0.0.1:1", adminErr: ErrNoAdminToken},
		{name: "not an admin token", cfg: Config{Getenv: env, AdminToken: true, Token: newToken(t, token.Job)}, addr: "http://127.0.0.1:1", adminErr: ErrBadAdminToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.Addr() != tc.addr {
				t.Errorf("addr %q, want %q", c.Addr(), tc.addr)
			}
			if err := c.RequireAdmin(); !errors.Is(err, tc.adminErr) {
				t.Errorf("RequireAdmin = %v, want %v", err, tc.adminErr)
			}
			if err := c.RequireAdmin(); err != nil && strings.Contains(err.Error(), tc.cfg.Token) && tc.cfg.Token != "" {
				t.Error("the error holds the token")
			}
		})
	}
	if _, err := New(Config{Getenv: envFrom(nil)}); err == nil || !strings.Contains(err.Error(), EnvAddr) {
		t.Errorf("no address: %v", err)
	}
	if _, err := New(Config{Getenv: envFrom(map[string]string{EnvAddr: "https://h", EnvCACert: "/nonexistent/ca.pem"})}); err == nil || !strings.Contains(err.Error(), EnvCACert) {
		t.Errorf("missing CA file: %v", err)
	}
	if _, err := New(Config{Getenv: envFrom(map[string]string{EnvAddr: "https://h", EnvClientCert: "/x.pem"})}); err == nil || !strings.Contains(err.Error(), "--client-key") {
		t.Errorf("certificate without key: %v", err)
	}
}

// A redirect is never followed, whatever it carries: the admin token, a
// secret's value, a leak report full of tokens.
func TestNeverFollowsRedirects(t *testing.T) {
	var mu sync.Mutex
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		elsewhere = append(elsewhere, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(b))
		mu.Unlock()
	}))
	t.Cleanup(other.Close)
	for _, code := range []int{301, 302, 303, 307, 308} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path+"?x=secret-in-query", code)
		}))
		admin := newToken(t, token.Admin)
		leaked := newToken(t, token.Job)
		c, err := New(Config{Addr: srv.URL, Token: admin, AdminToken: true, Getenv: envFrom(nil)})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		calls := map[string]func() error{
			"secret put": func() error { _, err := c.PutSecret(ctx, "s", []byte("planted-secret-value")); return err },
			"leaks":      func() error { _, err := c.ReportLeaks(ctx, []byte(leaked+"\n")); return err },
			"renew":      func() error { _, err := c.Renew(ctx, leaked, nil); return err },
			"policy":     func() error { _, _, err := c.Policy(ctx, 1<<20); return err },
		}
		for name, call := range calls {
			err := call()
			var ce *ConnError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "redirect") {
				t.Errorf("%d %s: err = %v, want a redirect refusal", code, name, err)
			}
			for _, planted := range []string{admin, leaked, "planted-secret-value", "secret-in-query"} {
				if err != nil && strings.Contains(err.Error(), planted) {
					t.Errorf("%d %s: error holds %q", code, name, planted)
				}
			}
		}
		srv.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) > 0 {
		t.Fatalf("a redirect was followed: %q", elsewhere)
	}
}

func TestResponseLimitsAndTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/audit/key":
			w.Write(bytes.Repeat([]byte("k"), maxAuditKey+1))
		case "/v1/secrets":
			w.Write([]byte(`{"secrets":[`))
			for i := 0; i < MaxJSONResponse/64+1; i++ {
				w.Write([]byte(`{"name":"` + strings.Repeat("n", 40) + `","version":1},`))
			}
			w.Write([]byte(`{}]}`))
		case "/v1/admin/tokens":
			select { // never answers in time
			case <-r.Context().Done():
			case <-release:
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	admin := newToken(t, token.Admin)
	c, err := New(Config{Addr: srv.URL, Token: admin, AdminToken: true, Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.AuditKey(ctx); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized key: %v", err)
	}
	if _, err := c.ListSecrets(ctx); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized JSON: %v", err)
	}
	c, err = New(Config{Addr: srv.URL, Token: admin, AdminToken: true, Timeout: 200 * time.Millisecond, Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListAdminTokens(ctx)
	var ce *ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "no answer within") {
		t.Errorf("stalled server: %v", err)
	}
}

// http:// to a TLS port, and https:// to a plain one, say which scheme to
// use instead.
func TestWrongScheme(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	// A TLS server that hangs up on plain HTTP instead of answering 400.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsSrv.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	for _, tc := range []struct{ addr, want string }{
		{strings.Replace(tlsSrv.URL, "https://", "http://", 1), "use https://"},
		{"http://" + ln.Addr().String(), "use https://"},
		{strings.Replace(plain.URL, "http://", "https://", 1), "use http://"},
	} {
		c, err := New(Config{Addr: tc.addr, Getenv: envFrom(nil)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ReportLeaks(context.Background(), []byte("x"))
		var ce *ConnError
		if !errors.As(err, &ce) || !ce.WrongScheme || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.addr, err, tc.want)
		}
	}
}

func TestUntrustedServerAndCACert(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(apitype.LeakResponse{Unknown: 1})
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL, Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportLeaks(context.Background(), []byte("x")); err == nil || !strings.Contains(err.Error(), EnvCACert) {
		t.Errorf("untrusted: %v", err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	c, err = New(Config{Addr: srv.URL, Getenv: envFrom(map[string]string{EnvCACert: ca})})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.ReportLeaks(context.Background(), []byte("x")); err != nil || res.Unknown != 1 {
		t.Errorf("with MAYFLY_CACERT: %+v %v", res, err)
	}
}

// writeClientCert makes a CA and a client certificate signed by it.
func writeClientCert(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
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
	certFile, keyFile := filepath.Join(dir, "alice.pem"), filepath.Join(dir, "alice-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, certFile, keyFile
}

func TestClientCertificate(t *testing.T) {
	dir := t.TempDir()
	pool, certFile, keyFile := writeClientCert(t, dir)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			w.WriteHeader(403)
			json.NewEncoder(w).Encode(apitype.Error{Error: "forbidden", Description: "no certificate", Check: apitype.CheckClientCertificate})
			return
		}
		json.NewEncoder(w).Encode(apitype.AdminTokenList{Tokens: []apitype.AdminToken{{Name: r.TLS.PeerCertificates[0].Subject.CommonName}}})
	}))
	srv.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "server-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	admin := newToken(t, token.Admin)

	// Without a certificate: the server's refusal, with what to do.
	c, err := New(Config{Addr: srv.URL, CACertFile: caFile, Token: admin, AdminToken: true, Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListAdminTokens(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Check != apitype.CheckClientCertificate || !strings.Contains(err.Error(), "--client-cert") {
		t.Fatalf("without a certificate: %v", err)
	}
	// With one, from the environment.
	c, err = New(Config{Addr: srv.URL, CACertFile: caFile, Token: admin, AdminToken: true,
		Getenv: envFrom(map[string]string{EnvClientCert: certFile, EnvClientKey: keyFile})})
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ListAdminTokens(context.Background())
	if err != nil || len(list.Tokens) != 1 || list.Tokens[0].Name != "alice" {
		t.Fatalf("with a certificate: %+v %v", list, err)
	}
}

func TestRefusalHints(t *testing.T) {
	for _, tc := range []struct {
		check, want string
	}{
		{apitype.CheckNetwork, "admin_cidrs"},
		{apitype.CheckClientCertificate, "--client-cert"},
		{apitype.CheckToken, EnvToken},
		{apitype.CheckRole, "--role"},
		{"", ""},
	} {
		e := &Error{Op: "secret list", Status: 403, Code: "forbidden", Description: "d", Check: tc.check}
		if tc.want != "" && !strings.Contains(e.Error(), tc.want) || tc.want == "" && strings.Contains(e.Error(), ";") {
			t.Errorf("check %q: %q", tc.check, e.Error())
		}
	}
}

func TestExchange(t *testing.T) {
	tok := newToken(t, token.Job)
	var got http.Request
	var revoked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		switch r.URL.Path {
		case "/v1/token":
			got = *r
			switch r.PostForm.Get("scope") {
			case "nope":
				w.WriteHeader(400)
				_, _ = w.Write([]byte(`{"error":"invalid_scope","error_description":"unknown grant\n\"nope\""}`))
				return
			case "evil":
				_ = json.NewEncoder(w).Encode(apitype.TokenResponse{AccessToken: "x\nEVIL=1"})
				return
			}
			_ = json.NewEncoder(w).Encode(apitype.TokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: 600, Scope: r.PostForm.Get("scope"), LeaseID: "lse_1"})
		case "/v1/revoke":
			revoked = append(revoked, r.PostForm.Get("token"))
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Addr: srv.URL, Getenv: envFrom(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tr, raw, err := c.Exchange(ctx, ExchangeRequest{IDToken: jwt, Grants: []string{"deploy", "read"}, TTL: 90 * time.Second, DPoPKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if tr.AccessToken != tok || tr.LeaseID != "lse_1" || !bytes.Contains(raw, []byte(tok)) {
		t.Fatalf("response %+v", tr)
	}
	f := got.PostForm
	if f.Get("grant_type") != apitype.GrantTypeTokenExchange || f.Get("subject_token") != jwt || f.Get("subject_token_type") != apitype.TokenTypeIDToken ||
		f.Get("scope") != "deploy read" || f.Get("ttl") != "90" {
		t.Errorf("form %v", f)
	}
	if _, err := dpop.NewVerifier(dpop.Options{}).Verify(got.Header.Get("DPoP"), "POST", srv.URL+"/v1/token", "", ""); err != nil {
		t.Errorf("DPoP proof: %v", err)
	}

	_, _, err = c.Exchange(ctx, ExchangeRequest{IDToken: jwt, Grants: []string{"nope"}})
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || e.Code != "invalid_scope" || e.Description != `unknown grant "nope"` || !e.Refused() {
		t.Fatalf("err = %#v", err)
	}
	if _, _, err := c.Exchange(ctx, ExchangeRequest{IDToken: jwt}); err == nil {
		t.Error("no grants accepted")
	}
	// A server answering something that is not a job token is refused.
	if _, _, err := c.Exchange(ctx, ExchangeRequest{IDToken: jwt, Grants: []string{"evil"}}); !errors.Is(err, ErrNotJobToken) || strings.Contains(err.Error(), "EVIL") {
		t.Fatalf("err = %v", err)
	}
	if err := c.Revoke(ctx, tok); err != nil || len(revoked) != 1 || revoked[0] != tok {
		t.Fatalf("revoke: %v %v", err, revoked)
	}
}

// FuzzReadError: any server error body gives one printable line.
func FuzzReadError(f *testing.F) {
	f.Add(`{"error":"invalid_grant","error_description":"expired"}`)
	f.Add(`{"error":"x\n\u001b[31m","error_description":"` + strings.Repeat("a", 400) + `","check":"role"}`)
	f.Add(`<html>`)
	f.Add(goTLSRefusal + ".\n")
	f.Fuzz(func(t *testing.T, body string) {
		e := ReadError(&http.Response{StatusCode: 400, Body: io.NopCloser(strings.NewReader(body))})
		s := e.Error()
		for _, r := range s {
			if unicode.IsControl(r) {
				t.Fatalf("control character in %q", s)
			}
		}
		if len([]rune(e.Description)) > 301 || len([]rune(e.Code)) > 65 || len([]rune(e.Check)) > 33 {
			t.Fatalf("not bounded: %d/%d/%d", len(e.Code), len(e.Description), len(e.Check))
		}
	})
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-5", 0},
		{"999999999999", maxRetryAfter},
		{"86400", maxRetryAfter},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
		{time.Now().Add(24 * time.Hour).UTC().Format(http.TimeFormat), maxRetryAfter},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// A server that is not there (nothing listening, a host name that does not
// resolve) is the first-day mistake: the error says what to check, not
// only what the network said.
func TestUnreachableServerSaysWhatToDo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tc := range []struct{ name, addr, want string }{
		{"nothing listening", closed, "is mayfly server running"},
		{"no such host", "https://mayfly.invalid:8443", "check the host name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Addr: tc.addr, Getenv: envFrom(nil)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ReportLeaks(context.Background(), []byte("x"))
			var ce *ConnError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), EnvAddr) {
				t.Errorf("err = %v, want a hint %q naming %s", err, tc.want, EnvAddr)
			}
		})
	}
}

// An address that reaches some other HTTP server (the metrics listener, a
// dev issuer, a proxy's own 404 page) answers a 4xx without mayfly's error
// shape: that is a wrong MAYFLY_ADDR, not the server refusing, so it is
// no refusal (the CLI's exit 2, not 1) and says what to check.
func TestNotAMayflyServer(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound)
	}))
	t.Cleanup(other.Close)
	mayfly := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(apitype.Error{Error: "not_found", Description: "no such secret"})
	}))
	t.Cleanup(mayfly.Close)
	// Go's HTTP layer in mayfly itself answers some refusals in plain text.
	goLayer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "431 Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
	}))
	t.Cleanup(goLayer.Close)
	for _, tc := range []struct {
		addr    string
		refused bool
		want    string
	}{
		{other.URL, false, "not a mayfly server's"},
		{mayfly.URL, true, "not_found: no such secret"},
		{goLayer.URL, true, "(HTTP 431)"},
	} {
		c, err := New(Config{Addr: tc.addr, AdminToken: true, Getenv: envFrom(map[string]string{EnvToken: newToken(t, token.Admin)})})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SecretMeta(context.Background(), "gh")
		var e *Error
		if !errors.As(err, &e) || e.Refused() != tc.refused || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v (refused %v), want refused %v and %q", tc.addr, err, e != nil && e.Refused(), tc.refused, tc.want)
		}
		if tc.refused && strings.Contains(err.Error(), "not a mayfly server's") {
			t.Errorf("%s: %v says another server answered", tc.addr, err)
		}
		if !tc.refused && !strings.Contains(err.Error(), EnvAddr) {
			t.Errorf("%s: %v does not name %s", tc.addr, err, EnvAddr)
		}
	}
}

// MAYFLY_CACERT set to another CA (another cluster's, a copy of an old
// one) is not the same mistake as none set: the hint says the given CA
// did not sign the server's certificate rather than to set the variable.
func TestWrongCACertSaysSo(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another cluster"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	ca := filepath.Join(t.TempDir(), "other-ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	c, err := New(Config{Addr: srv.URL, Getenv: envFrom(map[string]string{EnvCACert: ca})})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReportLeaks(context.Background(), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "did not sign") || !strings.Contains(err.Error(), ca) {
		t.Errorf("wrong CA: %v; want it to say the CA in %s did not sign the server's certificate", err, ca)
	}
}

// A server reached by a name its certificate lacks (a VM's host name after
// an init for loopback) is told how to add the name to the certificate it
// has: init cannot run again on an initialised data dir, tls renew can.
func TestCertificateForAnotherNameSaysHowToAddIt(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler()) // names 127.0.0.1, ::1, example.com
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	c, err := New(Config{Addr: strings.Replace(srv.URL, "127.0.0.1", "localhost", 1), Getenv: envFrom(map[string]string{EnvCACert: ca})})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReportLeaks(context.Background(), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "mayfly tls renew") || !strings.Contains(err.Error(), "--tls-san") {
		t.Errorf("another name: %v; want the way to add it (mayfly tls renew … --tls-san)", err)
	}
}

// MAYFLY_ADDR with a path a mayfly server does not serve under — the
// gateway's MAYFLY_GATEWAY (…/gw) pasted in its place, or …/v1 — gets a
// hint to give the server's URL without it.
func TestAddrWithAPathSaysDropIt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/gw/"): // the gateway, given an admin token
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(apitype.Error{Error: "invalid_token", Description: "credentials are not a mayfly job token"})
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(apitype.Error{Error: "not_found", Description: "no such endpoint"})
		}
	}))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/gw", "/v1"} {
		c, err := New(Config{Addr: srv.URL + path, AdminToken: true, Getenv: envFrom(map[string]string{EnvToken: newToken(t, token.Admin)})})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.ListSecrets(context.Background())
		if err == nil || !strings.Contains(err.Error(), "without the path") || !strings.Contains(err.Error(), EnvAddr) {
			t.Errorf("%s: %v; want a hint to give %s without the path", path, err, EnvAddr)
		}
	}
	// The server's own URL, and a real not-found, get no such hint.
	c, _ := New(Config{Addr: srv.URL, AdminToken: true, Getenv: envFrom(map[string]string{EnvToken: newToken(t, token.Admin)})})
	if _, err := c.ListSecrets(context.Background()); err == nil || strings.Contains(err.Error(), "without the path") {
		t.Errorf("no path: %v", err)
	}
}

// A job token in MAYFLY_TOKEN (a shell that sourced `login --format env`
// after exporting the admin token) is not "malformed": the refusal says it
// is a job token and where an admin token comes from.
func TestJobTokenAsAdminTokenSaysSo(t *testing.T) {
	c, err := New(Config{Addr: "http://127.0.0.1:1", AdminToken: true, Getenv: envFrom(map[string]string{EnvToken: newToken(t, token.Job)})})
	if err != nil {
		t.Fatal(err)
	}
	err = c.RequireAdmin()
	if !errors.Is(err, ErrBadAdminToken) || !strings.Contains(err.Error(), "job token") || !strings.Contains(err.Error(), "mayfly admin token create") {
		t.Errorf("RequireAdmin = %v; want it to say MAYFLY_TOKEN holds a job token, and where an admin token comes from", err)
	}
}
