package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
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
		want    string
		wantErr error  // errors.Is
		errText string // and in its text
		unix    bool   // mode bits are checked on Unix only
	}{
		{"owner only", write("ok", "key", 0o600), "key", nil, "", false},
		{"owner read only", write("ro", "key", 0o400), "key", nil, "", false},
		{"group readable", write("g", "key", 0o640), "", ErrReadableByOthers, "chmod 600", true},
		{"world readable", write("w", "key", 0o644), "", ErrReadableByOthers, "has mode 0644", true},
		{"at the limit", write("max", strings.Repeat("k", 8), 0o600), strings.Repeat("k", 8), nil, "", false},
		{"past the limit", write("big", strings.Repeat("k", 9), 0o600), "", ErrFileTooLarge, "big is too large", false},
		{"missing", filepath.Join(dir, "none"), "", fs.ErrNotExist, "", false},
		{"a folder", dir, "", nil, "not a regular file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.unix && runtime.GOOS == "windows" {
				t.Skip("no mode bits on Windows")
			}
			b, err := Read(tc.path, 8)
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil || string(b) != tc.want {
					t.Fatalf("got %q, %v; want %q", b, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("read %q; want an error", b)
			}
			if b != nil {
				t.Errorf("an error returned bytes too: %q", b)
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
