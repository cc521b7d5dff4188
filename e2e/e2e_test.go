// Package e2e runs the real mayfly binary on loopback ports: init, server,
// crash and restart, CLI commands. Nothing here reaches past 127.0.0.1.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mayfly-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mayfly")
	out, err := exec.Command("go", "build", "-tags", buildTags, "-o", binary, "../cmd/mayfly").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build mayfly: %v\n%s", err, out)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs the binary and returns stdout, stderr and the exit code.
func run(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return so.String(), se.String(), code
}

type node struct {
	dir   string
	url   string
	admin string
	cmd   *exec.Cmd
	logs  *bytes.Buffer
}

func initDir(t *testing.T) *node {
	t.Helper()
	return initDirAt(t, filepath.Join(t.TempDir(), "data"))
}

// initDirAt runs "mayfly init" for a data dir at dir.
func initDirAt(t *testing.T, dir string) *node {
	t.Helper()
	out, errOut, code := run(t, nil, "", "init", "--data-dir", dir, "--json")
	if code != 0 {
		t.Fatalf("init: %d %s", code, errOut)
	}
	var res struct {
		AdminToken string `json:"admin_token"`
		CAFile     string `json:"ca_file"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !strings.HasPrefix(res.AdminToken, "mfya_") || res.CAFile != filepath.Join(dir, "ca.pem") {
		t.Fatalf("init output %q: %v", out, err)
	}
	return &node{dir: dir, admin: res.AdminToken}
}

// start runs "mayfly server" on a free loopback port and waits until ready.
func (n *node) start(t *testing.T, args ...string) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	all := append([]string{"server", "--data-dir", n.dir, "--listen", "127.0.0.1:0", "--addr-file", addrFile}, args...)
	n.cmd = exec.Command(binary, all...)
	n.logs = &bytes.Buffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := n.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			n.url = strings.TrimSpace(string(b))
			return
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server did not start: %s", n.logs)
}

func (n *node) client(t *testing.T) *http.Client {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(n.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func (n *node) req(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	r, _ := http.NewRequest(method, n.url+path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+n.admin)
	resp, err := c.Do(r)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestInitTwiceAndUsageErrors(t *testing.T) {
	n := initDir(t)
	if _, errOut, code := run(t, nil, "", "init", "--data-dir", n.dir); code != 1 || !strings.Contains(errOut, "already initialised") {
		t.Fatalf("second init: code %d, %q", code, errOut)
	}
	_, errOut, code := run(t, nil, "", "server", "--data-dir", n.dir, "--insecure-http", "--listen", "0.0.0.0:18443")
	if code != 2 || !strings.Contains(errOut, "loopback") || strings.Contains(errOut, "goroutine") {
		t.Fatalf("insecure non-loopback: code %d, %q", code, errOut)
	}
	_, errOut, code = run(t, nil, "", "server", "--data-dir", n.dir, "--listen", "127.0.0.1:0", "--admin-cidr", "bogus")
	if code != 2 || strings.Contains(errOut, "goroutine") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("server start failure: code %d, %q", code, errOut)
	}
	if _, _, code := run(t, nil, "", "no-such-command"); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if _, errOut, code := run(t, nil, "", "server", "--data-dir", filepath.Join(t.TempDir(), "none")); code != 2 || !strings.Contains(errOut, "not an initialised") {
		t.Fatalf("uninitialised dir: %d %q", code, errOut)
	}
}

func TestServeTLSAndGracefulStop(t *testing.T) {
	n := initDir(t)
	n.start(t)
	if !strings.HasPrefix(n.url, "https://127.0.0.1:") {
		t.Fatalf("url %s", n.url)
	}
	c := n.client(t)
	if code, body := n.req(t, c, "GET", "/readyz", ""); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	// TLS below 1.2 is refused.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get(n.url + "/healthz"); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
	n.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- n.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exit: %v\n%s", err, n.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop on SIGINT")
	}
}

// The README's first command: the demo runs on a fresh machine and ends
// with a verified audit log.
func TestDemoCommand(t *testing.T) {
	out, errOut, code := run(t, nil, "", "demo")
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, errOut)
	}
}
