package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A saved session (an admin credential) is written through a new file of
// a random name: at the fixed SESSIONS.tmp, a file or link another user
// planted in a shared directory (MAYFLY_SESSION_FILE=/tmp/…) received the
// session token, readable by that user (through the link, or through a
// descriptor kept open on the file, which outlives its rename).
func TestWriteSessionsIntoNothingPlanted(t *testing.T) {
	const tok = "mfys_planted-session-token-0123456789" // mayfly:allow
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, tmp, victim string) *os.File // what the planter reads
	}{
		{"a file", func(t *testing.T, tmp, _ string) *os.File {
			f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
		{"a link", func(t *testing.T, tmp, victim string) *os.File {
			if err := os.Symlink(victim, tmp); err != nil {
				t.Skipf("no symlinks here: %v", err)
			}
			f, err := os.Open(victim)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "sessions.json")
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, nil, 0o666); err != nil {
				t.Fatal(err)
			}
			planted := tc.plant(t, p+".tmp", victim)
			f := sessionFile{Sessions: map[string]savedSession{"https://mayfly.example": {SessionToken: tok, ExpiresAt: time.Now().Add(time.Hour)}}}
			if err := writeSessions(f, p); err != nil {
				t.Fatalf("writeSessions: %v", err)
			}
			if b, _ := io.ReadAll(planted); strings.Contains(string(b), tok) {
				t.Error("the session token was written where another user had planted a file or link")
			}
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("sessions file: %v, %v: want a regular file of mode 0600", fi, err)
			}
			if b, _ := os.ReadFile(p); !strings.Contains(string(b), tok) {
				t.Fatalf("the session is not saved: %s", b)
			}
		})
	}
}
