package scan

import (
	"errors"
	"strings"
	"testing"
)

func TestFingerprintPathSpelling(t *testing.T) {
	for _, alt := range []string{"./a.txt", "a.txt", "x/../a.txt"} {
		if Fingerprint("r", alt, "s3cr3t-value") != Fingerprint("r", "a.txt", "s3cr3t-value") {
			t.Errorf("%q fingerprints differently from a.txt", alt)
		}
	}
	if Fingerprint("r", "b.txt", "s3cr3t-value") == Fingerprint("r", "a.txt", "s3cr3t-value") {
		t.Error("different files share a fingerprint")
	}
}

func TestGitOutsideRepo(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ScanStaged(t.Context(), dir, func(Finding) {}); !errors.Is(err, ErrNotRepo) || strings.Contains(err.Error(), "usage") {
		t.Fatalf("staged outside a repository: %v", err)
	}
	if err := s.ScanGit(t.Context(), GitOptions{Dir: dir}, func(Finding) {}); !errors.Is(err, ErrNotRepo) {
		t.Fatalf("history outside a repository: %v", err)
	}
}
