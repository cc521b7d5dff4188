//go:build unix

package keyfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// ReadOwn refuses a file another user owns, mode 0600 or not; Read, for
// keys whose owner the deployment picks, still reads it.
func TestReadOwnRefusesAnotherUsersFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadOwn(p, 8); err != nil || string(b) != "data" {
		t.Fatalf("ReadOwn of one's own file: %q, %v", b, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("making a file another user owns needs root")
	}
	if err := os.Chown(p, 65534, -1); err != nil {
		t.Fatal(err)
	}
	b, err := ReadOwn(p, 8)
	if !errors.Is(err, ErrNotOwned) || b != nil {
		t.Fatalf("ReadOwn of uid 65534's file: %q, %v; want ErrNotOwned", b, err)
	}
	if b, err := Read(p, 8); err != nil || string(b) != "data" {
		t.Fatalf("Read of uid 65534's file: %q, %v", b, err)
	}
}
