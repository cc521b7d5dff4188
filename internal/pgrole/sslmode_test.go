package pgrole_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
)

// caFile writes a CA certificate for sslrootcert (pgx reads it at parse).
func caFile(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db-ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The job's DSN checks the server as strictly as the admin DSN does: its
// sslmode is the admin DSN's own (pgx's TLS settings made verify-ca
// require, which checks no certificate, and allow disable).
func TestJobDSNKeepsAdminSSLMode(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	t.Setenv("PGSSLROOTCERT", "")
	ca := caFile(t)
	const base = "postgres://admin:pw@db.internal:5432/app"
	tests := []struct {
		name, admin, mode, root string
	}{
		{"verify-full", base + "?sslmode=verify-full", "verify-full", ""},
		{"verify-ca", base + "?sslmode=verify-ca", "verify-ca", ""},
		{"require", base + "?sslmode=require", "require", ""},
		{"prefer", base + "?sslmode=prefer", "prefer", ""},
		{"allow", base + "?sslmode=allow", "allow", ""},
		{"disable", base + "?sslmode=disable", "disable", ""},
		{"none: pgx's default", base, "prefer", ""},
		{"the platform's CAs", base + "?sslmode=verify-full&sslrootcert=system", "verify-full", "system"},
		{"require with a root certificate verifies the chain", base + "?sslmode=require&sslrootcert=" + url.QueryEscape(ca), "verify-ca", ""},
		{"a server's CA file stays on the server", base + "?sslmode=verify-ca&sslrootcert=" + url.QueryEscape(ca), "verify-ca", ""},
		{"keyword=value", "host=db.internal user=admin password='x sslmode=disable' sslmode=verify-ca", "verify-ca", ""},            // mayfly:allow: a test DSN
		{"keyword=value, escaped quote", `host=db.internal password='a\' sslmode=disable' sslmode = allow dbname=app`, "allow", ""}, // mayfly:allow: a test DSN
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := pgrole.New(pgrole.Options{})
			defer r.Close()
			u := pgrole.Upstream{Name: "db", AdminDSN: tt.admin, Creation: `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}';`}
			c, err := r.Prepare(u, leaseID(1), time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			dsn, err := url.Parse(c.DSN())
			if err != nil {
				t.Fatal(err)
			}
			if q := dsn.Query(); q.Get("sslmode") != tt.mode || q.Get("sslrootcert") != tt.root {
				t.Errorf("job DSN sslmode=%q sslrootcert=%q, want %q %q", q.Get("sslmode"), q.Get("sslrootcert"), tt.mode, tt.root)
			}
		})
	}
}
