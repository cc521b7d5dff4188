package scan

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
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

// TestLegacyBaseline: a baseline written with the PBKDF2 fingerprints of
// earlier versions still hides the findings it lists.
func TestLegacyBaseline(t *testing.T) {
	s, err := New(Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	j1, _ := token.New(token.Job)
	j2, _ := token.New(token.Job)
	fs := s.ScanBytes("a.txt", []byte("x = "+j1+"\ny = "+j2+"\n"))
	if len(fs) != 2 {
		t.Fatalf("findings: %d", len(fs))
	}
	old := fmt.Sprintf(`[{"rule":%q,"file":"./a.txt","line":9,"fingerprint":%q}]`, fs[0].Rule, legacyFingerprint(fs[0].Rule, "a.txt", fs[0].Secret))
	base, err := LoadBaseline(strings.NewReader(old))
	if err != nil {
		t.Fatal(err)
	}
	if !base.Contains(fs[0]) || base.Contains(fs[1]) {
		t.Fatalf("legacy baseline: contains %v %v", base.Contains(fs[0]), base.Contains(fs[1]))
	}
	if len(fs[0].Fingerprint) != 40 {
		t.Fatalf("fingerprint %q: want 40 hex digits", fs[0].Fingerprint)
	}
	// A keyed scan gives other fingerprints, stable for one key.
	k1, _ := New(Options{Workers: 1, FingerprintKey: []byte("k1")})
	a := k1.ScanBytes("a.txt", []byte(j1+"\n"))[0].Fingerprint
	if a == fs[0].Fingerprint || a != k1.ScanBytes("./a.txt", []byte(j1+"\n"))[0].Fingerprint {
		t.Fatal("keyed fingerprint not distinct or not stable")
	}
}

func BenchmarkFingerprint(b *testing.B) {
	for b.Loop() {
		Fingerprint("generic-secret", "dir/file.go", "s3cr3t-value-of-some-length")
	}
}
