package scan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A shallow clone (actions/checkout's default depth of 1, GitLab's
// GIT_DEPTH) holds only the newest commits: scan --git reads what is
// there and says that older history was not read, rather than passing
// in silence a history it never saw.
func TestGitShallowCloneWarns(t *testing.T) {
	needGit(t)
	src := t.TempDir()
	gitRun(t, src, "init", "-q", "-b", "main")
	tok := newGen(41).crcTok("ghp_")
	if err := os.WriteFile(filepath.Join(src, "s.txt"), []byte("k="+tok+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun(t, src, "add", ".")
	gitRun(t, src, "commit", "-q", "-m", "secret")
	gitRun(t, src, "rm", "-q", "s.txt")
	gitRun(t, src, "commit", "-q", "-m", "removed")
	root := t.TempDir()
	full, shallow := filepath.Join(root, "full"), filepath.Join(root, "shallow")
	gitRun(t, root, "clone", "-q", "file://"+src, full)
	gitRun(t, root, "clone", "-q", "--depth", "1", "file://"+src, shallow)

	tests := []struct {
		name string
		dir  string
		warn bool
	}{
		{"full clone", full, false},
		{"shallow clone", shallow, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var warned []string
			s := newScanner(t, Options{Warn: func(err error) { warned = append(warned, err.Error()) }})
			if err := s.ScanGit(t.Context(), GitOptions{Dir: tt.dir}, func(Finding) {}); err != nil {
				t.Fatal(err)
			}
			got := len(warned) == 1 && strings.Contains(warned[0], "shallow")
			if got != tt.warn || len(warned) > 1 {
				t.Fatalf("warnings %q, want a shallow-clone warning: %v", warned, tt.warn)
			}
		})
	}
}
