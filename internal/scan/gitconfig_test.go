package scan

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What the scanned repository or its user configures must not hide added
// lines: a .gitattributes marking files -diff or binary (one line in a
// pull request), or log.showRoot=false (the first commit's diff). Binary
// content is still skipped, as the file scanner skips binary files.
func TestGitSettingsHideNothing(t *testing.T) {
	needGit(t)
	tests := []struct {
		name   string
		attrs  string // .gitattributes
		config []string
		file   string // app.env's content after TOKEN=<token>
		staged bool
		want   int
	}{
		{"-diff, history", "* -diff\n", nil, "\n", false, 1},
		{"-diff, staged", "* -diff\n", nil, "\n", true, 1},
		{"binary, history", "*.env binary\n", nil, "\n", false, 1},
		{"log.showRoot=false", "", []string{"log.showRoot", "false"}, "\n", false, 1},
		{"binary content is skipped", "", nil, "\x00\x01\x02\n", false, 0},
		// git would print the log in UTF-16, which no parser of it reads.
		{"i18n.logOutputEncoding=UTF-16", "", []string{"i18n.logOutputEncoding", "UTF-16"}, "\n", false, 1},
		{"i18n.logOutputEncoding=UTF-16, staged", "", []string{"i18n.logOutputEncoding", "UTF-16"}, "\n", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			gitRun(t, dir, "init", "-q", "-b", "main")
			if tt.config != nil {
				gitRun(t, dir, append([]string{"config"}, tt.config...)...)
			}
			if tt.attrs != "" {
				if err := os.WriteFile(filepath.Join(dir, ".gitattributes"), []byte(tt.attrs), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			j := jobToken(t)
			if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte("TOKEN="+j+tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			gitRun(t, dir, "add", ".")
			s := newScanner(t, Options{})
			var got []Finding
			emit := func(f Finding) { got = append(got, f) }
			var err error
			if tt.staged {
				err = s.ScanStaged(t.Context(), dir, emit)
			} else {
				gitRun(t, dir, "commit", "-q", "-m", "first")
				err = s.ScanGit(t.Context(), GitOptions{Dir: dir}, emit)
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("%d findings, want %d", len(got), tt.want)
			}
		})
	}
}

// A text report is one line per finding whatever the scanned repository
// named its files or authors: no newline that forges a line, no escape
// that erases one on a terminal.
func TestWriteTextQuotesControlCharacters(t *testing.T) {
	for _, f := range []Finding{
		{Rule: "generic-secret", File: "a.txt\nsrc/ok.go:1:1: all clear", Line: 1, Column: 1, Hint: "abcd…(20)"},
		{Rule: "generic-secret", File: "a\x1b[2K\rb.txt", Line: 1, Column: 1, Hint: "abcd…(20)"},
		{Rule: "generic-secret", File: "a.txt", Line: 1, Column: 1, Hint: "abcd…(20)", Commit: "0123456789abcdef", Author: "Eve \x1b]8;;http://x\x07 <e@x>"},
		{Rule: "generic-secret", File: "a\u0085b.txt", Line: 1, Column: 1, Hint: "abcd…(20)"},
	} {
		var b bytes.Buffer
		if err := WriteText(&b, f, false); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if strings.Count(out, "\n") != 1 || strings.ContainsAny(out, "\x1b\r\x07\u0085") {
			t.Errorf("a text report line carries control characters: %q", out)
		}
	}
	var b bytes.Buffer
	_ = WriteText(&b, Finding{Rule: "r", File: "dir/é.txt", Line: 2, Column: 3, Hint: "h"}, false)
	if b.String() != "dir/é.txt:2:3: r h\n" {
		t.Errorf("a plain name changed: %q", b.String())
	}
}

// scan --git run in a subfolder of the work tree (the default PATH is ".")
// reads the whole repository's history, also when the user's or the
// repository's config sets diff.relative=true, which limits a diff to the
// current folder: the secret one folder up would pass unseen.
func TestGitFromSubfolderReadsEverything(t *testing.T) {
	needGit(t)
	for _, relative := range []bool{false, true} {
		for _, staged := range []bool{false, true} {
			t.Run(fmt.Sprintf("diff.relative=%v,staged=%v", relative, staged), func(t *testing.T) {
				dir := t.TempDir()
				gitRun(t, dir, "init", "-q", "-b", "main")
				if relative {
					gitRun(t, dir, "config", "diff.relative", "true")
				}
				sub := filepath.Join(dir, "docs")
				if err := os.Mkdir(sub, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(sub, "README"), []byte("docs\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte("TOKEN="+jobToken(t)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				gitRun(t, dir, "add", ".")
				s := newScanner(t, Options{})
				var got []Finding
				emit := func(f Finding) { got = append(got, f) }
				var err error
				if staged {
					err = s.ScanStaged(t.Context(), sub, emit)
				} else {
					gitRun(t, dir, "commit", "-q", "-m", "first")
					err = s.ScanGit(t.Context(), GitOptions{Dir: sub}, emit)
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 || got[0].File != "app.env" {
					t.Fatalf("findings %+v, want one in app.env", got)
				}
			})
		}
	}
}

// diff.interHunkContext (the user's or the repository's config) makes git
// join nearby hunks with the unchanged lines between them: a finding after
// such a line was reported lines too early.
func TestGitInterHunkContextKeepsLines(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	gitRun(t, dir, "config", "diff.interHunkContext", "10")
	lines := []string{"a=1", "b=2", "c=3", "d=4", "e=5", "f=6"}
	write := func() {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write()
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "first")
	lines[1] = "b=22"
	lines[4] = "TOKEN=" + jobToken(t)
	write()
	gitRun(t, dir, "commit", "-q", "-am", "second")
	s := newScanner(t, Options{})
	var got []Finding
	if err := s.ScanGit(t.Context(), GitOptions{Dir: dir}, func(f Finding) { got = append(got, f) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Line != 5 {
		var at []int
		for _, f := range got {
			at = append(at, f.Line)
		}
		t.Fatalf("findings on lines %v, want one on line 5", at)
	}
}
