package pgroletest

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// SCRAMAccepts runs a whole SCRAM-SHA-256 exchange (RFC 5802) of a client
// knowing pw against a server holding verifier, as PostgreSQL stores it
// ("SCRAM-SHA-256$iter:salt$StoredKey:ServerKey"): what PostgreSQL does
// when the role logs in with a password, the client checking the server's
// signature too. (The test server trusts loopback connections, so logging
// in proves nothing about the password; this does.)
func SCRAMAccepts(t testing.TB, verifier, pw string) bool {
	t.Helper()
	head, keys, ok := strings.Cut(strings.TrimPrefix(verifier, "SCRAM-SHA-256$"), "$")
	iterS, saltB64, ok2 := strings.Cut(head, ":")
	storedB64, serverB64, ok3 := strings.Cut(keys, ":")
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") || !ok || !ok2 || !ok3 {
		t.Fatalf("pgroletest: not a SCRAM verifier: %.20s…", verifier)
	}
	iters, err := strconv.Atoi(iterS)
	if err != nil {
		t.Fatalf("pgroletest: not a SCRAM verifier's iteration count: %q", iterS)
	}
	dec := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("pgroletest: not a SCRAM verifier: %v", err)
		}
		return b
	}
	creds := scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(dec(saltB64)), Iters: iters}, StoredKey: dec(storedB64), ServerKey: dec(serverB64)}
	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		t.Fatal(err)
	}
	cl, err := scram.SHA256.NewClient("role", pw, "")
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := srv.NewConversation(), cl.NewConversation()
	msg := ""
	for !sc.Done() {
		if msg, err = cc.Step(msg); err != nil {
			return false
		}
		if msg, err = sc.Step(msg); err != nil {
			return false
		}
	}
	_, err = cc.Step(msg) // the client checks the server's signature
	return err == nil && sc.Valid()
}
