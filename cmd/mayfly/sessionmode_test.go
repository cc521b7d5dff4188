//go:build unix

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The session file holds admin credentials: one another local user can
// read is refused, as ssh refuses such a key, naming the file and the
// chmod to run, rather than its session being used silently.
func TestSessionFileReadableByOthersIsRefused(t *testing.T) {
	const tok = "mfys_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG" // mayfly:allow
	const addr = "https://mayfly.example:8443"
	p := filepath.Join(t.TempDir(), "sessions.json")
	t.Setenv("MAYFLY_SESSION_FILE", p)
	t.Setenv(envToken, "")
	b, _ := json.Marshal(sessionFile{Sessions: map[string]savedSession{addr: {SessionToken: tok, ExpiresAt: time.Now().Add(time.Hour)}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode    os.FileMode
		refused bool
	}{
		{0o600, false},
		{0o640, true},
		{0o604, true},
	} {
		if err := os.Chmod(p, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := newAPIClient(&clientFlags{addr: addr}, true)
		if (err != nil) != tc.refused {
			t.Fatalf("mode %04o: newAPIClient = %v, refused want %v", tc.mode, err, tc.refused)
		}
		if tc.refused && (!strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod 600")) {
			t.Fatalf("mode %04o: the refusal does not name the file and the chmod to run: %v", tc.mode, err)
		}
	}
}

// A session file another user owns is refused, whatever its mode: with
// MAYFLY_SESSION_FILE in a shared directory, another user could put
// their own sessions there (mode 0600, which root reads), and root's
// admin commands would act as them. Before, only the mode was checked.
func TestSessionFileOfAnotherUserIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making a file another user owns needs root")
	}
	const tok = "mfys_" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG" // mayfly:allow
	const addr = "https://mayfly.example:8443"
	p := filepath.Join(t.TempDir(), "sessions.json")
	t.Setenv("MAYFLY_SESSION_FILE", p)
	t.Setenv(envToken, "")
	b, _ := json.Marshal(sessionFile{Sessions: map[string]savedSession{addr: {SessionToken: tok, ExpiresAt: time.Now().Add(time.Hour)}}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid     int
		refused bool
	}{
		{os.Geteuid(), false},
		{65534, true},
	} {
		if err := os.Chown(p, tc.uid, -1); err != nil {
			t.Fatal(err)
		}
		_, err := newAPIClient(&clientFlags{addr: addr}, true)
		if (err != nil) != tc.refused {
			t.Fatalf("owner uid %d: newAPIClient = %v, refused want %v", tc.uid, err, tc.refused)
		}
		if tc.refused && (!strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "uid 65534")) {
			t.Fatalf("the refusal does not name the file and its owner: %v", err)
		}
	}
}
