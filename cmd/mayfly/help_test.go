package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/scan"
)

// flagLine is one line of a flag listing: the flag, at most one
// placeholder word, then the usage text. A backquoted phrase in a flag's
// usage becomes its placeholder, which is how `audit prove --state` once
// read "--state audit verify   state file of audit verify".
var flagLine = regexp.MustCompile(`^\s+(-\w, )?--[a-z0-9-]+( [A-Za-z0-9_.|:-]+)?\s{2,}\S`)

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walk(s, fn)
	}
}

func TestHelpTextIsWellFormed(t *testing.T) {
	walk(newRootCmd(), func(c *cobra.Command) {
		name := c.CommandPath()
		if c.Short == "" {
			t.Errorf("%s: no short description", name)
		}
		for _, fs := range []string{c.LocalFlags().FlagUsages(), c.InheritedFlags().FlagUsages()} {
			for _, l := range strings.Split(strings.TrimRight(fs, "\n"), "\n") {
				if l == "" {
					continue
				}
				if !flagLine.MatchString(l) {
					t.Errorf("%s: garbled flag line %q", name, l)
				}
				if strings.Contains(l, "(default -1)") {
					t.Errorf("%s: a sentinel shown as a default: %q", name, l)
				}
			}
		}
	})
}

// Every command that prints a result takes --format json and its --json
// alias, and refuses the two when they contradict each other.
func TestFormatFlagEverywhere(t *testing.T) {
	for _, path := range [][]string{
		{"init"}, {"admin", "token", "create"}, {"admin", "token", "list"}, {"admin", "token", "revoke"},
		{"admin", "session", "list"}, {"admin", "session", "revoke"}, {"auth", "whoami"},
		{"secret", "put"}, {"secret", "list"}, {"secret", "show"}, {"secret", "rm"}, {"secret", "rotate-master-key"},
		{"policy", "check"}, {"policy", "plan"}, {"policy", "apply"},
		{"leases", "list"}, {"leases", "revoke"}, {"audit", "verify"}, {"audit", "prove"},
		{"login"}, {"scan"},
	} {
		c, _, err := newRootCmd().Find(path)
		if err != nil || c.CommandPath() != "mayfly "+strings.Join(path, " ") {
			t.Fatalf("%v: %v", path, err)
		}
		for _, f := range []string{"format", "json"} {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("%s has no --%s", c.CommandPath(), f)
			}
		}
	}
	_, stderr, code := runCLI(t, "", "policy", "check", "--json", "--format", "text", "x.yaml")
	if code != exitUsage || !strings.Contains(stderr, "contradict") {
		t.Errorf("--json --format text: exit %d, %q", code, stderr)
	}
	_, stderr, code = runCLI(t, "", "leases", "revoke", "--format", "yaml", "--grant", "g")
	if code != exitUsage || !strings.Contains(stderr, `unknown --format "yaml"`) {
		t.Errorf("--format yaml: exit %d, %q", code, stderr)
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "issuers:\n  ci:\n    url: https://token.actions.githubusercontent.com\n    audience: https://m.example\n")
	bad := writeFile(t, dir, "bad.yaml", "issuers:\n  ci:\n    url: https://token.actions.githubusercontent.com\n    audince: x\n")
	out, stderr, code := runCLI(t, "", "policy", "check", "--format", "json", good)
	if code != exitOK || !strings.Contains(out, `"ok": true`) || !strings.Contains(out, `"issuers": 1`) {
		t.Errorf("good: exit %d, %s %s", code, out, stderr)
	}
	out, stderr, code = runCLI(t, "", "policy", "check", "--json", bad)
	if code != exitNegative || !strings.Contains(out, `"ok": false`) || !strings.Contains(out, `"line": 4`) || stderr != "" {
		t.Errorf("bad: exit %d, %s %q", code, out, stderr)
	}
}

// A command with one of --format and --json has the other (README: every
// command that prints a result takes --format text|json, --json the same
// as --format json), and --json means json: `policy test`, `version` and
// `tls renew` once had only one of the two.
func TestFormatAndJSONGoTogether(t *testing.T) {
	walk(newRootCmd(), func(c *cobra.Command) {
		f, j := c.LocalFlags().Lookup("format"), c.LocalFlags().Lookup("json")
		if (f == nil) != (j == nil) {
			t.Errorf("%s: --format %v, --json %v: want both or neither", c.CommandPath(), f != nil, j != nil)
		}
	})
	out, stderr, code := runCLI(t, "", "version", "--json")
	if code != exitOK || !strings.HasPrefix(out, "{") {
		t.Errorf("version --json: exit %d, %q %q", code, out, stderr)
	}
	dir := t.TempDir()
	pol := writeFile(t, dir, "p.yaml", "issuers:\n  ci:\n    url: https://ci.example\n    audience: https://m.example\n")
	idt := writeFile(t, dir, "id.jwt", fakeJWT)
	out, stderr, code = runCLI(t, "", "policy", "test", "--json", "--id-token", idt, pol)
	if code == exitUsage || !strings.HasPrefix(out, "{") {
		t.Errorf("policy test --json: exit %d, %q %q", code, out, stderr)
	}
	_, stderr, code = runCLI(t, "", "policy", "test", "--json", "--format", "text", "--id-token", idt, pol)
	if code != exitUsage || !strings.Contains(stderr, "contradict") {
		t.Errorf("policy test --json --format text: exit %d, %q", code, stderr)
	}
}

// Shell completion is cobra's completion command, for every shell it knows.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "bash completion", "zsh": "#compdef mayfly", "fish": "complete -c mayfly", "powershell": "Register-ArgumentCompleter"} {
		out, stderr, code := runCLI(t, "", "completion", shell)
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("completion %s: exit %d, %q…, %s", shell, code, out[:min(len(out), 80)], stderr)
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// YAML syntax errors are reported at the line they are on (yaml/v3 prints
// a parser error's line 0-based).
func TestYAMLSyntaxErrorLines(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "issuers:\n  ci:\n    url: https://token.actions.githubusercontent.com\n\n\n    audience: [a\n")
	out, _, code := runCLI(t, "", "policy", "check", p)
	if code != exitNegative || !strings.Contains(out, p+":6: bad YAML") {
		t.Errorf("policy: exit %d, %q", code, out)
	}
	c := writeFile(t, dir, "mayfly.yaml", "data_dir: /d\nlisten: [a\nadmin_cidrs:\n  - 10.0.0.0/8\n")
	_, stderr, code := runCLI(t, "", "server", "--config", c)
	if code != exitUsage || !strings.Contains(stderr, c+":2: bad YAML") {
		t.Errorf("config: exit %d, %q", code, stderr)
	}
	c = writeFile(t, dir, "typo.yaml", "data_dir: /d\nlimts:\n  max_body: 10\n")
	_, stderr, code = runCLI(t, "", "server", "--config", c)
	if code != exitUsage || !strings.Contains(stderr, `unknown key "limts" in `+c+`:2, did you mean "limits"?`) {
		t.Errorf("config: exit %d, %q", code, stderr)
	}
}

func TestScanProgress(t *testing.T) {
	var out strings.Builder
	now := time.Unix(1000, 0)
	p := &scanProgress{w: &out, now: func() time.Time { return now }, delay: time.Second, interval: 200 * time.Millisecond, start: now}
	p.update(scan.Stats{Files: 1, Bytes: 10}) // a short scan shows nothing
	if out.Len() != 0 {
		t.Fatalf("shown before the delay: %q", out.String())
	}
	now = now.Add(1100 * time.Millisecond)
	p.update(scan.Stats{Files: 40, Bytes: 3 << 20})
	now = now.Add(50 * time.Millisecond)
	p.update(scan.Stats{Files: 41, Bytes: 3 << 20}) // within the interval: skipped
	now = now.Add(300 * time.Millisecond)
	p.update(scan.Stats{Files: 90, Bytes: 5 << 30})
	p.done()
	want := "\r\x1b[Kscanning: 40 files, 3.0 MiB read\r\x1b[Kscanning: 90 files, 5.0 GiB read\r\x1b[K"
	if out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	// Not a terminal (a pipe, a file, a buffer): no progress at all.
	dir := t.TempDir()
	for i := 0; i < 50; i++ {
		writeFile(t, dir, fmt.Sprintf("f%d.txt", i), "nothing here\n")
	}
	_, stderr, code := runCLI(t, "", "scan", dir)
	if code != exitOK || stderr != "" {
		t.Errorf("scan to a buffer: exit %d, stderr %q", code, stderr)
	}
}
