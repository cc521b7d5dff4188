package scan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A token pasted into a commit message is as public as one in a file once
// the commit is pushed: scan --git reads every message of the commits it
// scans, each as the file "(commit message)" of its commit.
func TestGitCommitMessages(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	g := newGen(23)
	inSubject := g.crcTok("ghp_")
	inBody := jobToken(t)
	onBranch := g.crcTok("npm_")
	big := g.crcTok("ghp_")

	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "first")
	cFirst := gitRun(t, dir, "rev-parse", "HEAD")
	gitRun(t, dir, "commit", "-q", "--allow-empty", "-m", "use "+inSubject+" for now")
	cSubject := gitRun(t, dir, "rev-parse", "HEAD")
	gitRun(t, dir, "commit", "-q", "--allow-empty", "-m", "deploy fix", "-m", "tested with\n\nMAYFLY_TOKEN="+inBody)
	cBody := gitRun(t, dir, "rev-parse", "HEAD")
	// A message longer than a scanning window, the token at its end.
	msg := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(msg, []byte("long\n\n"+strings.Repeat("filler words here\n", 20000)+"key "+big+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun(t, dir, "commit", "-q", "--allow-empty", "-F", msg)
	cBig := gitRun(t, dir, "rev-parse", "HEAD")
	gitRun(t, dir, "checkout", "-q", "-b", "side")
	gitRun(t, dir, "commit", "-q", "--allow-empty", "-m", "npm "+onBranch)
	cBranch := gitRun(t, dir, "rev-parse", "HEAD")
	gitRun(t, dir, "checkout", "-q", "main")

	type want struct {
		line, col int
		commit    string
	}
	tests := []struct {
		name string
		o    GitOptions
		want map[string]want
	}{
		{"HEAD's history", GitOptions{}, map[string]want{
			inSubject: {1, 5, cSubject}, inBody: {5, 14, cBody}, big: {20003, 5, cBig},
		}},
		{"every ref", GitOptions{All: true}, map[string]want{
			inSubject: {1, 5, cSubject}, inBody: {5, 14, cBody}, big: {20003, 5, cBig}, onBranch: {1, 5, cBranch},
		}},
		{"since", GitOptions{Since: cSubject}, map[string]want{inBody: {5, 14, cBody}, big: {20003, 5, cBig}}},
		{"range", GitOptions{Range: cFirst + ".." + cSubject}, map[string]want{inSubject: {1, 5, cSubject}}},
	}
	s := newScanner(t, Options{ChunkSize: 64 << 10, Overlap: 4 << 10})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Dir = dir
			got := map[string]Finding{}
			if err := s.ScanGit(t.Context(), o, func(f Finding) { got[f.Secret] = f }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d findings, want %d", len(got), len(tt.want))
			}
			for sec, w := range tt.want {
				f, ok := got[sec]
				if !ok {
					t.Errorf("%s: not found", Hint("", sec))
					continue
				}
				if f.File != "(commit message)" || f.Line != w.line || f.Column != w.col || f.Commit != w.commit ||
					f.Author != "Ada <ada@example.com>" || !strings.HasPrefix(f.Date, "2024-01-02T03:04:05") {
					t.Errorf("%s: got %s:%d:%d@%.7s by %q on %q, want %s:%d:%d@%.7s", Hint("", sec),
						f.File, f.Line, f.Column, f.Commit, f.Author, f.Date, "(commit message)", w.line, w.col, w.commit)
				}
			}
		})
	}
}

// With --all ("every branch and tag"), the message of an annotated tag is
// read too: `git push --tags` publishes it with the tag.
func TestGitTagMessages(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	g := newGen(29)
	inTag := g.crcTok("ghp_")
	gitRun(t, dir, "commit", "-q", "--allow-empty", "-m", "first")
	gitRun(t, dir, "tag", "light")
	gitRun(t, dir, "tag", "-a", "v1", "-m", "release", "-m", "published with\nNPM="+inTag)
	tagObj := gitRun(t, dir, "rev-parse", "v1")
	gitRun(t, dir, "tag", "light2")

	s := newScanner(t, Options{})
	tests := []struct {
		name string
		all  bool
		want bool
	}{
		{"HEAD only", false, false},
		{"every ref", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Finding
			if err := s.ScanGit(t.Context(), GitOptions{Dir: dir, All: tt.all}, func(f Finding) { got = append(got, f) }); err != nil {
				t.Fatal(err)
			}
			if !tt.want {
				if len(got) != 0 {
					t.Fatalf("got %d findings, want none", len(got))
				}
				return
			}
			if len(got) != 1 || got[0].Secret != inTag {
				t.Fatalf("got %d findings, want the tag's token", len(got))
			}
			f := got[0]
			if f.File != "(tag message)" || f.Line != 4 || f.Column != 5 || f.Commit != tagObj ||
				f.Author != "Ada <ada@example.com>" || !strings.HasPrefix(f.Date, "2024-01-02T03:04:05") {
				t.Errorf("got %s:%d:%d@%.7s by %q on %q, want (tag message):4:5@%.7s", f.File, f.Line, f.Column, f.Commit, f.Author, f.Date, tagObj)
			}
		})
	}
}

// A commit object may declare any encoding for its message, and git log
// re-encodes it: declared UTF-16, an ASCII message comes out empty. The
// message as stored is what the commit publishes, and what is scanned.
func TestGitCommitMessageDeclaredEncoding(t *testing.T) {
	needGit(t)
	g := newGen(37)
	tests := []struct {
		name, encoding, prefix string
	}{
		{"UTF-16LE, even length", "UTF-16LE", "fixx "},
		{"UTF-16LE, odd length", "UTF-16LE", "fix "},
		{"UTF-32", "UTF-32", "fixx "},
		{"ISO-8859-1", "ISO-8859-1", "caf\xe9 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			gitRun(t, dir, "init", "-q", "-b", "main")
			gitRun(t, dir, "commit", "-q", "--allow-empty", "-m", "first")
			tok := g.crcTok("ghp_")
			obj := "tree " + gitRun(t, dir, "rev-parse", "HEAD^{tree}") + "\nparent " + gitRun(t, dir, "rev-parse", "HEAD") +
				"\nauthor Ada <ada@example.com> 1704164645 +0000\ncommitter Ada <ada@example.com> 1704164645 +0000\nencoding " +
				tt.encoding + "\n\n" + tt.prefix + tok + "\n"
			f := filepath.Join(t.TempDir(), "commit")
			if err := os.WriteFile(f, []byte(obj), 0o644); err != nil {
				t.Fatal(err)
			}
			c := gitRun(t, dir, "hash-object", "-t", "commit", "-w", f)
			gitRun(t, dir, "update-ref", "refs/heads/main", c)
			s := newScanner(t, Options{})
			var got []Finding
			if err := s.ScanGit(t.Context(), GitOptions{Dir: dir}, func(f Finding) { got = append(got, f) }); err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Secret != tok || got[0].Commit != c || got[0].File != "(commit message)" ||
				got[0].Line != 1 || got[0].Column != len(tt.prefix)+1 {
				t.Fatalf("got %d findings (%v), want the token at (commit message):1:%d@%.7s", len(got), got, len(tt.prefix)+1, c)
			}
		})
	}
}
