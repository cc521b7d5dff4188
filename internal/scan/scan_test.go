package scan

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/token"
)

func newScanner(t testing.TB, o Options) *Scanner {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jobToken(t testing.TB) string {
	j, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestPositionsAllowAndHints(t *testing.T) {
	j := jobToken(t)
	gh := newGen(9).crcTok("ghp_")
	pw, _ := token.NewPassword()
	badPw := pw[:len(pw)-1] + string(token.Alphabet[(strings.IndexByte(token.Alphabet, pw[len(pw)-1])+1)%62])
	tests := []struct {
		name, in       string
		rule           string
		line, col, num int
	}{
		{"first line", j, RuleMayflyJob, 1, 1, 1},
		{"third line", "a\nbb\n  x=" + j + "\n", RuleMayflyJob, 3, 5, 1},
		{"allowed", "a\nx=" + j + " # mayfly:allow\n", "", 0, 0, 0},
		{"allowed other line", "# mayfly:allow\nx=" + j + "\n", RuleMayflyJob, 2, 3, 1},
		{"github", "\tGH=" + gh, "github-pat", 1, 5, 1},
		{"minted password in a DSN", "DATABASE_URL=postgres://mayfly_x:" + pw + "@h/db", RuleMayflyPassword, 1, 34, 1},
		{"minted password, bad checksum", "PGPASSWORD=" + badPw, "", 0, 0, 0},
		{"crlf", "a\r\nb=" + gh + "\r\n", "github-pat", 2, 3, 1},
	}
	s := newScanner(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := s.ScanBytes("f", []byte(tt.in))
			if len(fs) != tt.num {
				t.Fatalf("got %d findings %v", len(fs), rulesOf(fs))
			}
			if tt.num == 0 {
				return
			}
			f := fs[0]
			if f.Rule != tt.rule || f.Line != tt.line || f.Column != tt.col || !f.Verified {
				t.Fatalf("got %+v", f)
			}
			if strings.Contains(f.Hint, f.Secret[8:]) {
				t.Fatalf("hint %q reveals the secret", f.Hint)
			}
		})
	}
}

func TestFingerprintStable(t *testing.T) {
	s := newScanner(t, Options{})
	j := jobToken(t)
	a := s.ScanBytes("f", []byte("x="+j))
	b := s.ScanBytes("f", []byte("\n\n\n   y = "+j))
	c := s.ScanBytes("g", []byte(j))
	if a[0].Fingerprint != b[0].Fingerprint || a[0].Fingerprint == c[0].Fingerprint || len(a[0].Fingerprint) != 40 {
		t.Fatalf("fingerprints %s %s %s", a[0].Fingerprint, b[0].Fingerprint, c[0].Fingerprint)
	}
	if strings.Contains(a[0].Fingerprint, j) {
		t.Fatal("fingerprint holds the token")
	}
}

func TestJSONNeverHoldsSecret(t *testing.T) {
	s := newScanner(t, Options{})
	j := jobToken(t)
	fs := s.ScanBytes("f", []byte("token: "+j))
	var buf bytes.Buffer
	if err := WriteJSON(&buf, fs); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte(j)) || bytes.Contains(buf.Bytes(), []byte(j[8:20])) {
		t.Fatal("JSON report holds the token")
	}
	var items []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &items); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"rule", "file", "line", "column", "commit", "hint", "fingerprint", "verified"} {
		if _, ok := items[0][k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	buf.Reset()
	_ = WriteText(&buf, fs[0], true)
	_ = WriteSARIF(&buf, fs, s.Rules(), "test")
	if bytes.Contains(buf.Bytes(), []byte(j)) {
		t.Fatal("text or SARIF holds the token")
	}
}

func TestBaseline(t *testing.T) {
	s := newScanner(t, Options{})
	j1, j2 := jobToken(t), jobToken(t)
	old := s.ScanBytes("f", []byte("a="+j1+"\n"))
	var buf bytes.Buffer
	if err := WriteJSON(&buf, old); err != nil {
		t.Fatal(err)
	}
	base, err := LoadBaseline(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// j1 moved two lines down: still in the baseline; j2 is new.
	var kept []Finding
	for _, f := range s.ScanBytes("f", []byte("\n\nb = "+j1+"\nc="+j2+"\n")) {
		if !base.Contains(f) {
			kept = append(kept, f)
		}
	}
	if len(kept) != 1 || kept[0].Secret != j2 {
		t.Fatalf("kept %v", rulesOf(kept))
	}
	if _, err := LoadBaseline(strings.NewReader(`{"not":"an array"}`)); err == nil {
		t.Fatal("bad baseline accepted")
	}
	if _, err := LoadBaseline(strings.NewReader(`[{"rule":"x"}]`)); err == nil {
		t.Fatal("baseline without fingerprints accepted")
	}
}

func TestSARIF(t *testing.T) {
	s := newScanner(t, Options{})
	j := jobToken(t)
	fs := s.ScanBytes("dir/my file.go", []byte("\n  k := \""+j+"\"\n"))
	fs[0].Commit = "0123456789abcdef0123456789abcdef01234567"
	var buf bytes.Buffer
	if err := WriteSARIF(&buf, fs, s.Rules(), "v1"); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Schema  string `json:"$schema"`
		Version string `json:"version"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string `json:"name"`
					Rules []struct {
						ID               string `json:"id"`
						ShortDescription struct {
							Text string `json:"text"`
						} `json:"shortDescription"`
					} `json:"rules"`
				} `json:"driver"`
			} `json:"tool"`
			Results []struct {
				RuleID    string `json:"ruleId"`
				RuleIndex int    `json:"ruleIndex"`
				Level     string `json:"level"`
				Message   struct {
					Text string `json:"text"`
				} `json:"message"`
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct {
							URI string `json:"uri"`
						} `json:"artifactLocation"`
						Region struct {
							StartLine   int `json:"startLine"`
							StartColumn int `json:"startColumn"`
						} `json:"region"`
					} `json:"physicalLocation"`
				} `json:"locations"`
				PartialFingerprints map[string]string `json:"partialFingerprints"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(buf.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Version != "2.1.0" || !strings.Contains(log.Schema, "sarif-2.1.0") || len(log.Runs) != 1 {
		t.Fatalf("header %q %q", log.Version, log.Schema)
	}
	run := log.Runs[0]
	if run.Tool.Driver.Name != "mayfly" || len(run.Tool.Driver.Rules) < 30 || len(run.Results) != 1 {
		t.Fatalf("driver %+v", run.Tool.Driver.Name)
	}
	r := run.Results[0]
	if r.RuleID != RuleMayflyJob || run.Tool.Driver.Rules[r.RuleIndex].ID != r.RuleID || r.Message.Text == "" || r.Level != "error" {
		t.Fatalf("result %+v", r)
	}
	loc := r.Locations[0].PhysicalLocation
	if loc.ArtifactLocation.URI != "dir/my%20file.go" || loc.Region.StartLine != 2 || loc.Region.StartColumn != 9 {
		t.Fatalf("location %+v", loc)
	}
	if r.PartialFingerprints["mayfly/v2"] != fs[0].Fingerprint {
		t.Fatal("no partial fingerprint")
	}
	for _, rr := range run.Tool.Driver.Rules {
		if rr.ShortDescription.Text == "" {
			t.Errorf("rule %s has no description", rr.ID)
		}
	}
}

func TestFilesSkipBinaryGitAndLarge(t *testing.T) {
	dir := t.TempDir()
	j := jobToken(t)
	write := func(name, content string) {
		p := filepath.Join(dir, name)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.txt", "t="+j)
	write("bin.dat", "\x00\x01"+j)
	write(".git/config", j)
	write("sub/.git/x", j)
	write("big.txt", strings.Repeat("a", 5000)+j)
	write("empty.txt", "")
	s := newScanner(t, Options{MaxFileSize: 4096})
	var got []string
	st, err := s.ScanPaths(t.Context(), []string{dir}, func(f Finding) { got = append(got, filepath.Base(f.File)) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "ok.txt" {
		t.Fatalf("found in %v", got)
	}
	if st.Files != 2 || st.Skipped != 2 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := s.ScanPaths(t.Context(), []string{filepath.Join(dir, "nope")}, func(Finding) {}); err == nil {
		t.Fatal("missing path accepted")
	}
}

// fillReader yields n bytes of one long line of source-like text, with
// tokens planted at given offsets, without holding it in memory.
type fillReader struct {
	n, off int64
	plants map[int64]string
	next   []int64
}

const filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit; "

func (r *fillReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.off < r.n {
		if len(r.next) > 0 && r.off == r.next[0] {
			tok := r.plants[r.next[0]]
			if len(p)-n < len(tok) {
				break
			}
			copy(p[n:], tok)
			n += len(tok)
			r.off += int64(len(tok))
			r.next = r.next[1:]
			continue
		}
		c := filler[r.off%int64(len(filler))]
		if c == ' ' {
			c = '_' // no word boundaries: one long identifier-like run
		}
		if r.off%int64(len(filler)) == 0 {
			c = ' '
		}
		p[n] = c
		n++
		r.off++
	}
	if n == 0 {
		return 0, io.ErrShortBuffer
	}
	return n, nil
}

func TestLargeLineBoundedMemory(t *testing.T) {
	const size = 64 << 20
	const chunk = 1 << 20
	s := newScanner(t, Options{Workers: 2})
	plants := map[int64]string{}
	var offs []int64
	for k := int64(1); k < size/chunk; k += 7 {
		for _, d := range []int64{-41, -40, -20, -1, 0, 1, 39} {
			o := k*chunk + d
			if len(offs) > 0 && o < offs[len(offs)-1]+60 {
				continue
			}
			offs = append(offs, o)
			plants[o] = " " + jobToken(t) + " "
		}
	}
	check := func(name string, got map[int]string) {
		t.Helper()
		if len(got) != len(offs) {
			t.Fatalf("%s: %d findings, want %d", name, len(got), len(offs))
		}
		for _, o := range offs {
			if got[int(o)+2] != plants[o][1:41] {
				t.Fatalf("%s: token at %d not found at column %d", name, o+1, o+2)
			}
		}
	}
	newReader := func() *fillReader { return &fillReader{n: size, plants: plants, next: append([]int64(nil), offs...)} }

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got := map[int]string{}
	if err := s.ScanReader(t.Context(), "big", newReader(), func(f Finding) {
		if f.Line != 1 {
			t.Errorf("line %d", f.Line)
		}
		got[f.Column] = f.Secret
	}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	check("stream", got)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Fatalf("streaming a 64 MiB line allocated %d MiB", alloc>>20)
	}

	// The file path: windows scanned by the worker pool.
	got = map[int]string{}
	jobs := make(chan *job, 4)
	var serr error
	runtime.ReadMemStats(&before)
	go func() {
		_, _, serr = s.chunks(t.Context(), &srcMeta{file: "big"}, newReader(), true, func(j *job) error { jobs <- j; return nil })
		close(jobs)
	}()
	for j := range jobs {
		for _, f := range s.scanJob(j) {
			got[f.Column] = f.Secret
		}
		*j.pooled = j.b[:0]
		s.pool.Put(j.pooled)
	}
	runtime.ReadMemStats(&after)
	if serr != nil {
		t.Fatal(serr)
	}
	check("chunks", got)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 48<<20 {
		t.Fatalf("chunking a 64 MiB line allocated %d MiB", alloc>>20)
	}
}

func TestChunkBoundariesSmallWindows(t *testing.T) {
	// Many small windows over many lines: every finding once, right place.
	g := newGen(5)
	var b strings.Builder
	type want struct{ line, col int }
	wants := map[string]want{}
	for i := 1; i <= 3000; i++ {
		if i%37 == 0 {
			gh := g.crcTok("ghp_")
			pad := strings.Repeat(" ", i%11)
			wants[gh] = want{i, len(pad) + 4}
			fmt.Fprintf(&b, "%sgh=%s\n", pad, gh)
			continue
		}
		fmt.Fprintf(&b, "line %d of some ordinary text with words\n", i)
	}
	s := newScanner(t, Options{ChunkSize: 4096, Overlap: 512})
	got := map[string]want{}
	err := s.ScanReader(t.Context(), "x", strings.NewReader(b.String()), func(f Finding) {
		if _, dup := got[f.Secret]; dup {
			t.Errorf("duplicate %s", f.Hint)
		}
		got[f.Secret] = want{f.Line, f.Column}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(wants) {
		t.Fatalf("got %d want %d", len(got), len(wants))
	}
	for k, w := range wants {
		if got[k] != w {
			t.Fatalf("%s at %v want %v", Hint("github-pat", k), got[k], w)
		}
	}
}

func TestStreamReportsLinesAsTheyArrive(t *testing.T) {
	s := newScanner(t, Options{})
	pr, pw := io.Pipe()
	found := make(chan Finding)
	done := make(chan error)
	go func() { done <- s.ScanReader(t.Context(), "stdin", pr, func(f Finding) { found <- f }) }()
	// next waits for a finding while the writer is still open.
	next := func(what string) Finding {
		t.Helper()
		select {
		case f := <-found:
			return f
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not reported before the stream ended", what)
			return Finding{}
		}
	}
	j := jobToken(t)
	if _, err := pw.Write([]byte("starting job\ntoken is " + j + "\n")); err != nil {
		t.Fatal(err)
	}
	f := next("token")
	if f.Line != 2 || f.Secret != j {
		t.Fatalf("got %+v", f)
	}
	key := newGen(2).pem("RSA ")
	half := len(key) / 2
	_, _ = pw.Write([]byte(key[:half]))
	_, _ = pw.Write([]byte(key[half:] + "\n"))
	f = next("private key")
	if f.Rule != "private-key" || f.Line != 3 || f.Secret != key {
		t.Fatalf("got %+v", f.Rule)
	}
	// A finished key block must not hold back the lines after it.
	j2 := jobToken(t)
	_, _ = pw.Write([]byte("step 2\ntoken is " + j2 + "\n"))
	f = next("token after a private key")
	if f.Secret != j2 || f.Line != 3+strings.Count(key, "\n")+2 {
		t.Fatalf("got %s at line %d", f.Rule, f.Line)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCustomRules(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "r.yaml")
	tml := filepath.Join(dir, "r.toml")
	_ = os.WriteFile(yml, []byte(`rules:
  - id: acme-key
    description: ACME API key
    regex: 'acme_(?P<secret>[a-z0-9]{24})'
    keywords: [acme_]
    entropy: 3
`), 0o644)
	_ = os.WriteFile(tml, []byte(`title = "x"
[allowlist]
paths = ['''vendor''']

[[rules]]
id = "corp-token"   # trailing comment
description = "Corp token"
regex = '''corp-[0-9]{6}-(?P<secret>[A-Z]{10})'''
keywords = [
  "corp-",
]
entropy = 2.0

[[rules]]
id = "no-keyword"
regex = "zz\\d{8}zz"
`), 0o644)
	var rules []Rule
	for _, p := range []string{yml, tml} {
		rs, err := LoadRules(p)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, rs...)
	}
	if len(rules) != 3 || rules[1].Regex != `corp-[0-9]{6}-(?P<secret>[A-Z]{10})` || rules[2].Regex != `zz\d{8}zz` || rules[1].Entropy != 2 {
		t.Fatalf("parsed %+v", rules)
	}
	s := newScanner(t, Options{Rules: rules})
	in := "a acme_k3j4h5g6f7d8s9a0q1w2e3r4 b corp-123456-QWERTYUIOP c zz12345678zz acme_aaaaaaaaaaaaaaaaaaaaaaaa\n" +
		base64.StdEncoding.EncodeToString([]byte("x acme_p0o9i8u7y6t5r4e3w2q1a2s3 y"))
	var got []string
	for _, f := range s.ScanBytes("f", []byte(in)) {
		got = append(got, f.Rule+":"+f.Secret+":"+f.Encoding)
	}
	want := []string{"acme-key:k3j4h5g6f7d8s9a0q1w2e3r4:", "corp-token:QWERTYUIOP:", "no-keyword:zz12345678zz:", "acme-key:p0o9i8u7y6t5r4e3w2q1a2s3:base64"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"rules: [{id: x, regex: '('}]", "rules: [{id: 'bad id', regex: 'x'}]", "rules: []", "rules: [{id: x}]"} {
		if _, err := ParseRules([]byte(bad), "yaml"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := New(Options{Rules: []Rule{{ID: "github-pat", Regex: "x"}}}); err == nil {
		t.Error("duplicate rule id accepted")
	}
	if _, err := New(Options{Enable: []string{"nope"}}); err == nil {
		t.Error("unknown rule id accepted")
	}
}

// ---- git ----

func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
		"GIT_AUTHOR_DATE=2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func needGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
}

func TestGitHistory(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g := newGen(11)
	ghRemoved := g.crcTok("ghp_")
	jRenamed := jobToken(t)
	jBranch := jobToken(t)
	npmLater := g.crcTok("npm_")

	write("a.txt", "one\ntwo\nGH="+ghRemoved+"\n")
	write("b.txt", strings.Repeat("filler line\n", 20))
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "add")
	cAdd := gitRun(t, dir, "rev-parse", "HEAD")

	write("a.txt", "one\ntwo\n")
	gitRun(t, dir, "commit", "-q", "-am", "remove the secret")

	gitRun(t, dir, "mv", "b.txt", "c.txt")
	write("c.txt", strings.Repeat("filler line\n", 20)+"tok="+jRenamed+"\n")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "rename and add")
	cRename := gitRun(t, dir, "rev-parse", "HEAD")

	gitRun(t, dir, "checkout", "-q", "-b", "feature")
	write("d.txt", "x\n"+jBranch+"\n")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "branch")
	cBranch := gitRun(t, dir, "rev-parse", "HEAD")
	gitRun(t, dir, "checkout", "-q", "main")
	write("e.txt", "main side\n")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "main")
	gitRun(t, dir, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
	cMerge := gitRun(t, dir, "rev-parse", "HEAD")

	write("f.txt", "npm="+npmLater+"\n")
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "later")
	cLater := gitRun(t, dir, "rev-parse", "HEAD")

	s := newScanner(t, Options{})
	scanGit := func(o GitOptions) map[string]Finding {
		t.Helper()
		o.Dir = dir
		got := map[string]Finding{}
		if err := s.ScanGit(t.Context(), o, func(f Finding) {
			if _, dup := got[f.Secret]; dup {
				t.Errorf("duplicate finding for %s", f.Hint)
			}
			got[f.Secret] = f
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := scanGit(GitOptions{})
	want := map[string]Finding{
		ghRemoved: {File: "a.txt", Line: 3, Column: 4, Commit: cAdd},
		jRenamed:  {File: "c.txt", Line: 21, Column: 5, Commit: cRename},
		jBranch:   {File: "d.txt", Line: 2, Column: 1, Commit: cBranch},
		npmLater:  {File: "f.txt", Line: 1, Column: 5, Commit: cLater},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d findings: %v", len(got), got)
	}
	for sec, w := range want {
		f := got[sec]
		if f.File != w.File || f.Line != w.Line || f.Column != w.Column || f.Commit != w.Commit {
			t.Errorf("%s: got %s:%d:%d@%.7s want %s:%d:%d@%.7s", Hint("", sec), f.File, f.Line, f.Column, f.Commit, w.File, w.Line, w.Column, w.Commit)
		}
		if f.Author != "Ada <ada@example.com>" || !strings.HasPrefix(f.Date, "2024-01-02T03:04:05") {
			t.Errorf("author %q date %q", f.Author, f.Date)
		}
	}
	// --since the merge: only the later commit.
	if got := scanGit(GitOptions{Since: cMerge}); len(got) != 1 || got[npmLater].Commit != cLater {
		t.Errorf("--since: %v", got)
	}
	// --range covering the branch commit only.
	if got := scanGit(GitOptions{Range: cRename + ".." + cBranch}); len(got) != 1 || got[jBranch].Commit != cBranch {
		t.Errorf("--range: %v", got)
	}
	// First parent: the branch's token is seen through the merge commit.
	if got := scanGit(GitOptions{FirstParent: true}); got[jBranch].Commit != cMerge || len(got) != 4 {
		t.Errorf("--first-parent: %v", got)
	}
	if err := s.ScanGit(t.Context(), GitOptions{Dir: dir, Range: "--output=/tmp/x"}, func(Finding) {}); err == nil {
		t.Error("option-like range accepted")
	}
	if err := s.ScanGit(t.Context(), GitOptions{Dir: t.TempDir()}, func(Finding) {}); err == nil {
		t.Error("not a repository: no error")
	}
}

func TestGitStaged(t *testing.T) {
	needGit(t)
	dir := t.TempDir()
	gitRun(t, dir, "init", "-q", "-b", "main")
	_ = os.WriteFile(filepath.Join(dir, "base.txt"), []byte("hello\n"), 0o644)
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "base")
	staged, unstaged := jobToken(t), jobToken(t)
	_ = os.WriteFile(filepath.Join(dir, "new file.txt"), []byte("a\nb\nT="+staged+"\n"), 0o644)
	gitRun(t, dir, "add", ".")
	_ = os.WriteFile(filepath.Join(dir, "base.txt"), []byte("hello\n"+unstaged+"\n"), 0o644)
	s := newScanner(t, Options{})
	var got []Finding
	if err := s.ScanStaged(t.Context(), dir, func(f Finding) { got = append(got, f) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Secret != staged || got[0].File != "new file.txt" || got[0].Line != 3 || got[0].Column != 3 || got[0].Commit != "" {
		t.Fatalf("got %+v", got)
	}
}

func TestParseDiffLongLinesAndEdgeCases(t *testing.T) {
	j := jobToken(t)
	long := strings.Repeat("x", 3<<20) + " " + j + " " + strings.Repeat("y", 1<<20)
	diff := "\x01c1\x002024-01-01T00:00:00Z\x00A <a@b>\n\n" +
		"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,0 +10,2 @@\n+" + long + "\n+++ not a header " + j + "\n" +
		"diff --git a/y b/y\ndeleted file mode 100644\n--- a/y\n+++ /dev/null\n@@ -1 +0,0 @@\n-" + j + "\n" +
		"diff --git a/\"q\\tz\" b/\"q\\tz\"\n--- a/\"q\\tz\"\n+++ \"b/q\\tz\"\n@@ -0,0 +1 @@\n+" + j + "\n\\ No newline at end of file\n"
	s := newScanner(t, Options{})
	order := map[string]int{}
	var got []Finding
	err := s.pipeline(t.Context(), func(ctx context.Context, jobs chan<- *job) error {
		return s.parseDiff(ctx, strings.NewReader(diff), order, jobs)
	}, func(f Finding) { got = append(got, f) })
	if err != nil {
		t.Fatal(err)
	}
	SortFindings(got)
	var locs []string
	for _, f := range got {
		locs = append(locs, fmt.Sprintf("%s:%d:%d@%s", f.File, f.Line, f.Column, f.Commit))
	}
	want := []string{"q\tz:1:1@c1", fmt.Sprintf("x:10:%d@c1", 3<<20+2), "x:11:17@c1"}
	if strings.Join(locs, " ") != strings.Join(want, " ") {
		t.Fatalf("got %q want %q", locs, want)
	}
}

func TestParseDiffLongLineCut(t *testing.T) {
	// A long added line is sent in pieces cut where the 256 KiB read buffer
	// fills; a token straddling a cut is reported once and whole.
	const cut = 256<<10 - 1 // the first piece: the buffer less the '+'
	tok := "glpat-" + newGen(5).str(abcB62, 40)
	for _, before := range []int{1, 20, 26, 40, 45} { // token bytes before the cut
		t.Run(strconv.Itoa(before), func(t *testing.T) {
			line := strings.Repeat("x", cut-before-1) + " " + tok + " end"
			diff := "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+" + line + "\n"
			s := newScanner(t, Options{ChunkSize: 1024, Overlap: 256})
			var got []Finding
			err := s.pipeline(t.Context(), func(ctx context.Context, jobs chan<- *job) error {
				return s.parseDiff(ctx, strings.NewReader(diff), map[string]int{}, jobs)
			}, func(f Finding) { got = append(got, f) })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Secret != tok || got[0].Column != cut-before+1 {
				for _, f := range got {
					t.Logf("%s 1:%d %s (len %d)", f.Rule, f.Column, f.Hint, len(f.Secret))
				}
				t.Fatalf("%d findings, want the whole token once at column %d", len(got), cut-before+1)
			}
		})
	}
}

// ---- leak reports ----

func TestParseLeakReport(t *testing.T) {
	j1, j2 := jobToken(t), jobToken(t)
	a, _ := token.New(token.Admin)
	bad := j1[:39] + string(rotate(j1[39]))
	p1, _ := token.NewPassword()
	badP := p1[:40] + string(rotate(p1[40]))
	tests := []struct {
		name, body string
		tokens     []string
		passwords  []string
		format     string
		src, url   string
	}{
		{"text", "log line " + j1 + "\nagain " + j1 + " and " + bad + " and " + a, []string{j1, a}, nil, "text", "", ""},
		{"github", `[{"token":"` + j1 + `","type":"mayfly_job_token","url":"https://github.com/o/r/blob/x/f#L1","source":"content"},{"token":"` + bad + `","type":"mayfly_job_token","url":"u2","source":"commit"},{"token":"` + j2 + `","type":"mayfly_job_token","url":"u3","source":"content"}]`,
			[]string{j1, j2}, nil, "github", "content", "https://github.com/o/r/blob/x/f#L1"},
		{"gitlab", `[{"type":"mayfly_job_token","token":"` + j2 + `","location":"https://gitlab.com/o/r/-/blob/main/f"}]`, []string{j2}, nil, "gitlab", "", "https://gitlab.com/o/r/-/blob/main/f"},
		{"empty array", `[]`, nil, nil, "github", "", ""},
		{"text that looks like JSON", `[{"token": "` + j1 + `"` /* truncated */, []string{j1}, nil, "text", "", ""},
		// A JSON array that is not an alert is text like any other: the
		// tokens in it are leaks all the same.
		{"array of numbers", `[1,2,3]`, nil, nil, "text", "", ""},
		{"array of strings", `["export MAYFLY_TOKEN=` + j1 + `"]`, []string{j1}, nil, "text", "", ""},
		{"JSON log records", `[{"level":"info","msg":"calling with ` + j1 + `"}]`, []string{j1}, nil, "text", "", ""},
		{"token not a string", `[{"token":{"value":"` + j1 + `"}}]`, []string{j1}, nil, "text", "", ""},
		{"no token field", `[{"type":"x"}]`, nil, nil, "text", "", ""},
		{"alert with a token in another field", `[{"token":"none","type":"x","url":"u","note":"` + j2 + `"}]`, []string{j2}, nil, "github", "", "u"},
		{"JSON-escaped newline before the token", `{"log":"$ mayfly login\n` + j1 + `\n$ make deploy"}`, []string{j1}, nil, "text", "", ""},
		{"empty", ``, nil, nil, "text", "", ""},
		{"passwords in text", "DATABASE_URL=postgres://r:" + p1 + "@h/db " + j1 + " " + badP + " " + p1, []string{j1}, []string{p1}, "text", "", ""},
		{"password in github alert", `[{"token":"` + p1 + `","type":"mayfly_db_password","url":"u","source":"content"}]`, nil, []string{p1}, "github", "content", "u"},
	}
	ghBody := "0123456789abcdefghijABCDEFGHIJ"
	ghs := "ghs" + "_" + ghBody + token.Checksum(ghBody)
	ghsBad := ghs[:39] + string(rotate(ghs[39]))
	sl, sl2 := statelessGHS(t, "123456"), statelessGHS(t, "7")
	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"ghs in text", "GH_TOKEN=" + ghs + " x" + ghs + " " + ghsBad + " " + ghs + "x " + ghs, []string{ghs}},
		{"ghs in a github alert", `[{"token":"` + ghs + `","type":"github_app_installation_token","url":"u","source":"content"}]`, []string{ghs}},
		{"no ghs", "ghs" + "_short " + ghsBad, nil},
		{"stateless ghs in text, and at a sentence's end", "GH_TOKEN=" + sl + "\nleaked " + sl2 + ". " + sl, []string{sl, sl2}},
		{"stateless ghs in a github alert", `[{"token":"` + sl + `","type":"github_app_installation_token","url":"u","source":"content"}]`, []string{sl}},
		{"stateless ghs glued or not a JWT", "x" + sl + " " + "ghs" + "_123_" + "abc.def.ghi " + "ghs" + "__" + sl[len("ghs_123456_"):], nil},
	} {
		r := ParseLeakReport([]byte(tt.body))
		if fmt.Sprint(r.GitHubTokens) != fmt.Sprint(tt.want) || len(r.Tokens) != 0 {
			t.Errorf("%s: got %+v", tt.name, r)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ParseLeakReport([]byte(tt.body))
			if fmt.Sprint(r.Tokens) != fmt.Sprint(tt.tokens) || fmt.Sprint(r.Passwords) != fmt.Sprint(tt.passwords) || r.Format != tt.format || r.Source != tt.src || r.URL != tt.url {
				t.Fatalf("got %+v", r)
			}
		})
	}
	var b strings.Builder
	for range MaxLeakTokens + 5 {
		b.WriteString(jobToken(t) + "\n")
	}
	r := ParseLeakReport([]byte(b.String()))
	if len(r.Tokens) != MaxLeakTokens || !r.Truncated {
		t.Fatalf("cap: %d %v", len(r.Tokens), r.Truncated)
	}
}

func TestVerifyGitHubSignature(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	pub, err := ParseGitHubPublicKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]*ecdsa.PublicKey{"kid1": pub}
	body := []byte(`[{"token":"x","type":"t","url":"u","source":"content"}]`)
	h := sha256.Sum256(body)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, h[:])
	otherSig, _ := ecdsa.SignASN1(rand.Reader, other, h[:])
	good := base64.StdEncoding.EncodeToString(sig)
	tests := []struct {
		name, kid, sig string
		body           []byte
		ok             bool
	}{
		{"valid", "kid1", good, body, true},
		{"tampered body", "kid1", good, append([]byte(" "), body...), false},
		{"unknown key", "kid2", good, body, false},
		{"other key", "kid1", base64.StdEncoding.EncodeToString(otherSig), body, false},
		{"not base64", "kid1", "%%%", body, false},
		{"empty", "kid1", "", body, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyGitHubSignature(tt.body, tt.kid, tt.sig, keys)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if _, err := ParseGitHubPublicKey("nope"); err == nil {
		t.Fatal("bad key accepted")
	}
}

// ---- fuzz ----

func FuzzScan(f *testing.F) {
	j, _ := token.New(token.Job)
	g := newGen(3)
	for _, p := range samples(g) {
		f.Add([]byte("x = " + p.body() + "\n"))
	}
	f.Add([]byte("t=" + base64.StdEncoding.EncodeToString([]byte(j))))
	f.Add([]byte("password = \\\"" + j[4:] + "\\\""))
	f.Add([]byte(j[:39] + "x"))
	full, _ := New(Options{})
	small, _ := New(Options{ChunkSize: 64, Overlap: 48})
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(fs []Finding) {
			for _, x := range fs {
				if x.Rule == RuleMayflyJob || x.Rule == RuleMayflyAdmin {
					if _, err := token.Parse(x.Secret); err != nil || !x.Verified {
						t.Fatalf("reported an invalid mayfly token")
					}
				}
				if x.Line < 1 || x.Column < 1 {
					t.Fatalf("bad position %d:%d", x.Line, x.Column)
				}
			}
		}
		check(full.ScanBytes("f", b))
		var fs []Finding
		if err := small.ScanReader(context.Background(), "f", bytes.NewReader(b), func(x Finding) { fs = append(fs, x) }); err != nil {
			t.Fatal(err)
		}
		check(fs)
	})
}

func FuzzParseLeakReport(f *testing.F) {
	j, _ := token.New(token.Job)
	f.Add([]byte(`[{"token":"` + j + `","type":"t","url":"u","source":"s"}]`))
	f.Add([]byte(`[{"type":"t","token":"` + j + `","location":"l"}]`))
	f.Add([]byte("text " + j))
	p, _ := token.NewPassword()
	f.Add([]byte("postgres://r:" + p + "@h/db " + j))
	f.Add([]byte(`[{"token":`))
	f.Add([]byte("ghs_0123456789abcdefghijABCDEFGHIJ" + token.Checksum("0123456789abcdefghijABCDEFGHIJ") + " " + j))
	f.Add([]byte("x " + statelessGHS(f, "42") + ". " + j))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ParseLeakReport(b)
		seen := map[string]bool{}
		for _, tok := range r.Tokens {
			if _, err := token.Parse(tok); err != nil || seen[tok] {
				t.Fatalf("bad or repeated token in report")
			}
			seen[tok] = true
		}
		for _, pw := range r.Passwords {
			if token.ParsePassword(pw) != nil || seen[pw] {
				t.Fatalf("bad or repeated password in report")
			}
			seen[pw] = true
		}
		for _, g := range r.GitHubTokens {
			if end, _, ok := ghsAt([]byte(g), 0); !ok || end != len(g) || seen[g] {
				t.Fatalf("bad or repeated GitHub token in report")
			}
			seen[g] = true
		}
		if len(r.Tokens)+len(r.Passwords)+len(r.GitHubTokens) > MaxLeakTokens {
			t.Fatal("over the cap")
		}
	})
}

// A file scan reports its running totals to Progress, ending at the totals
// ScanPaths returns.
// A root named on the command line that is a symlink is followed and
// reported under its own name; a link below a root is not followed.
func TestScanPathsSymlinkRoots(t *testing.T) {
	dir := t.TempDir()
	j := jobToken(t)
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "ci.env"), []byte("MAYFLY_TOKEN="+j+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{real, "linkdir"}, {filepath.Join(real, "ci.env"), "linkfile"}, {real, "real/loop"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Skipf("no symlinks here: %v", err)
		}
	}
	s := newScanner(t, Options{})
	for _, tc := range []struct{ root, file string }{
		{"real", filepath.Join("real", "ci.env")},
		{"linkdir", filepath.Join("linkdir", "ci.env")},
		{"linkfile", "linkfile"},
	} {
		t.Run(tc.root, func(t *testing.T) {
			var got []string
			st, err := s.ScanPaths(t.Context(), []string{filepath.Join(dir, tc.root)}, func(f Finding) { got = append(got, f.File) })
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, tc.file); len(got) != 1 || got[0] != want || st.Files != 1 {
				t.Fatalf("findings in %v (%d files), want one in %s", got, st.Files, want)
			}
		})
	}
}

func TestScanPathsProgress(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 25; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.txt", i)), []byte(strings.Repeat("x", 100+i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var calls int
	var last Stats
	s, err := New(Options{Workers: 4, Progress: func(st Stats) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if st.Files > last.Files {
			last.Files = st.Files
		}
		if st.Bytes > last.Bytes {
			last.Bytes = st.Bytes
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.ScanPaths(context.Background(), []string{dir}, func(Finding) {})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 25 || last.Files != st.Files || last.Bytes != st.Bytes || st.Files != 25 {
		t.Fatalf("%d calls, last %+v, totals %+v", calls, last, st)
	}
}

// statelessGHS builds a GitHub App installation token of the stateless
// form GitHub mints since 2026: "ghs_" + the App's id + "_" + a JWT signed
// by GitHub (here random bytes stand for the signature).
func statelessGHS(t testing.TB, appID string) string {
	t.Helper()
	jti := make([]byte, 16)
	sig := make([]byte, 64)
	rand.Read(jti)
	rand.Read(sig)
	enc := base64.RawURLEncoding.EncodeToString
	payload := fmt.Sprintf(`{"iss":"github","app_id":%s,"installation_id":7890,"exp":1900000000,"jti":"%x","permissions":{"contents":"write"}}`, appID, jti)
	return "ghs" + "_" + appID + "_" + enc([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc(sig)
}

// The scanner finds stateless installation tokens whole, unverified (no
// one outside GitHub can check them), and not again as a bare JWT.
func TestStatelessGitHubAppToken(t *testing.T) {
	sl := statelessGHS(t, "123456")
	s := newScanner(t, Options{})
	for _, tt := range []struct {
		name, in string
		want     int
	}{
		{"assignment", "GH_TOKEN=" + sl + "\n", 1},
		{"in a header", "Authorization: token " + sl, 1},
		{"end of a sentence", "it leaked: " + sl + ".", 1},
		{"glued to a word", "abc" + sl, 0},
		{"header not JSON", "ghs" + "_1_" + base64.RawURLEncoding.EncodeToString([]byte("not json at all")) + sl[strings.IndexByte(sl, '.'):], 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := s.ScanBytes("f", []byte(tt.in))
			if len(fs) != tt.want {
				t.Fatalf("got %d findings %v", len(fs), rulesOf(fs))
			}
			if tt.want == 0 {
				return
			}
			if f := fs[0]; f.Rule != RuleGitHubAppToken || f.Secret != sl || f.Verified || strings.Contains(f.Hint, sl[20:]) {
				t.Fatalf("finding %s verified=%v hint %q", f.Rule, f.Verified, f.Hint)
			}
		})
	}
}
