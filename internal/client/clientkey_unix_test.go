//go:build unix

package client

import (
	"os"
	"strings"
	"testing"
)

// The admin client certificate's private key (--client-key,
// MAYFLY_CLIENT_KEY) is refused when another local user may read it, as
// ssh refuses such a key and as the server refuses its own keys: whoever
// reads it gets past --admin-client-ca as the admin. Before, it was used
// whatever its mode.
func TestClientKeyReadableByOthersIsRefused(t *testing.T) {
	_, certFile, keyFile := writeClientCert(t, t.TempDir())
	for _, tc := range []struct {
		mode    os.FileMode
		refused bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, true},
		{0o644, true},
		{0o604, true},
	} {
		if err := os.Chmod(keyFile, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{Addr: "https://mayfly.example", ClientCertFile: certFile, ClientKeyFile: keyFile, Getenv: envFrom(nil)})
		if (err != nil) != tc.refused {
			t.Fatalf("key at mode %04o: New = %v, refused want %v", tc.mode, err, tc.refused)
		}
		if tc.refused && (!strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "chmod 600")) {
			t.Fatalf("key at mode %04o: the refusal does not name the file and the chmod to run: %v", tc.mode, err)
		}
	}
}
