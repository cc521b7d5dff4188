package scan

import (
	"os"
	"path/filepath"
	"testing"
)

// scan --git reads the commits the repository stores, not what a replace
// ref (refs/replace/*, fetched by a mirror clone) or a graft file says
// history is: either can swap the commit that adds a secret for an
// innocent one in git log's eyes, while the real commit stays published.
func TestGitIgnoresReplaceAndGrafts(t *testing.T) {
	needGit(t)
	tests := []struct {
		name string
		hide func(t *testing.T, dir, bad, good string)
	}{
		{"replace ref", func(t *testing.T, dir, bad, good string) {
			gitRun(t, dir, "replace", bad, good)
		}},
		{"graft file", func(t *testing.T, dir, bad, good string) {
			later := gitRun(t, dir, "rev-parse", "main")
			if err := os.WriteFile(filepath.Join(dir, ".git", "info", "grafts"), []byte(later+" "+good+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			gitRun(t, dir, "init", "-q", "-b", "main")
			write := func(name, content string) {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				gitRun(t, dir, "add", name)
			}
			tok := newGen(31).crcTok("ghp_")
			write("a.txt", "a\n")
			gitRun(t, dir, "commit", "-q", "-m", "one")
			write("s.txt", "k="+tok+"\n")
			gitRun(t, dir, "commit", "-q", "-m", "add")
			bad := gitRun(t, dir, "rev-parse", "HEAD")
			gitRun(t, dir, "rm", "-q", "s.txt")
			gitRun(t, dir, "commit", "-q", "-m", "remove")
			gitRun(t, dir, "checkout", "-q", bad+"~1")
			write("c.txt", "c\n")
			gitRun(t, dir, "commit", "-q", "-m", "innocent")
			good := gitRun(t, dir, "rev-parse", "HEAD")
			gitRun(t, dir, "checkout", "-q", "main")
			if err := os.MkdirAll(filepath.Join(dir, ".git", "info"), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.hide(t, dir, bad, good)

			s := newScanner(t, Options{})
			for _, all := range []bool{false, true} {
				var found *Finding
				if err := s.ScanGit(t.Context(), GitOptions{Dir: dir, All: all}, func(f Finding) {
					if f.Secret == tok {
						found = &f
					}
				}); err != nil {
					t.Fatal(err)
				}
				if found == nil || found.Commit != bad || found.File != "s.txt" {
					t.Errorf("all=%v: the token added by %.7s: found %v", all, bad, found)
				}
			}
		})
	}
}
