package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Admin tokens expire (issue 16 item 2), through the real binary: create
// takes --ttl (default 90 days, at most the server's admin_token_max_ttl),
// list shows age, expiry and last use, an expired token gets 401 saying
// so, and the refusal is audited without the token.
func TestAdminTokensExpire(t *testing.T) {
	n := initDir(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("admin_token_max_ttl: 48h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t, "--config", cfg)
	env := func(tok string) []string {
		return []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + tok}
	}
	type created struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	create := func(name, ttl string) created {
		t.Helper()
		args := []string{"admin", "token", "create", name, "--role", "auditor", "--format", "json"}
		if ttl != "" {
			args = append(args, "--ttl", ttl)
		}
		before := time.Now()
		out, stderr, code := run(t, env(n.admin), "", args...)
		if code != 0 {
			t.Fatalf("create %s: exit %d %s", name, code, stderr)
		}
		var c created
		if err := json.Unmarshal([]byte(out), &c); err != nil || !strings.HasPrefix(c.Token, "mfya_") || c.ExpiresAt.Before(before) {
			t.Fatalf("create %s: %q %v", name, out, err)
		}
		return c
	}
	long := create("long", "1d")
	if d := time.Until(long.ExpiresAt); d < 23*time.Hour || d > 24*time.Hour {
		t.Fatalf("--ttl 1d expires in %v", d)
	}
	dflt := create("default", "")
	if d := time.Until(dflt.ExpiresAt); d < 47*time.Hour || d > 48*time.Hour {
		t.Fatalf("no --ttl under a 48h maximum: expires in %v", d)
	}
	short := create("short", "1s")

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"past the server's maximum", []string{"--ttl", "3d"}, 1, "admin_token_max_ttl"},
		{"not a duration", []string{"--ttl", "soon"}, 2, "not a duration"},
		{"zero days", []string{"--ttl", "0d"}, 2, "not a number of days"},
		{"under a second", []string{"--ttl", "10ms"}, 2, "shorter than a second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"admin", "token", "create", "x", "--role", "auditor"}, tc.args...)
			_, stderr, code := run(t, env(n.admin), "", args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, %q; want %d and %q", code, stderr, tc.code, tc.stderr)
			}
		})
	}

	// A live token works and its use is recorded.
	if _, stderr, code := run(t, env(long.Token), "", "leases", "list"); code != 0 {
		t.Fatalf("a live token: exit %d %s", code, stderr)
	}
	// The short one, once past its expiry, is refused saying so.
	time.Sleep(time.Until(short.ExpiresAt) + 100*time.Millisecond)
	_, stderr, code := run(t, env(short.Token), "", "leases", "list")
	if code != 1 || !strings.Contains(stderr, "expired") {
		t.Fatalf("an expired token: exit %d %q", code, stderr)
	}
	c := n.client(t)
	status, _ := func() (int, string) {
		save := n.admin
		n.admin = short.Token
		defer func() { n.admin = save }()
		return n.req(t, c, "GET", "/v1/leases", "")
	}()
	if status != 401 {
		t.Fatalf("an expired token over HTTP: %d", status)
	}

	out, stderr, code := run(t, env(n.admin), "", "admin", "token", "list")
	if code != 0 {
		t.Fatalf("list: exit %d %s", code, stderr)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = line
		}
	}
	for _, h := range []string{"AGE", "EXPIRES", "LAST USED"} {
		if !strings.Contains(rows["NAME"], h) {
			t.Fatalf("list header %q lacks %s", rows["NAME"], h)
		}
	}
	if !strings.Contains(rows["short"], "(expired)") || strings.Contains(rows["long"], "(expired)") {
		t.Fatalf("list rows:\n%s", out)
	}
	if strings.Contains(rows["long"], "never") || !strings.Contains(rows["default"], "never") {
		t.Fatalf("last use: a used token shows none, or an unused one shows one:\n%s", out)
	}
	if strings.Contains(out, long.Token) || strings.Contains(out, short.Token) {
		t.Fatal("list shows a token")
	}

	// Audited: each creation with its expiry, the refusal with its reason;
	// no token anywhere in the log.
	_, entries := n.req(t, c, "GET", "/v1/audit/entries?start=0&limit=1000", "")
	if !strings.Contains(entries, `"token expired"`) || !strings.Contains(entries, short.ExpiresAt.UTC().Format(time.RFC3339)) {
		t.Fatalf("audit log lacks the expiry or the refusal:\n%s", entries)
	}
	// The server stops before its log is read (its writer is another
	// goroutine).
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	for _, tok := range []string{long.Token, short.Token, dflt.Token} {
		if strings.Contains(entries, tok) || strings.Contains(n.logs.String(), tok) {
			t.Fatal("a token in the audit log or the server's log")
		}
	}
}
