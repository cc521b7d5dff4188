package scan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stash entry is a commit in .git that no branch holds: a token stashed
// and never committed is pushed by nothing, but it is in every copy of the
// repository's folder (a CI cache, a backup, a laptop's disk). scan --git
// --all reads every entry of the stash, not only the newest (refs/stash),
// its staged and untracked parts too, and says which entry holds it.
func TestGitStashEntries(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := newGen(53)
	tracked, staged, untracked := g.crcTok("ghp_"), g.crcTok("ghp_"), g.crcTok("ghp_")
	write("a.env", "A=1\n")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "init")
	// Older entry (stash@{1}): a change to a tracked file.
	write("a.env", "A=1\nTOKEN="+tracked+"\n")
	gitRun(t, dir, "stash", "push", "-q")
	// Newer entry (stash@{0}): a staged new file and an untracked one.
	write("b.env", "TOKEN="+staged+"\n")
	gitRun(t, dir, "add", "b.env")
	write("c.env", "TOKEN="+untracked+"\n")
	gitRun(t, dir, "stash", "push", "-q", "-u")

	tests := []struct {
		name string
		all  bool
		want map[string]string // secret → stash entry
	}{
		{"HEAD only", false, map[string]string{}},
		{"all", true, map[string]string{tracked: "stash@{1}", staged: "stash@{0}", untracked: "stash@{0}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newScanner(t, Options{})
			got := map[string]string{}
			var text strings.Builder
			if err := s.ScanGit(t.Context(), GitOptions{Dir: dir, All: tt.all}, func(f Finding) {
				got[f.Secret] = f.Stash
				_ = WriteText(&text, f, false)
			}); err != nil {
				t.Fatal(err)
			}
			// The report says where to look (git show stash@{N}).
			for _, entry := range tt.want {
				if !strings.Contains(text.String(), "("+entry+")") {
					t.Errorf("text report does not name %s:\n%s", entry, text.String())
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("found %d secrets, want %d", len(got), len(tt.want))
			}
			for sec, entry := range tt.want {
				e, ok := got[sec]
				switch {
				case !ok:
					t.Errorf("secret of %s not found", entry)
				case e != entry:
					t.Errorf("secret of %s reported in %q", entry, e)
				}
			}
		})
	}
}
