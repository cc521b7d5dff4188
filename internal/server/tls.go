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
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// checkSANs refuses a --tls-san that is neither an IP address nor a DNS
// name (a URL, host:port): the certificate would carry a name no client
// ever matches. Empty values are skipped, as before.
func checkSANs(sans []string) error {
	for _, s := range sans {
		if s == "" || net.ParseIP(s) != nil {
			continue
		}
		name := strings.TrimPrefix(s, "*.")
		ok := len(name) > 0 && len(name) <= 253
		for _, label := range strings.Split(name, ".") {
			if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("--tls-san %q: give a host name or an IP address (e.g. mayfly.example.com), not a URL or host:port", s)
		}
	}
	return nil
}

// writeFileExcl writes a new file (never overwriting) and syncs it, so an
// init that crashes never leaves a half-written key behind a good name,
// and its directory, so that a power loss cannot take the file's name away
// (a node that lost policy-sealed would seal again).
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
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
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
	if err := c.reload(time.Now()); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the files again; on an error the certificate in use stays.
// Once one is in use, a new one that is not valid at now (an old backup
// copied back, an issuer's clock ahead) is an error too: every client the
// old one serves would refuse it. At start there is none in use, and one
// near or past its expiry is renewed or reported there.
func (c *certSource) reload(now time.Time) error {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	keyPEM, err := readKeyFile(c.keyFile, "TLS key")
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s: %w", c.certFile, err)
	}
	if c.cur.Load() != nil {
		switch leaf := cert.Leaf; {
		case now.After(leaf.NotAfter):
			return fmt.Errorf("load TLS certificate %s: it expired at %s", c.certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(leaf.NotBefore):
			return fmt.Errorf("load TLS certificate %s: it is not valid before %s", c.certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
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
	if err := checkSANs(sans); err != nil {
		return nil, err
	}
	d := datadir.Dir(dataDir)
	if err := d.Require(); err != nil {
		return nil, err
	}
	if err := d.RequireOwner(); err != nil {
		return nil, err
	}
	if caKeyFile == "" {
		caKeyFile = d.CAKey()
		if _, err := os.Stat(caKeyFile); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s has no CA key (%s; a node added with init --join keeps none): pass the cluster's with --ca-key ca-key.pem", dataDir, caKeyFile)
		}
	}
	ca, caKey, _, err := loadCA(d.CACert(), caKeyFile)
	if err != nil {
		return nil, err
	}
	// A renewal interrupted before must be finished first: the names are
	// read from the certificate, and its pending file is about to be reused.
	if err := completeRenewal(d.ServerCert(), d.ServerKey()); err != nil {
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
	if err := replacePair(d.ServerCert(), d.ServerKey(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM); err != nil {
		return nil, err
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

// replacePair replaces a certificate and its key so that, whatever fails
// or is killed when, the files left hold a pair that matches: both new
// files are written and synced beside the old ones first; then the key is
// renamed, then the certificate. A failure before the key's rename leaves
// the old pair; one between the renames leaves the new key with the new
// certificate still at certFile+".new", which completeRenewal finishes.
// The directory is synced after each step so the renames reach the disk
// in this order.
func replacePair(certFile, keyFile string, certPEM, keyPEM []byte) error {
	certTmp, keyTmp := certFile+pendingSuffix, keyFile+pendingSuffix
	dir := filepath.Dir(certFile)
	os.Remove(certTmp)
	os.Remove(keyTmp)
	if err := writeFileExcl(keyTmp, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write server key: %w", err)
	}
	if err := writeFileExcl(certTmp, certPEM, 0o644); err != nil {
		os.Remove(keyTmp)
		return fmt.Errorf("write server certificate: %w", err)
	}
	if err := syncDir(dir); err != nil {
		os.Remove(certTmp)
		os.Remove(keyTmp)
		return fmt.Errorf("write server certificate: %w", err)
	}
	if err := os.Rename(keyTmp, keyFile); err != nil {
		os.Remove(certTmp)
		os.Remove(keyTmp)
		return fmt.Errorf("replace server key: %w", err)
	}
	// From here the new certificate must stay at certTmp until it is at
	// certFile: it is the only one that pairs with the key.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("replace server key: %w", err)
	}
	if err := os.Rename(certTmp, certFile); err != nil {
		return fmt.Errorf("replace server certificate: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("replace server certificate: %w", err)
	}
	return nil
}

// pendingSuffix names the new files of a renewal until they are renamed.
const pendingSuffix = ".new"

// completeRenewal finishes a renewal interrupted between its two renames
// (see replacePair): when the key does not pair with the certificate but
// does with the pending one, that one is renamed into place. Any other
// state is left as it is (a pair that does not match then fails to load
// with its own error).
func completeRenewal(certFile, keyFile string) error {
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		return nil
	}
	pending := certFile + pendingSuffix
	if _, err := tls.LoadX509KeyPair(pending, keyFile); err != nil {
		return nil
	}
	if err := os.Rename(pending, certFile); err != nil {
		return fmt.Errorf("finish an interrupted certificate renewal: %w", err)
	}
	if err := syncDir(filepath.Dir(certFile)); err != nil {
		return fmt.Errorf("finish an interrupted certificate renewal: %w", err)
	}
	return nil
}

// syncDir makes the renames and creations in dir durable. Not on
// Windows: a directory handle cannot be flushed there (FlushFileBuffers
// needs write access), and NTFS journals names itself.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
