package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// freePort returns a loopback port nothing listens on now (the server's
// redirect_url must name it before the server starts).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// browserFor is an HTTP client with a cookie jar that trusts the node's CA.
func browserFor(t *testing.T, n *node) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(n.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// cliRun is a started command: its stderr lines as they come, and its
// stdout and exit code once done is closed (Wait has returned).
type cliRun struct {
	cmd    *exec.Cmd
	lines  <-chan string
	stdout *strings.Builder
	done   chan struct{}
}

// startCLI starts the binary and returns its stderr lines as they come.
func startCLI(t *testing.T, env []string, args ...string) *cliRun {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout := &strings.Builder{}
	cmd.Stdout = stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill() // harmless once it has ended
		<-done
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() { cmd.Wait(); pw.Close(); close(done) }()
	return &cliRun{cmd: cmd, lines: lines, stdout: stdout, done: done}
}

// waitLine returns the first line matching re (its first group).
func waitLine(t *testing.T, lines <-chan string, re *regexp.Regexp) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the command ended before printing %s", re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no line matching %s", re)
		}
	}
}

// waitExit waits for the command to end (a minute bounds a hang) and
// returns its exit code.
func waitExit(t *testing.T, c *cliRun) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		t.Fatal("the command did not end")
	}
	return c.cmd.ProcessState.ExitCode()
}

// Human sign-in through the real binary (issue 16 item 1): a browser signs
// in at the dev issuer and gets a __Host- cookie; the CLI signs in by the
// loopback flow and by the device flow, its session kept 0600 and used by
// admin commands without MAYFLY_TOKEN; sessions are listed and revoked;
// signing out ends them; an admin token is made offline when the server is
// stopped; no session value reaches the log or the audit log.
func TestSSOSignIn(t *testing.T) {
	n := initDir(t)
	iss := devissuertest.Start(t)
	port := freePort(t)
	url := "https://127.0.0.1:" + strconv.Itoa(port)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(devissuertest.AdminOIDCYAML(iss, url)+"admin_session_ttl: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t, "--config", cfg, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	if n.url != url {
		t.Fatalf("server at %s, want %s", n.url, url)
	}

	// A browser: the cookie's attributes on the callback's answer.
	b := browserFor(t, n)
	noFollow := &http.Client{Jar: b.Jar, Transport: b.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(u string) *http.Response {
		t.Helper()
		resp, err := noFollow.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	r1 := get(url + "/ui/login")
	r2 := get(r1.Header.Get("Location"))
	r3 := get(r2.Header.Get("Location"))
	if r3.StatusCode != 200 {
		t.Fatalf("callback: %d", r3.StatusCode)
	}
	var sessionValue string
	for _, sc := range r3.Header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, "__Host-mayfly_session=") {
			for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
				if !strings.Contains(sc, attr) {
					t.Errorf("session cookie lacks %s: %s", attr, strings.SplitN(sc, ";", 2)[1])
				}
			}
			if strings.Contains(strings.ToLower(sc), "domain=") {
				t.Error("a __Host- cookie with a Domain")
			}
			sessionValue = strings.TrimPrefix(strings.SplitN(sc, ";", 2)[0], "__Host-mayfly_session=")
		}
	}
	if sessionValue == "" {
		t.Fatalf("no session cookie: %v", r3.Header.Values("Set-Cookie"))
	}
	csrf := devissuertest.SignIn(t, b, url) // again, through the helper: a second session
	req, _ := http.NewRequest("POST", url+"/v1/leases/revoke", strings.NewReader(`{"grant":"none"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	req.Header.Set("Origin", url)
	resp, err := b.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a revoke with the cookie and CSRF: %v %v", err, resp)
	}
	resp.Body.Close()

	// The CLI, loopback flow, as an admin (the dev issuer's default user).
	sessFile := filepath.Join(t.TempDir(), "cfg", "mayfly", "sessions.json")
	env := []string{"MAYFLY_ADDR=" + url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_SESSION_FILE=" + sessFile, "MAYFLY_TOKEN="}
	login := startCLI(t, env, "auth", "login", "--no-browser", "--device=false")
	signIn := waitLine(t, login.lines, regexp.MustCompile(`^\s+(https://\S+/ui/login\?\S+)$`))
	cli := browserFor(t, n)
	resp, err = cli.Get(signIn)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The code goes to the CLI's port only by the page's link, once the
	// person in the browser says so.
	on := regexp.MustCompile(`href="(http://127\.0\.0\.1:\d+/callback\?[^"]+)"`).FindStringSubmatch(string(page))
	if resp.StatusCode != 200 || on == nil || strings.Contains(string(page), "return to the terminal") {
		t.Fatalf("loopback sign-in asks first: %d %s", resp.StatusCode, page)
	}
	resp, err = cli.Get(html.UnescapeString(on[1]))
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "return to the terminal") {
		t.Fatalf("loopback sign-in page: %d %s", resp.StatusCode, page)
	}
	if code := waitExit(t, login); code != 0 || !strings.Contains(login.stdout.String(), "signed in to "+url+" as oidc:dev@example.com (role admin)") {
		t.Fatalf("auth login: exit %d %q", code, login.stdout)
	}
	if fi, err := os.Stat(sessFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v", fi, err)
	}
	out, stderr, code := run(t, env, "", "admin", "token", "list")
	if code != 0 || !strings.Contains(out, "root") {
		t.Fatalf("admin token list with the session: exit %d %s %s", code, out, stderr)
	}
	out, _, code = run(t, env, "", "auth", "whoami")
	if code != 0 || !strings.Contains(out, "oidc:dev@example.com (role admin)") {
		t.Fatalf("whoami: %d %s", code, out)
	}

	// The device flow, as an auditor: admin commands are then refused.
	iss.SetUser(devissuertest.User("audit@example.com", devissuertest.GroupAuditors))
	devEnv := append([]string{}, env...)
	devEnv[2] = "MAYFLY_SESSION_FILE=" + filepath.Join(t.TempDir(), "dev-sessions.json")
	device := startCLI(t, devEnv, "auth", "login", "--device")
	approve := waitLine(t, device.lines, regexp.MustCompile(`^\(or open (\S+)\)$`))
	resp, err = http.Get(approve)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("device approval: %v %v", err, resp)
	}
	resp.Body.Close()
	if code := waitExit(t, device); code != 0 || !strings.Contains(device.stdout.String(), "audit@example.com (role auditor)") {
		t.Fatalf("auth login --device: exit %d %q", code, device.stdout)
	}
	if _, stderr, code := run(t, devEnv, "", "leases", "list"); code != 0 {
		t.Fatalf("an auditor lists leases: %d %s", code, stderr)
	}
	if _, stderr, code := run(t, devEnv, "", "admin", "token", "list"); code != 1 || !strings.Contains(stderr, "admin role") {
		t.Fatalf("an auditor lists admin tokens: %d %s", code, stderr)
	}

	// Sessions: listed (never their values) and revoked by an admin.
	out, _, code = run(t, env, "", "admin", "session", "list", "--format", "json")
	var list struct {
		Sessions []struct{ ID, Name, Via string } `json:"sessions"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Sessions) != 4 {
		t.Fatalf("session list: %d %s", code, out)
	}
	if strings.Contains(out, "mfys_") {
		t.Fatal("a session value in the list")
	}
	var auditorID string
	for _, s := range list.Sessions {
		if s.Name == "oidc:audit@example.com" {
			auditorID = s.ID
		}
	}
	// A session file that leaks (committed, printed in a log) is found by
	// the scanner and its session revoked, as a leaked token is (an admin's
	// `admin session revoke` is tested by internal/server's
	// TestSSOBrowserSession).
	leakDir := t.TempDir()
	sessJSON, err := os.ReadFile(devEnv[2][len("MAYFLY_SESSION_FILE="):])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leakDir, "leaked.json"), sessJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = run(t, env, "", "scan", "--revoke", leakDir)
	if code != 1 || !strings.Contains(out, "revoked admin session "+auditorID) {
		t.Fatalf("scan --revoke of a session file: exit %d %s %s", code, out, stderr)
	}
	if _, stderr, code := run(t, devEnv, "", "leases", "list"); code != 1 || !strings.Contains(stderr, "sign in again") {
		t.Fatalf("a revoked session: %d %s", code, stderr)
	}

	// Signing out ends the CLI's session and forgets it.
	if out, stderr, code := run(t, env, "", "auth", "logout"); code != 0 || !strings.Contains(out, "signed out") {
		t.Fatalf("logout: %d %s %s", code, out, stderr)
	}
	if _, stderr, code := run(t, env, "", "admin", "token", "list"); code != 2 || !strings.Contains(stderr, "auth login") {
		t.Fatalf("after logout: %d %s", code, stderr)
	}

	// The way back in without any admin token: refused while the server
	// runs, made offline once it is stopped, and it works after.
	// (A running server is noticed by the audit journal's lock: on the
	// portable path, without the journal, it is not.)
	if buildTags == "" {
		if _, stderr, code := run(t, nil, "", "admin", "token", "create", "rescue", "--role", "admin", "--data-dir", n.dir); code != 2 || !strings.Contains(stderr, "server is running") {
			t.Fatalf("offline create with the server running: %d %s", code, stderr)
		}
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	out, stderr, code = run(t, nil, "", "admin", "token", "create", "rescue", "--role", "admin", "--ttl", "1d", "--data-dir", n.dir, "--format", "json")
	var created struct{ Token string }
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || !strings.HasPrefix(created.Token, "mfya_") {
		t.Fatalf("offline create: %d %s %s", code, out, stderr)
	}
	logs := n.logs.String()
	n.start(t, "--config", cfg, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	n.admin = created.Token
	status, entries := n.req(t, n.client(t), "GET", "/v1/audit/entries?start=0&limit=1000", "")
	if status != 200 {
		t.Fatalf("the offline token: %d %s", status, entries)
	}
	for _, want := range []string{`"type":"admin.signin"`, `"type":"admin.signout"`, `"type":"admin.session.revoke"`, `"admin":"local"`} {
		if !strings.Contains(entries, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	logs += n.logs.String()
	for _, where := range []string{entries, logs} {
		if strings.Contains(where, sessionValue) || strings.Contains(where, "mfys_") || strings.Contains(where, csrf) {
			t.Fatal("a session value or CSRF token in the audit log or the server's log")
		}
	}
}

// mayfly auth login against a server without admin_oidc says so at once.
func TestSSOLoginWithoutProvider(t *testing.T) {
	n := initDir(t)
	n.start(t)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_SESSION_FILE=" + filepath.Join(t.TempDir(), "s.json")}
	_, stderr, code := run(t, env, "", "auth", "login", "--no-browser")
	if code != 1 || !strings.Contains(stderr, "no admin_oidc") {
		t.Fatalf("auth login without admin_oidc: exit %d %q", code, stderr)
	}
}
