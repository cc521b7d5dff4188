package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Rotation as code with the real binary: rotators come from the config
// file only; bad settings are refused and change nothing; `secret rotate`
// writes a new version the gateway injects (the old one is still accepted
// while caches turn over); a failing rotator keeps the value and shows in
// `secret show`, the metric and the audit log; the schedule rotates by
// itself and survives a restart; no value reaches any output.
func TestSecretRotationE2E(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the rotator is a POSIX shell script")
	}
	tmp := t.TempDir()
	// The rotator appends "-r" to the value it reads: the test knows every
	// value without the server ever showing one.
	bump := filepath.Join(tmp, "bump.sh")
	os.WriteFile(bump, []byte("#!/bin/sh\nread v\nprintf '%s-r\\n' \"$v\"\n"), 0o700)
	broken := filepath.Join(tmp, "broken.sh")
	os.WriteFile(broken, []byte("#!/bin/sh\ncat >&2\nexit 9\n"), 0o700)
	cfg := filepath.Join(tmp, "mayfly.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("rotators:\n  bump: [%q]\n  broken: [%q]\nrotation_interval: 1s\n", bump, broken)), 0o600)

	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer up.Close()

	n := initDir(t)
	n.start(t, "--config", cfg, "--metrics-listen", "off")
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	seed := "seed-" + strings.Repeat("s", 24)
	tok, _ := n.gatewayJob(t, "up", up.URL, seed, "use", `      - methods: [GET]
        paths: ["/**"]`)
	c := n.client(t)
	call := func() string {
		t.Helper()
		r, _ := http.NewRequest("GET", n.url+"/gw/up/x", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("gateway: %d", resp.StatusCode)
		}
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	if got := call(); got != "Bearer "+seed {
		t.Fatal("the gateway did not inject the stored value")
	}

	// Bad settings: exit 1, a clear reason, nothing changed.
	bad := []struct {
		args []string
		says string
	}{
		{[]string{"--rotate-every", "daily", "--rotate-command", "bump"}, "not a duration"},
		{[]string{"--rotate-every", "1h", "--rotate-command", "/bin/sh"}, `unknown rotator "/bin/sh"`},
		{[]string{"--rotate-every", "10s", "--rotate-command", "bump"}, "every 10s is out of range"},
		{[]string{"--rotate-every", "1h", "--rotate-grace", "2h", "--rotate-command", "bump"}, "grace 2h0m0s is out of range"},
	}
	for _, tt := range bad {
		_, e, code := run(t, env, "refused-"+seed+"\n", append([]string{"secret", "put", "up-token"}, tt.args...)...)
		if code != 1 || !strings.Contains(e, tt.says) {
			t.Errorf("put %v: exit %d %q, want 1 with %q", tt.args, code, e, tt.says)
		}
	}
	show := func(name string) string {
		t.Helper()
		out, e, code := run(t, env, "", "secret", "show", name)
		if code != 0 {
			t.Fatalf("secret show %s: %d %s", name, code, e)
		}
		return out
	}
	if s := show("up-token"); !strings.Contains(s, "version:     1\n") || !strings.Contains(s, "rotation:    none") {
		t.Fatalf("refused puts changed the secret:\n%s", s)
	}

	// Rotation on demand.
	if _, e, code := run(t, env, seed+"\n", "secret", "put", "up-token", "--rotate-every", "24h", "--rotate-grace", "2m", "--rotate-command", "bump"); code != 0 {
		t.Fatalf("put with rotation: %s", e)
	}
	out, e, code := run(t, env, "", "secret", "rotate", "up-token")
	if code != 0 || !strings.Contains(out, "version 3") {
		t.Fatalf("secret rotate: %d %s %s", code, out, e)
	}
	// Until every cache has turned over the gateway may still inject the
	// old value (accepted during the grace period); then only the new.
	deadline := time.Now().Add(30 * time.Second)
	for got := call(); got != "Bearer "+seed+"-r"; got = call() {
		if got != "Bearer "+seed || time.Now().After(deadline) {
			t.Fatalf("after rotation the gateway injects neither the new nor the old value")
		}
		time.Sleep(100 * time.Millisecond)
	}
	s := show("up-token")
	for _, want := range []string{"version:     3\n", "rotation:    every 24h0m0s, grace 2m0s, via command bump", "last:        ", "(version 3)", "\nnext:        2", "failures:    0"} {
		if !strings.Contains(s, want) {
			t.Errorf("secret show lacks %q:\n%s", want, s)
		}
	}

	// A failing rotator: exit 1, the value kept, visible.
	other := "other-" + strings.Repeat("o", 24)
	if _, e, code := run(t, env, other+"\n", "secret", "put", "other", "--rotate-every", "1h", "--rotate-command", "broken"); code != 0 {
		t.Fatalf("put other: %s", e)
	}
	if _, e, code := run(t, env, "", "secret", "rotate", "other"); code != 1 || !strings.Contains(e, "exited with status 9") {
		t.Fatalf("failing rotate: exit %d %s", code, e)
	}
	if s := show("other"); !strings.Contains(s, "version:     1\n") || !strings.Contains(s, "failures:    1") || !strings.Contains(s, "last_error:  rotator broken: exited with status 9") {
		t.Fatalf("failure not shown:\n%s", s)
	}
	if code, body := n.req(t, c, "GET", "/metrics", ""); code != 200 || !strings.Contains(body, `mayfly_secret_rotations_total{result="failed",secret="other"} 1`) {
		t.Fatalf("metrics: %d, no failed rotation counted", code)
	}

	// The schedule rotates by itself, and survives a restart: a secret
	// due in a minute is rotated by the restarted server.
	if _, e, code := run(t, env, "sched-"+seed+"\n", "secret", "put", "sched", "--rotate-every", "1m", "--rotate-grace", "0s", "--rotate-command", "bump"); code != 0 {
		t.Fatalf("put sched: %s", e)
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	firstLogs := n.logs.String() // the process has ended: no more writes
	n.start(t, "--config", cfg, "--metrics-listen", "off")
	env = []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	deadline = time.Now().Add(3 * time.Minute)
	for !strings.Contains(show("sched"), "version:     2\n") {
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not rotate:\n%s", show("sched"))
		}
		time.Sleep(time.Second)
	}

	// The audit log records every attempt and who made it; no value
	// anywhere in it, in the server's output or in the database files.
	code, body := n.req(t, n.client(t), "GET", "/v1/audit/entries?start=0&limit=10000", "")
	if code != 200 {
		t.Fatalf("audit entries: %d", code)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		var ev map[string]any
		json.Unmarshal([]byte(l), &ev)
		if ev["type"] == "secret.rotate" && ev["reason"] != "started" {
			got = append(got, fmt.Sprintf("%v:%v:%v", ev["secret"], ev["admin"], ev["status"]))
		}
	}
	// (The failing secret is retried by the schedule a minute after each
	// failure: those attempts fail too.)
	var firsts []string
	for _, g := range got {
		if g != "other:schedule:502" {
			firsts = append(firsts, g)
		}
	}
	if want := "up-token:root:200 other:root:502 sched:schedule:200"; strings.Join(firsts, " ") != want {
		t.Fatalf("rotation outcomes in the audit log = %q, want %q", got, want)
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	values := []string{seed, seed + "-r", other, "sched-" + seed}
	for _, v := range values {
		if strings.Contains(body, v) || strings.Contains(firstLogs+n.logs.String(), v) {
			t.Errorf("a value (%.10s…) in the audit log or the server's output", v)
		}
	}
	filepath.Walk(n.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, v := range values {
			if strings.Contains(string(b), v) {
				t.Errorf("%s holds a value in the clear", filepath.Base(p))
			}
		}
		return nil
	})
}
