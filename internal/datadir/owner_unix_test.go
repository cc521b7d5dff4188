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
