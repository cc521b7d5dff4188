package server

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			res, err := RenewCertificate(dir, tt.sans, now)
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
	if _, err := RenewCertificate(filepath.Join(t.TempDir(), "none"), nil, now); err == nil {
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
	if _, err := RenewCertificate(dir, nil, time.Now().AddDate(0, 0, -355)); err != nil {
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
