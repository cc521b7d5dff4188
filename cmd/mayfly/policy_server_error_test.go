package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/server"
)

// SPEC §3: an unknown reference (here a secret the server does not hold,
// which only the server can tell) is an error "with the file, line and a
// reason". `policy plan|apply FILE…` must name the user's file and its
// line, not a made-up "policy.yaml" and a line of the concatenation.
func TestSpecCLIPolicyServerErrorNamesFileAndLine(t *testing.T) {
	ls := startServer(t, server.Config{}, nil)
	ls.env(t, ls.admin)
	dir := t.TempDir()
	a := filepath.Join(dir, "grants.yaml")
	b := filepath.Join(dir, "upstreams.yaml")
	os.WriteFile(a, []byte(`grants:
  g1:
    upstream: up
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/**"]
    who:
      - issuer: dev
        claims:
          repository_id: "123"
`), 0o600)
	os.WriteFile(b, []byte(`issuers:
  dev:
    url: http://127.0.0.1:9300
    audience: http://127.0.0.1:9302
upstreams:
  up:
    url: http://127.0.0.1:9301
    credential:
      secret: nosuchsecret
      header: Authorization
`), 0o600)
	for _, sub := range []string{"plan", "apply"} {
		t.Run(sub, func(t *testing.T) {
			_, stderr, code := runCLI(t, "", "policy", sub, a, b)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			want := "upstreams.yaml:9:"
			if !strings.Contains(stderr, want) {
				t.Errorf("policy %s: error does not name the file and line %q: %s", sub, want, strings.TrimSpace(stderr))
			}
			// apply plans first (to show what it would revoke); its
			// error is still the apply's, not a "policy plan" the user
			// never ran.
			if op := "mayfly: policy " + sub + ": "; !strings.HasPrefix(stderr, op) {
				t.Errorf("policy %s: error does not begin with %q: %s", sub, op, strings.TrimSpace(stderr))
			}
		})
	}
}

// userLines maps the server's "policy.yaml:N:" (a line of the joined
// Source) back to the file and line it came from.
func TestUserLines(t *testing.T) {
	one := []policy.File{{Name: "p.yaml", Data: []byte("a: 1\nb: 2\n")}}
	// Source: 1 "# file: a.yaml", 2-3 a, 4 "---", 5 "# file: b.yaml",
	// 6-7 b (no final line break), 8 "---", 9 "# file: c.yaml", 10 c.
	three := []policy.File{
		{Name: "a.yaml", Data: []byte("\ufeffx: 1\ny: 2\n")},
		{Name: "b.yaml", Data: []byte("z: 3\nw: 4")},
		{Name: "c.yaml", Data: []byte("v: 5\n")},
	}
	for _, tc := range []struct {
		name  string
		files []policy.File
		code  string
		desc  string
		want  string
	}{
		{"one file", one, "invalid_policy", "policy.yaml:2: b: bad", "p.yaml:2: b: bad"},
		{"first file", three, "invalid_policy", "policy.yaml:3: y: bad", "a.yaml:2: y: bad"},
		{"second file", three, "invalid_policy", "policy.yaml:7: w: bad", "b.yaml:2: w: bad"},
		{"several problems", three, "invalid_policy", "policy.yaml:2: x: bad policy.yaml:10: v: bad",
			"a.yaml:1: x: bad c.yaml:1: v: bad"},
		{"a header line", three, "invalid_policy", "policy.yaml:5: bad", "b.yaml:1: bad"},
		{"a separator line", three, "invalid_policy", "policy.yaml:4: bad", "b.yaml:1: bad"},
		{"not a position", three, "invalid_policy", `unknown secret "apolicy.yaml:3:" policy.yaml:x: policy.yaml:4`,
			`unknown secret "apolicy.yaml:3:" policy.yaml:x: policy.yaml:4`},
		{"another error", three, "forbidden", "policy.yaml:3: y", "policy.yaml:3: y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := userLines(&client.Error{Op: "policy plan", Status: 400, Code: tc.code, Description: tc.desc}, tc.files)
			var ae *client.Error
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want a *client.Error", err)
			}
			if ae.Description != tc.want {
				t.Errorf("got %q, want %q", ae.Description, tc.want)
			}
		})
	}
}
