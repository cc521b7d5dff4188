//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The systemd unit runs the server as its own user, and a data dir that
// user owns: root following the README (secret put --data-dir before the
// first start, tls renew, init into the unit's StateDirectory) made root's
// 0600 files there — the audit journal, a new key — and the server then
// failed to start ("open …/audit.journal: permission denied"). Root is
// refused there, told as whom to run, and nothing is made.
func TestDataDirCommandsAsRootInAnotherUsersDir(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if _, stderr, code := runCLI(t, "", "init", "--data-dir", dir); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	empty := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, empty} {
		if err := filepath.Walk(p, func(f string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(f, 65534, 65534)
		}); err != nil {
			t.Fatal(err)
		}
	}
	value := filepath.Join(t.TempDir(), "v")
	os.WriteFile(value, []byte("a-secret-value-1234"), 0o600)
	for _, args := range [][]string{
		{"secret", "put", "s", "--data-dir", dir, "--value-file", value},
		{"admin", "token", "create", "rescue", "--role", "admin", "--data-dir", dir},
		{"tls", "renew", "--data-dir", dir},
		{"init", "--data-dir", empty},
	} {
		_, stderr, code := runCLI(t, "", args...)
		if code != exitUsage || !strings.Contains(stderr, "uid 65534") || !strings.Contains(stderr, "sudo -u ") {
			t.Errorf("%v as root in uid 65534's dir: exit %d, %q", args, code, stderr)
		}
	}
	for _, p := range []string{dir, empty} {
		filepath.Walk(p, func(f string, fi os.FileInfo, _ error) error {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
				t.Errorf("%s was made as root", f)
			}
			return nil
		})
	}
}
