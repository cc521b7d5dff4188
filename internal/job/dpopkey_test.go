package job

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/keyfile"
)

// A DPoP key is what makes a stolen job token useless: one that another
// local user may read (a shared runner) is refused as ssh refuses such a
// key, naming the chmod, and a path that is not a small regular file (a
// device, a huge file) is not read whole into memory.
func TestLoadDPoPKeyIsPrivateAndBounded(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "k.pem")
	if _, _, err := LoadDPoPKey(good, true); err != nil {
		t.Fatal(err)
	}
	pemKey, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		path    string
		unix    bool  // mode bits are checked on Unix only
		wantErr error // errors.Is; nil: loads
		errText string
	}{
		{name: "owner only", path: good},
		{name: "owner read only", path: write("ro.pem", pemKey, 0o400)},
		{name: "group readable", path: write("g.pem", pemKey, 0o640), unix: true, wantErr: keyfile.ErrReadableByOthers, errText: "chmod 600"},
		{name: "world readable", path: write("w.pem", pemKey, 0o644), unix: true, wantErr: keyfile.ErrReadableByOthers, errText: "chmod 600"},
		{name: "too large", path: write("big.pem", append([]byte(strings.Repeat("#", maxDPoPKeyFile)), pemKey...), 0o600), wantErr: keyfile.ErrFileTooLarge},
		{name: "a folder", path: dir, errText: "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.unix && runtime.GOOS == "windows" {
				t.Skip("no mode bits on Windows")
			}
			k, created, err := LoadDPoPKey(tc.path, true)
			if created {
				t.Fatalf("created a key over %s", tc.path)
			}
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil || k == nil {
					t.Fatalf("not loaded: %v", err)
				}
				return
			}
			if err == nil || k != nil {
				t.Fatalf("loaded; want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v is not %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not say %q", err, tc.errText)
			}
		})
	}
}
