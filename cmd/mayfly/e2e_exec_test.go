package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// TestE2EExec builds the binary, runs a real server on loopback HTTP with a
// devissuer issuer, and checks login and exec end to end.
func TestE2EExec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a server")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mayfly")
	if out, err := exec.Command("go", "build", "-tags", buildTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	// The local issuer, in-process.
	iss := devissuertest.Start(t)

	// init + server.
	data := filepath.Join(dir, "data")
	out, err := exec.Command(bin, "init", "--data-dir", data, "--json").Output()
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	var ini struct {
		AdminToken string `json:"admin_token"`
	}
	if err := json.Unmarshal(out, &ini); err != nil || ini.AdminToken == "" {
		t.Fatalf("init output: %v", err)
	}
	addrFile := filepath.Join(dir, "addr")
	srv := exec.Command(bin, "server", "--data-dir", data, "--insecure-http", "--listen", "127.0.0.1:0", "--addr-file", addrFile)
	srvLog, _ := os.Create(filepath.Join(dir, "server.log"))
	srv.Stdout, srv.Stderr = srvLog, srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	var addr string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			addr = strings.TrimSpace(string(b))
			break
		}
	}
	if addr == "" {
		b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("server did not start:\n%s", b)
	}

	// The audit log takes the path this build has: the journal on Linux,
	// the store alone elsewhere and under the mayfly_nojournal tag.
	_, err = os.Stat(filepath.Join(data, "audit.journal"))
	if journaled, want := err == nil, runtime.GOOS == "linux" && buildTags == ""; journaled != want {
		t.Fatalf("audit journal in the data dir: %v, want %v (GOOS %s, tags %q)", journaled, want, runtime.GOOS, buildTags)
	}

	baseEnv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "MAYFLY_ADDR=" + addr, "MAYFLY_TOKEN=" + ini.AdminToken,
		"XDG_STATE_HOME=" + filepath.Join(dir, "state")}
	run := func(stdin string, env []string, args ...string) (string, string, int) {
		c := exec.Command(bin, args...)
		c.Env = append(append([]string{}, baseEnv...), env...)
		c.Stdin = strings.NewReader(stdin)
		var so, se strings.Builder
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return so.String(), se.String(), code
	}

	policyFile := filepath.Join(dir, "policy.yaml")
	_ = os.WriteFile(policyFile, devDeployPolicy(iss.URL(), addr), 0o600)
	if _, e, code := run("upstream-credential-value\n", nil, "secret", "put", "api-token"); code != 0 {
		t.Fatalf("secret put: %d %s", code, e)
	}
	if _, e, code := run("", nil, "policy", "apply", policyFile); code != 0 {
		t.Fatalf("policy apply: %d %s", code, e)
	}

	// exec via the GitHub Actions request-URL flow (the audience defaults
	// to MAYFLY_ADDR). The child prints its token, which must come out masked.
	tokFile := filepath.Join(dir, "child-token")
	ghEnv := []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + iss.RequestURL(), "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + iss.RequestToken(), "TOKFILE=" + tokFile}
	script := `printf '%s' "$MAYFLY_TOKEN" > "$TOKFILE"; echo "token: $MAYFLY_TOKEN"; echo "gw: $MAYFLY_GATEWAY"; echo "stderr $MAYFLY_TOKEN" >&2; exit 3`
	so, se, code := run("", ghEnv, "exec", "--grant", "deploy", "--", "sh", "-c", script)
	if code != 3 {
		t.Fatalf("exec: exit %d, want 3; stderr %q", code, se)
	}
	b, _ := os.ReadFile(tokFile)
	childTok := string(b)
	if !strings.HasPrefix(childTok, "mfy_") {
		t.Fatalf("child saw MAYFLY_TOKEN %q", childTok)
	}
	if strings.Contains(so+se, childTok) || !strings.Contains(so, "token: ***") || !strings.Contains(se, "stderr ***") {
		t.Fatalf("output not masked: stdout %q stderr %q", so, se)
	}
	if !strings.Contains(so, "gw: "+addr+"/gw") {
		t.Errorf("gateway: %q", so)
	}
	if active := introspect(t, addr, ini.AdminToken, childTok); active {
		t.Error("token still active after exec ended")
	}

	// A job token killed by a signal is revoked too, and the code is 128+15.
	_, _, code = run("", ghEnv, "exec", "--grant", "deploy", "--", "sh", "-c", `printf '%s' "$MAYFLY_TOKEN" > "$TOKFILE"; kill -TERM $$`)
	b, _ = os.ReadFile(tokFile)
	if code != 143 || introspect(t, addr, ini.AdminToken, string(b)) {
		t.Errorf("signal: exit %d, want 143, and revoked", code)
	}

	// login: the token works (active) until revoked; a refused grant is exit 1.
	so, se, code = run("", ghEnv, "login", "--grant", "deploy")
	tok := strings.TrimSpace(so)
	if code != 0 || !introspect(t, addr, ini.AdminToken, tok) {
		t.Fatalf("login: exit %d %q", code, se)
	}
	if _, se, code := run("", ghEnv, "login", "--grant", "nope"); code != 1 || !strings.Contains(se, "invalid_scope") {
		t.Errorf("refused login: exit %d %q", code, se)
	}

	// The audit log of all this verifies.
	if so, se, code := run("", nil, "audit", "verify"); code != 0 {
		t.Errorf("audit verify: exit %d %q %q", code, so, se)
	}
	if so, se, code := run("", nil, "audit", "verify", "--data-dir", data); code != 0 {
		t.Errorf("audit verify offline: exit %d %q %q", code, so, se)
	}
}

// introspect asks the server whether tok is active.
func introspect(t *testing.T, addr, admin, tok string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", addr+"/v1/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Active bool `json:"active"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("introspect: HTTP %d", resp.StatusCode)
	}
	return v.Active
}
