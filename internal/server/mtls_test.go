package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// An admin with a valid token but no client certificate is refused when
// admin_client_ca is set; with a certificate from that CA it is served.
func TestAdminMTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "admins"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	caFile := filepath.Join(dir, "admins.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		ca, &cliKey.PublicKey, caKey)

	data := filepath.Join(dir, "data")
	res, err := Init(context.Background(), InitOptions{DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "addr")
	s, err := New(context.Background(), Config{DataDir: data, Listen: "127.0.0.1:0", AdminClientCA: caFile, AddrFile: addrFile}, NewLogger(os.Stderr, "text", "error"))
	if err != nil {
		t.Fatal(err)
	}
	// The real listener: TLS handshakes in the framing listener, HTTP/1
	// requests given their TLS state by guard, HTTP/2 served as *tls.Conn.
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		<-served
		s.Close(context.Background())
	})
	var url string
	for url == "" {
		select {
		case err := <-served:
			t.Fatalf("serve: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if b, err := os.ReadFile(addrFile); err == nil {
			url = strings.TrimSpace(string(b))
		}
	}

	roots := x509.NewCertPool()
	pemCA, _ := os.ReadFile(res.CAFile)
	roots.AppendCertsFromPEM(pemCA)
	for _, h2 := range []bool{false, true} {
		client := func(withCert bool) *http.Client {
			c := &tls.Config{RootCAs: roots}
			if withCert {
				c.Certificates = []tls.Certificate{{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}}
			}
			return &http.Client{Transport: &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: h2}}
		}
		get := func(c *http.Client, path string) int {
			req, _ := http.NewRequest("GET", strings.Replace(url, "127.0.0.1", "localhost", 1)+path, nil)
			req.Header.Set("Authorization", "Bearer "+res.AdminToken)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
				t.Fatalf("served over %s, want HTTP/%d", resp.Proto, want)
			}
			return resp.StatusCode
		}
		if code := get(client(false), "/v1/secrets"); code != 403 {
			t.Fatalf("h2=%v: admin call without client certificate: %d", h2, code)
		}
		if code := get(client(true), "/v1/secrets"); code != 200 {
			t.Fatalf("h2=%v: admin call with client certificate: %d", h2, code)
		}
		if code := get(client(false), "/healthz"); code != 200 {
			t.Fatalf("h2=%v: public endpoint without client certificate: %d", h2, code)
		}
	}
	if got := s.http.TLSConfig.MinVersion; got != tls.VersionTLS12 {
		t.Fatalf("min TLS version %x", got)
	}
}

// On PostgreSQL too, no table holds a planted secret value or token.
func TestNothingSecretInPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	schemaDSN := storetest.FreshSchema(t, dsn)
	h := newHarness(t, Config{Postgres: schemaDSN})
	out := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)
	tok := out["access_token"].(string)
	db, err := sql.Open("pgx", schemaDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tables := []string{"meta", "keyring", "secrets", "admin_tokens", "leases", "lease_events", "jtis", "policy_versions", "audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"}
	rows := 0
	for _, tbl := range tables {
		// Every row as text: bytea columns render as hex, so search both forms.
		r, err := db.Query(fmt.Sprintf(`SELECT t::text FROM %s t`, tbl))
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var line string
			r.Scan(&line)
			rows++
			for _, s := range []string{plantedSecret, tok, h.admin} {
				if strings.Contains(line, s) || strings.Contains(line, fmt.Sprintf("%x", s)) {
					t.Errorf("table %s holds a planted value (%s)", tbl, token.Hint(s))
				}
			}
		}
		r.Close()
	}
	if rows < 10 {
		t.Fatalf("only %d rows read: the test looked at nothing", rows)
	}
}
