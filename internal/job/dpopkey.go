package job

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/mayfly-sh/mayfly/internal/keyfile"
)

// maxDPoPKeyFile bounds a DPoP key file: a PEM RSA 4096-bit key is about
// 3.3 KB.
const maxDPoPKeyFile = 64 << 10

// LoadDPoPKey reads a PEM private key (PKCS#8, SEC 1 EC or PKCS#1 RSA) to
// bind a job token to. When path does not exist and create is true, it
// writes a fresh P-256 key there (mode 0600) and reports created. An
// existing key is read as keyfile reads one: refused when another local
// user may read it (whoever can read it can use a token bound to it), and
// bounded.
func LoadDPoPKey(path string, create bool) (key crypto.Signer, created bool, err error) {
	b, err := keyfile.Read(path, maxDPoPKeyFile)
	if errors.Is(err, fs.ErrNotExist) && create {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, false, fmt.Errorf("DPoP key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, false, fmt.Errorf("DPoP key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("DPoP key: %w", err)
		}
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, false, fmt.Errorf("DPoP key: writing %s: %w", path, err)
		}
		return k, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("DPoP key: %w", err)
	}
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, false, fmt.Errorf("DPoP key: %s holds no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, false, fmt.Errorf("DPoP key: %s: PEM type %q is not a private key", path, blk.Type)
	}
	if err != nil {
		return nil, false, fmt.Errorf("DPoP key: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, false, fmt.Errorf("DPoP key: %s: unsupported key type %T", path, k)
	}
	return s, false, nil
}
