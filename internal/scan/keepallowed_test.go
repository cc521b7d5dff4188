package scan

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// With KeepAllowed, a finding on a mayfly:allow line is reported, marked
// Allowed, and never stands for one that is not: in git history a token
// first added on an allowed line and later on a plain one is reported
// both ways, so a caller that drops the allowed findings still reports it.
func TestKeepAllowed(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	tok := jobToken(t)
	write := func(content string) {
		if err := os.WriteFile(filepath.Join(dir, "ci.env"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		gitRun(t, dir, "add", ".")
		gitRun(t, dir, "commit", "-q", "-m", "c")
	}
	write("T=" + tok + " # mayfly:allow\n")
	write("T=" + tok + " # mayfly:allow\nU=" + tok + "\n")
	type count struct{ allowed, plain int }
	tests := []struct {
		name string
		keep bool
		want count
	}{
		{"allowed lines dropped", false, count{0, 1}},
		{"allowed lines kept", true, count{1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScanner(t, Options{KeepAllowed: tt.keep})
			var got count
			if err := s.ScanGit(context.Background(), GitOptions{Dir: dir}, func(f Finding) {
				if f.Secret != tok {
					return
				}
				if f.Allowed {
					got.allowed++
				} else {
					got.plain++
				}
			}); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("git: got %+v findings, want %+v", got, tt.want)
			}
			got = count{}
			for _, f := range s.ScanBytes("ci.env", []byte("T="+tok+" # mayfly:allow\n")) {
				if f.Allowed {
					got.allowed++
				} else {
					got.plain++
				}
			}
			if want := (count{tt.want.allowed, 0}); got != want {
				t.Fatalf("bytes: got %+v findings, want %+v", got, want)
			}
		})
	}
}
