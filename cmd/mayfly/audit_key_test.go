package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/server"
)

// README ("Web console", Audit log page): the console shows the log's
// verifier key "for you to compare with `mayfly audit key`". That command
// must exist and print the server's verifier key (the one in DIR/audit.pub).
func TestSpecCLIAuditKeyCommandREADME(t *testing.T) {
	ls := startServer(t, server.Config{}, nil)
	ls.env(t, ls.admin)
	want, err := os.ReadFile(datadir.Dir(ls.dir).AuditPub())
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "", "audit", "key")
	if code != 0 || !strings.Contains(stdout, strings.TrimSpace(string(want))) {
		t.Errorf("mayfly audit key: exit %d, stdout %q, stderr %q; want exit 0 and the verifier key %q",
			code, stdout, strings.TrimSpace(stderr), strings.TrimSpace(string(want)))
	}
}

// audit key compares the log's key with the one audit verify pinned, from
// the server or offline from the data directory.
func TestAuditKey(t *testing.T) {
	ls := startServer(t, server.Config{}, nil)
	ls.env(t, ls.admin)
	b, err := os.ReadFile(datadir.Dir(ls.dir).AuditPub())
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	_, other, err := audit.GenerateKey(audit.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	states := t.TempDir()
	pinned := func(name, k string) string {
		p := filepath.Join(states, name)
		if err := saveState(p, &verifyState{Key: k}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	same, differs := pinned("same.state", key), pinned("differs.state", other)
	corrupt := filepath.Join(states, "corrupt.state")
	os.WriteFile(corrupt, []byte("{"), 0o600)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string // also the key, whenever exit < 2
		stderr string
	}{
		{name: "remote, nothing pinned", args: []string{}, code: 0},
		{name: "remote, same as pinned", args: []string{"--state", same}, code: 0, stdout: "same as the key pinned"},
		{name: "remote, differs from pinned", args: []string{"--state", differs}, code: 1, stderr: other},
		{name: "remote, no-state", args: []string{"--state", differs, "--no-state"}, code: 0},
		{name: "offline", args: []string{"--data-dir", ls.dir, "--state", same}, code: 0, stdout: "same as the key pinned"},
		{name: "offline, differs", args: []string{"--data-dir", ls.dir, "--state", differs}, code: 1, stderr: "differs from the key pinned"},
		{name: "both data dir and addr", args: []string{"--data-dir", ls.dir, "--addr", "https://127.0.0.1:1"}, code: 2, stderr: "not both"},
		{name: "not a data dir", args: []string{"--data-dir", states}, code: 2, stderr: "not an initialised"},
		{name: "corrupt state", args: []string{"--state", corrupt}, code: 2, stderr: "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", append([]string{"audit", "key"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) ||
				(code < 2) != strings.Contains(stdout, key) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q (and the key unless exit 2), stderr with %q",
					code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// A verifier key named with --key (as `mayfly audit key` prints it, or in
// a file) is the only one trusted: the server's own key is accepted, and a
// log signed by another fails closed (exit 1) saying that the key does
// not match, before any entry is fetched.
func TestAuditNamedKey(t *testing.T) {
	_, l, _ := servedLog(t, 10)
	own := l.VerifierKey()
	_, other, err := audit.GenerateKey(audit.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	otherFile := filepath.Join(dir, "other.pub")
	if err := os.WriteFile(otherFile, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "verify, the server's key as printed", args: []string{"verify", "--no-state", "--key", own}, code: 0},
		{name: "verify, another key", args: []string{"verify", "--no-state", "--key", other}, code: 1, stderr: "not the --key"},
		{name: "verify, another key in a file", args: []string{"verify", "--no-state", "--key", otherFile}, code: 1, stderr: "not the --key"},
		{name: "verify, another key, state kept", args: []string{"verify", "--state", filepath.Join(dir, "v.state"), "--key", other}, code: 1, stderr: "not the --key"},
		{name: "verify, not a key", args: []string{"verify", "--no-state", "--key", "mayfly.local/audit+zz"}, code: 2, stderr: "neither a readable file nor a note verifier key"},
		{name: "prove, the server's key as printed", args: []string{"prove", "--index", "3", "--key", own, "--state", filepath.Join(dir, "p.state")}, code: 0},
		{name: "prove, another key", args: []string{"prove", "--index", "3", "--key", other, "--state", filepath.Join(dir, "p2.state")}, code: 1, stderr: "not the --key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", append([]string{"audit"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", code, stdout, stderr, tc.code, tc.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "v.state")); err == nil {
		t.Errorf("a failed verification wrote its state file")
	}
	// Offline, against the data directory's log: the same.
	data := offlineDataDir(t)
	for _, tc := range []struct {
		name   string
		key    string
		code   int
		stderr string
	}{
		{name: "offline, its own key", key: datadir.Dir(data).AuditPub(), code: 0},
		{name: "offline, another key", key: other, code: 1, stderr: "not signed by the verifier key " + other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", "audit", "verify", "--no-state", "--data-dir", data, "--key", tc.key)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", code, stdout, stderr, tc.code, tc.stderr)
			}
		})
	}
}
