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
