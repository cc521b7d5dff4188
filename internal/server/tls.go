package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// writeFileExcl writes a new file (never overwriting) and syncs it, so an
// init that crashes never leaves a half-written key behind a good name.
func writeFileExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func pemKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// generateTLS makes a CA (10 years) and a server certificate it signs
// (1 year) for localhost, 127.0.0.1, ::1 and the extra SANs, and writes
// them as PEM files.
func generateTLS(caCert, caKey, srvCert, srvKey string, sans []string, now time.Time) error {
	cak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "mayfly local CA", Organization: []string{"mayfly"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &cak.PublicKey, cak)
	if err != nil {
		return fmt.Errorf("create CA: %w", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	caKeyPEM, err := pemKey(cak)
	if err != nil {
		return err
	}
	if err := writeFileExcl(caKey, caKeyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFileExcl(caCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return err
	}
	return issueServerCert(ca, cak, srvCert, srvKey, sans, now)
}

// issueServerCert makes a server key and a certificate for it signed by
// ca (loopback names and sans), and writes them.
func issueServerCert(ca *x509.Certificate, cak crypto.Signer, srvCert, srvKey string, sans []string, now time.Time) error {
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "mayfly server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if s != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &sk.PublicKey, cak)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	srvKeyPEM, err := pemKey(sk)
	if err != nil {
		return err
	}
	if err := writeFileExcl(srvKey, srvKeyPEM, 0o600); err != nil {
		return err
	}
	return writeFileExcl(srvCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// tlsConfig is TLS 1.2+ with AEAD suites only and HTTP/2. The certificate
// is read through certs, so that a reload takes effect on new connections.
func tlsConfig(certs *certSource, clientCAs *x509.CertPool) *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.get,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	if clientCAs != nil {
		// Asked, verified when given; the API requires it for admin calls.
		c.ClientAuth = tls.VerifyClientCertIfGiven
		c.ClientCAs = clientCAs
	}
	return c
}

// certSource holds the server's certificate and reloads it from its files
// (on SIGHUP), so a renewed certificate is served without a restart.
type certSource struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func newCertSource(certFile, keyFile string) (*certSource, error) {
	c := &certSource{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on an error the certificate in use stays.
func (c *certSource) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

// notAfter is the expiry of the certificate in use.
func (c *certSource) notAfter() time.Time { return c.cur.Load().Leaf.NotAfter }

// RenewBefore is how close to its expiry the data dir's own certificate is
// renewed when a server starts.
const RenewBefore = 30 * 24 * time.Hour

// RenewResult describes a renewed server certificate.
type RenewResult struct {
	NotAfter time.Time `json:"not_after"`
	Names    []string  `json:"names"`
}

// RenewCertificate issues a new server certificate (one year) from the
// data dir's CA for the names of the current one plus sans, and replaces
// server.pem and server-key.pem. A running server serves it after SIGHUP.
// caKeyFile is the CA's key; "" means the data dir's ca-key.pem (a node
// added with init --join has none: the cluster's must be given).
func RenewCertificate(dataDir, caKeyFile string, sans []string, now time.Time) (*RenewResult, error) {
	d := datadir.Dir(dataDir)
	if err := d.Require(); err != nil {
		return nil, err
	}
	if caKeyFile == "" {
		caKeyFile = d.CAKey()
	}
	ca, caKey, _, err := loadCA(d.CACert(), caKeyFile)
	if err != nil {
		return nil, err
	}
	old, err := readCert(d.ServerCert())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     old.Subject,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.AddDate(1, 0, 0).Truncate(time.Second), // what the certificate can say
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    slices.Clone(old.DNSNames),
		IPAddresses: slices.Clone(old.IPAddresses),
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if s != "" && !slices.Contains(tmpl.DNSNames, s) {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &sk.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyPEM, err := pemKey(sk)
	if err != nil {
		return nil, err
	}
	// Key first, then certificate: a server reading in between fails to
	// pair them and keeps the certificate it has.
	if err := replaceFile(d.ServerKey(), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write server key: %w", err)
	}
	if err := replaceFile(d.ServerCert(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, fmt.Errorf("write server certificate: %w", err)
	}
	res := &RenewResult{NotAfter: tmpl.NotAfter.UTC(), Names: slices.Clone(tmpl.DNSNames)}
	for _, ip := range tmpl.IPAddresses {
		res.Names = append(res.Names, ip.String())
	}
	return res, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: not a PEM certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// replaceFile writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see the old file or the new, whole.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".new"
	os.Remove(tmp)
	if err := writeFileExcl(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return p, nil
}

// certNames are the DNS names and IP addresses of a certificate's leaf: the
// names this node answers to (DPoP htu).
func certNames(c tls.Certificate) []string {
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return nil
	}
	out := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
