//go:build unix

package datadir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Root may not write into a data dir another user owns (the files it made
// would lock that user's server out); into its own, or a dir still to be
// made, it may. Another user is never refused here.
func TestRequireOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if err := Dir(t.TempDir()).RequireOwner(); err != nil {
			t.Fatalf("a user in its own dir: %v", err)
		}
		t.Skip("the refusal needs root")
	}
	base := t.TempDir()
	own := filepath.Join(base, "root")
	other := filepath.Join(base, "other")
	for _, p := range []string{own, other} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		refused   bool
	}{
		{"root's own", own, false},
		{"not made yet", filepath.Join(base, "new"), false},
		{"another user's", other, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Dir(tc.dir).RequireOwner()
			if (err != nil) != tc.refused {
				t.Fatalf("RequireOwner(%s) = %v, refused want %v", tc.dir, err, tc.refused)
			}
			if tc.refused && (!strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), "sudo -u ")) {
				t.Fatalf("the refusal does not say whose dir it is and what to run: %v", err)
			}
		})
	}
}

// A data dir another local user could change is refused before init
// writes into it: one they own (made in /tmp ahead of the victim), or
// one anyone may write to, sticky or not. They could swap ca.pem and the
// server's certificate and key for their own, or plant a link where the
// server later makes a file. Group-writable (a Kubernetes fsGroup volume)
// and root's dirs pass.
func TestRequireUnshared(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, -1); err != nil {
				t.Skipf("chown needs root: %v", err)
			}
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		dir     func() string
		refused string
	}{
		{"own 0700", func() string { return mk("own", 0o700, -1) }, ""},
		{"own, group-writable", func() string { return mk("group", 0o770|os.ModeSetgid, -1) }, ""},
		{"not made yet", func() string { return filepath.Join(base, "new") }, ""},
		{"anyone may write", func() string { return mk("world", 0o777, -1) }, "chmod"},
		{"anyone may add names", func() string { return mk("sticky", 0o777|os.ModeSticky, -1) }, "chmod"},
		{"another user's", func() string { return mk("other", 0o700, 65534) }, "uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.refused == "uid 65534" && os.Geteuid() == 65534 {
				t.Skip("that user runs the test")
			}
			err := Dir(tc.dir()).RequireUnshared()
			if (err != nil) != (tc.refused != "") {
				t.Fatalf("RequireUnshared = %v, refused want %v", err, tc.refused != "")
			}
			if err != nil && !strings.Contains(err.Error(), tc.refused) {
				t.Fatalf("the refusal does not say %q: %v", tc.refused, err)
			}
		})
	}
}
