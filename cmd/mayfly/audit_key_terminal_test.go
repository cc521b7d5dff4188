package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestServerKeyWithTerminalControls: the verifier key a server answers
// on /v1/audit/key is printed (audit key, a --key mismatch) and kept in
// the state file, and a note key's name may hold any character but space
// and '+': a hostile server's key named with ESC sequences drove the
// terminal of whoever checked it. Such a key is refused, unprinted.
func TestServerKeyWithTerminalControls(t *testing.T) {
	_, _, as := servedLog(t, 3)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostileKey, err := note.NewEd25519VerifierKey("mayfly.local/audit\x1b[8m\u009b2J", pub)
	if err != nil {
		t.Fatal(err)
	}
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/audit/key" {
			w.Write([]byte(hostileKey + "\n"))
			return
		}
		as.Config.Handler.ServeHTTP(w, r)
	}))
	defer hostile.Close()
	t.Setenv("MAYFLY_ADDR", hostile.URL)
	otherKey, err := note.NewEd25519VerifierKey("mayfly.local/audit", pub)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"audit key", []string{"audit", "key", "--no-state"}},
		{"audit verify", []string{"audit", "verify", "--no-state"}},
		{"audit verify --key another", []string{"audit", "verify", "--no-state", "--key", otherKey}},
		{"audit prove", []string{"audit", "prove", "--index", "1", "--state", t.TempDir() + "/none.state"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", tt.args...)
			if code == 0 {
				t.Fatalf("exit 0 with a key holding terminal controls\nout %q\nerr %q", out, errOut)
			}
			for _, r := range out + errOut {
				if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 {
					t.Fatalf("output holds control %U:\nout %q\nerr %q", r, out, errOut)
				}
			}
		})
	}
}
