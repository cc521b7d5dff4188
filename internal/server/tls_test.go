package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

func TestRenewCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir, SANs: []string{"mayfly.internal"}}); err != nil {
		t.Fatal(err)
	}
	before, err := readCert(filepath.Join(dir, "server.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := readCert(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name     string
		sans     []string
		wantDNS  []string
		wantIPs  int
		wantFail string
	}{
		{"same names", nil, []string{"localhost", "mayfly.internal"}, 2, ""},
		{"extra names, no duplicates", []string{"mayfly.example.com", "10.0.0.7", "localhost", "127.0.0.1"}, []string{"localhost", "mayfly.internal", "mayfly.example.com"}, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := RenewCertificate(dir, "", tt.sans, now)
			if err != nil {
				t.Fatal(err)
			}
			after, err := readCert(filepath.Join(dir, "server.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if after.SerialNumber.Cmp(before.SerialNumber) == 0 || !after.NotAfter.Equal(res.NotAfter) || after.NotAfter.Sub(now) < 364*24*time.Hour {
				t.Fatalf("renewed certificate: serial %v, not after %v", after.SerialNumber, after.NotAfter)
			}
			if strings.Join(after.DNSNames, ",") != strings.Join(tt.wantDNS, ",") || len(after.IPAddresses) != tt.wantIPs {
				t.Fatalf("names %v %v", after.DNSNames, after.IPAddresses)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := after.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
				t.Fatalf("does not chain to the data dir's CA: %v", err)
			}
			if _, err := newCertSource(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
				t.Fatalf("certificate and key do not pair: %v", err)
			}
		})
	}
	if _, err := RenewCertificate(filepath.Join(t.TempDir(), "none"), "", nil, now); err == nil {
		t.Fatal("renewed in a data dir that does not exist")
	}
}

// A server started with its data dir's certificate near expiry renews it.
func TestStartRenewsCertificateNearExpiry(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	// A certificate issued 355 days ago: 10 days left.
	if _, err := RenewCertificate(dir, "", nil, time.Now().AddDate(0, 0, -355)); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0"}, NewLogger(&logs, "text", "info"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if left := time.Until(s.certs.notAfter()); left < 300*24*time.Hour || !strings.Contains(logs.String(), "TLS certificate renewed") {
		t.Fatalf("after start %v left; logs: %s", left, logs.String())
	}
	onDisk, _ := readCert(filepath.Join(dir, "server.pem"))
	if !onDisk.NotAfter.Equal(s.certs.notAfter()) {
		t.Fatal("the served certificate is not the one on disk")
	}
}

// A node added with init --join has no CA key, so its certificate cannot
// be renewed at start: it starts with a warning naming the command while
// the certificate is valid, and refuses once it has expired. Before, it
// refused to start in the certificate's last 30 days. The command renews
// it with the cluster's CA key.
func TestJoinedNodeCertificateNearExpiry(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	ctx := context.Background()
	first := datadir.Dir(filepath.Join(t.TempDir(), "first"))
	if _, err := Init(ctx, InitOptions{DataDir: string(first), Postgres: dsn}); err != nil {
		t.Fatal(err)
	}
	ca, cak, _, err := loadCA(first.CACert(), first.CAKey())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		issuedAt time.Time // of the joined node's certificate (valid one year)
		wantErr  string
		wantLog  string
	}{
		{"10 days left", time.Now().AddDate(0, 0, -355), "", "mayfly tls renew --data-dir"},
		{"expired", time.Now().AddDate(-1, 0, -1), "expired", ""},
		{"months left", time.Now().AddDate(0, -1, 0), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			joined := datadir.Dir(filepath.Join(t.TempDir(), "joined"))
			if _, err := Join(ctx, JoinOptions{DataDir: string(joined), Postgres: dsn, MasterKeyFile: first.MasterKey(),
				AuditKeyFile: first.AuditKey(), CACert: first.CACert(), CAKey: first.CAKey()}); err != nil {
				t.Fatal(err)
			}
			os.Remove(joined.ServerCert())
			os.Remove(joined.ServerKey())
			if err := issueServerCert(ca, cak, joined.ServerCert(), joined.ServerKey(), nil, tt.issuedAt); err != nil {
				t.Fatal(err)
			}
			before, _ := readCert(joined.ServerCert())
			var logs strings.Builder
			s, err := New(ctx, Config{DataDir: string(joined), Postgres: dsn, Listen: "127.0.0.1:0", MetricsListen: "off"}, NewLogger(&logs, "text", "info"))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "--ca-key") {
					t.Fatalf("started with an expired certificate and no CA key: %v", err)
				}
			} else {
				if err != nil {
					t.Fatalf("a joined node whose certificate is still valid does not start: %v", err)
				}
				s.Close(ctx)
				if !s.certs.notAfter().Equal(before.NotAfter) {
					t.Fatal("the served certificate is not the one on disk")
				}
			}
			if got := strings.Contains(logs.String(), "TLS CERTIFICATE EXPIRES SOON"); got != (tt.wantLog != "") || !strings.Contains(logs.String(), tt.wantLog) {
				t.Fatalf("warning logged: %v, want %q; logs: %s", got, tt.wantLog, logs.String())
			}
			// What the warning says to run: with the cluster's CA key.
			res, err := RenewCertificate(string(joined), first.CAKey(), nil, time.Now())
			if err != nil || time.Until(res.NotAfter) < 300*24*time.Hour {
				t.Fatalf("renew with the cluster's CA key: %+v %v", res, err)
			}
			if _, err := os.Stat(joined.CAKey()); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the renewal left a CA key in the joined data dir: %v", err)
			}
		})
	}
}

// A renewal that fails or is killed part way (a full disk, an I/O error, a
// kill between its two renames) must leave a certificate and key that pair,
// the old ones or the new, so that the server still starts. Before, the
// key was replaced, then the certificate: a failure between left a pair
// that did not match and every later start failed.
func TestRenewCertificateFailureKeepsAPair(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// break_ leaves the data dir as the failure would and returns the
		// certificate (PEM) the server must serve afterwards (nil: the one
		// from init).
		break_ func(t *testing.T, d datadir.Dir) []byte
	}{
		{"certificate cannot be written", func(t *testing.T, d datadir.Dir) []byte {
			// A non-empty directory holds the certificate's temporary name,
			// as a full disk or an I/O error would fail the write.
			if err := os.MkdirAll(filepath.Join(d.ServerCert()+".new", "x"), 0o700); err != nil {
				t.Fatal(err)
			}
			if _, err := RenewCertificate(string(d), "", nil, time.Now()); err == nil {
				t.Fatal("renewal succeeded although its certificate could not be written")
			}
			os.RemoveAll(d.ServerCert() + ".new") // the disk has room again
			return nil
		}},
		{"killed between the renames", func(t *testing.T, d datadir.Dir) []byte {
			// The state replacePair leaves after the key's rename: the new
			// key in place, the new certificate still pending.
			ca, cak, _, err := loadCA(d.CACert(), d.CAKey())
			if err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			if err := issueServerCert(ca, cak, filepath.Join(tmp, "c"), filepath.Join(tmp, "k"), nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(tmp, "k"), d.ServerKey()); err != nil {
				t.Fatal(err)
			}
			newCert, err := os.ReadFile(filepath.Join(tmp, "c"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(tmp, "c"), d.ServerCert()+".new"); err != nil {
				t.Fatal(err)
			}
			return newCert
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := datadir.Dir(filepath.Join(t.TempDir(), "data"))
			if _, err := Init(ctx, InitOptions{DataDir: string(d)}); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(d.ServerCert())
			if b := tt.break_(t, d); b != nil {
				want = b
			}
			s, err := New(ctx, Config{DataDir: string(d), Listen: "127.0.0.1:0"}, NewLogger(io.Discard, "text", "info"))
			if err != nil {
				t.Fatalf("after a failed renewal the data dir's certificate and key no longer pair (the server cannot start): %v", err)
			}
			s.Close(ctx)
			if got, _ := os.ReadFile(d.ServerCert()); string(got) != string(want) {
				t.Fatal("server.pem is not the certificate that pairs with the key")
			}
			if _, err := os.Stat(d.ServerCert() + ".new"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a pending certificate is left: %v", err)
			}
			// And the next renewal works from there.
			if _, err := RenewCertificate(string(d), "", nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			if _, err := newCertSource(d.ServerCert(), d.ServerKey()); err != nil {
				t.Fatalf("certificate and key do not pair after the next renewal: %v", err)
			}
		})
	}
}

// A data dir without the CA key (a node added with init --join keeps
// none) renewed without --ca-key is told to pass the cluster's, not only
// that a file is missing.
func TestRenewWithoutCAKeySaysPassIt(t *testing.T) {
	d := datadir.Dir(filepath.Join(t.TempDir(), "data"))
	if _, err := Init(context.Background(), InitOptions{DataDir: string(d)}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.CAKey()); err != nil { // as on a joined node
		t.Fatal(err)
	}
	_, err := RenewCertificate(string(d), "", nil, time.Now())
	if err == nil || !strings.Contains(err.Error(), "--ca-key") {
		t.Errorf("renew without the CA key: %v; want it to say to pass the cluster's with --ca-key", err)
	}
}

// --tls-san takes a host name or an address. A URL or host:port (what
// MAYFLY_ADDR holds) was written into the certificate as a DNS name no
// client can ever match; init, join and renew refuse it, writing nothing.
func TestTLSSANMustBeAHostOrAddress(t *testing.T) {
	for _, bad := range []string{"https://mayfly.example.com", "mayfly.example.com:8443", "mayfly example", "a/b"} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := Init(context.Background(), InitOptions{DataDir: dir, SANs: []string{bad}})
		if err == nil || !strings.Contains(err.Error(), "--tls-san") {
			t.Errorf("init --tls-san %q: %v; want a refusal naming --tls-san", bad, err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("init --tls-san %q left %s behind", bad, dir)
		}
	}
	d := datadir.Dir(filepath.Join(t.TempDir(), "data"))
	if _, err := Init(context.Background(), InitOptions{DataDir: string(d), SANs: []string{"mayfly.example.com", "*.mayfly.example.com", "10.0.0.5", "::2"}}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(d.ServerCert())
	if _, err := RenewCertificate(string(d), "", []string{"https://mayfly.example.com:8443"}, time.Now()); err == nil || !strings.Contains(err.Error(), "--tls-san") {
		t.Errorf("renew with a URL: %v; want a refusal naming --tls-san", err)
	}
	if after, _ := os.ReadFile(d.ServerCert()); !bytes.Equal(before, after) {
		t.Error("a refused renewal replaced the certificate")
	}
}

// A reload (SIGHUP) that finds a certificate no client would accept now,
// expired or not yet valid (an old backup copied back, a clock-skewed
// issuer), keeps serving the one in use, as it does for a file that does
// not load at all.
func TestReloadKeepsCertificateWhenNewOneIsNotValidNow(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	cert, key := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if err := generateTLS(caCert, caKey, cert, key, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, signer, _, err := loadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	src, err := newCertSource(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	good := src.cur.Load().Leaf.SerialNumber
	tests := []struct {
		name    string
		write   func(t *testing.T) // replaces cert and key
		wantErr string
	}{
		{"expired", func(t *testing.T) { issueAt(t, ca, signer, cert, key, time.Now().AddDate(-2, 0, 0)) }, "expired"},
		{"not yet valid", func(t *testing.T) { issueAt(t, ca, signer, cert, key, time.Now().Add(48*time.Hour)) }, "not valid before"},
		{"not PEM", func(t *testing.T) { os.WriteFile(cert, []byte("nothing"), 0o644) }, "load TLS certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.write(t)
			err := src.reload(time.Now())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("reload: %v, want an error with %q", err, tt.wantErr)
			}
			if src.cur.Load().Leaf.SerialNumber.Cmp(good) != 0 {
				t.Fatalf("the certificate in use changed to one valid until %v", src.notAfter())
			}
		})
	}
	issueAt(t, ca, signer, cert, key, time.Now())
	if err := src.reload(time.Now()); err != nil {
		t.Fatalf("a valid certificate is refused: %v", err)
	}
	if src.cur.Load().Leaf.SerialNumber.Cmp(good) == 0 {
		t.Fatal("the valid new certificate is not served")
	}
}

// issueAt replaces cert and key with a pair issued by ca as if at now.
func issueAt(t *testing.T, ca *x509.Certificate, signer crypto.Signer, cert, key string, now time.Time) {
	t.Helper()
	os.Remove(cert)
	os.Remove(key)
	if err := issueServerCert(ca, signer, cert, key, nil, now); err != nil {
		t.Fatal(err)
	}
}
