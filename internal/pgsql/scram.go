package pgsql

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/xdg-go/scram"
)

// scramIterations is PostgreSQL's default scram_iterations.
const scramIterations = 4096

// SCRAMVerifier is the SCRAM-SHA-256 verifier PostgreSQL stores for pw
// (RFC 7677; PostgreSQL's "SCRAM-SHA-256$iter:salt$StoredKey:ServerKey"),
// with a fresh random salt. PostgreSQL stores a verifier given as PASSWORD
// unchanged and the role still logs in with pw, so sending it instead of
// pw keeps the password out of pg_stat_activity and the server's logs,
// where monitoring roles and log readers would see it. Its alphabet is
// closed: the prefix, digits, base64, ':' and '$' (never a quote or a
// backslash). The error never contains pw.
func SCRAMVerifier(pw string) (string, error) {
	salt := make([]byte, 16)
	rand.Read(salt) // never fails (crypto/rand since Go 1.24)
	c, err := scram.SHA256.NewClient("", pw, "")
	if err != nil {
		return "", fmt.Errorf("SCRAM: %w", err)
	}
	sc, err := c.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return "", fmt.Errorf("SCRAM: %w", err)
	}
	b := base64.StdEncoding
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", scramIterations, b.EncodeToString(salt), b.EncodeToString(sc.StoredKey), b.EncodeToString(sc.ServerKey)), nil
}
