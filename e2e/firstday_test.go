package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// An empty policy passes check with a warning, and applying it (which
// would revoke every live token) shows what it would revoke and changes
// nothing until --yes.
func TestEmptyPolicyNeedsYes(t *testing.T) {
	n := initDir(t)
	n.start(t)
	n.gatewayJob(t, "up", "http://127.0.0.1:1", "cred-value", "g", `      - methods: [GET]
        paths: ["/**"]`)
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	active := func() bool {
		out, e, code := run(t, env, "", "leases", "list", "--active", "--json")
		if code != 0 {
			t.Fatalf("leases list: %s", e)
		}
		return strings.Contains(out, "lse_")
	}

	out, _, code := run(t, nil, "", "policy", "check", empty)
	if code != 0 || !strings.Contains(out, "warning: this policy has no grants") {
		t.Fatalf("check of an empty policy: %d %q", code, out)
	}
	_, errOut, code := run(t, env, "", "policy", "apply", empty)
	if code != 1 || !strings.Contains(errOut, "will revoke 1 live token(s) of grant g") || !strings.Contains(errOut, "--yes") {
		t.Fatalf("apply without --yes: %d %q", code, errOut)
	}
	if !active() {
		t.Fatal("an unconfirmed apply revoked the token")
	}
	out, _, code = run(t, env, "", "policy", "plan", empty)
	if code != 0 || !strings.Contains(out, "will revoke 1 live token(s) of grant g") {
		t.Fatalf("plan: %d %q", code, out)
	}
	out, errOut, code = run(t, env, "", "policy", "apply", "--yes", empty)
	if code != 0 || !strings.Contains(out, "revoked 1 lease(s)") {
		t.Fatalf("apply --yes: %d %q %q", code, out, errOut)
	}
	if active() {
		t.Fatal("token live after the confirmed apply")
	}
}

// version and --version come from the build information, and /healthz
// says the same.
func TestVersion(t *testing.T) {
	out, _, code := run(t, nil, "", "version")
	line := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(line, "mayfly ") || !strings.Contains(line, runtime.Version()) || strings.Contains(line, "(devel)") {
		t.Fatalf("version: %d %q", code, out)
	}
	if out2, _, code := run(t, nil, "", "--version"); code != 0 || strings.TrimSpace(out2) != line {
		t.Fatalf("--version: %d %q, want %q", code, out2, line)
	}
	out, _, _ = run(t, nil, "", "version", "--format", "json")
	var v struct{ Version, Module, Go string }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Module != "github.com/mayfly-sh/mayfly" || v.Go != runtime.Version() {
		t.Fatalf("version --format json: %q %v", out, err)
	}
	n := initDir(t)
	n.start(t)
	code, body := n.req(t, n.client(t), "GET", "/healthz", "")
	var h struct{ Status, Version, Go string }
	if json.Unmarshal([]byte(body), &h); code != 200 || h.Status != "ok" || h.Version != v.Version || h.Go != v.Go {
		t.Fatalf("healthz: %d %s", code, body)
	}
}

// `mayfly tls renew` replaces the certificate; SIGHUP makes the running
// server serve it on new connections, without a restart.
func TestTLSRenewAndReloadOnSIGHUP(t *testing.T) {
	n := initDir(t)
	n.start(t)
	serial := func() string {
		pool := x509.NewCertPool()
		b, _ := os.ReadFile(filepath.Join(n.dir, "ca.pem"))
		pool.AppendCertsFromPEM(b)
		conn, err := tls.Dial("tcp", strings.TrimPrefix(n.url, "https://"), &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	out, errOut, code := run(t, nil, "", "tls", "renew", "--data-dir", n.dir, "--tls-san", "mayfly.test")
	if code != 0 || !strings.Contains(out, "mayfly.test") || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("tls renew: %d %q %q", code, out, errOut)
	}
	if serial() != first {
		t.Fatal("the new certificate was served before SIGHUP")
	}
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; serial() == first; i++ {
		if i > 500 {
			t.Fatalf("certificate not reloaded after SIGHUP: %s", n.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n.cmd.ProcessState != nil {
		t.Fatal("the server restarted")
	}
	if _, _, code := run(t, nil, "", "tls", "renew"); code != 2 {
		t.Fatalf("tls renew without --data-dir: %d", code)
	}
}

// dev-issuer's policy snippet names the server it is told about as the
// audience, and its sign-in snippet that server's origin, not a fixed port.
func TestDevIssuerAudience(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"--server", []string{"--server", "https://127.0.0.1:9555/"}, nil, "audience: https://127.0.0.1:9555\n"},
		{"MAYFLY_ADDR", nil, []string{"MAYFLY_ADDR=https://mayfly.test:7443"}, "audience: https://mayfly.test:7443\n"},
		{"neither: says so", nil, []string{"MAYFLY_ADDR="}, "pass --server URL"},
		// The sign-in snippet names that server too: a redirect_url on
		// another origin than the server's cannot complete a sign-in.
		{"--server: sign-in", []string{"--server", "https://127.0.0.1:9555/"}, nil, "    redirect_url: https://127.0.0.1:9555/ui/callback\n"},
		{"MAYFLY_ADDR: sign-in", nil, []string{"MAYFLY_ADDR=http://127.0.0.1:9556"}, "open http://127.0.0.1:9556/ui/login"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"dev-issuer", "--listen", "127.0.0.1:0"}, tt.args...)...)
			cmd.Env = append(os.Environ(), tt.env...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			var got strings.Builder
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				got.WriteString(sc.Text() + "\n")
				if strings.HasPrefix(sc.Text(), "Serving until") {
					break
				}
			}
			if !strings.Contains(got.String(), tt.want) {
				t.Fatalf("dev-issuer printed:\n%s\nwant %q", got.String(), tt.want)
			}
		})
	}
}

// releaseArchive serves a release the way GitLab's install script expects:
// <base>/<tag>/mayfly_<version>_<os>_<arch>.tar.gz holding the real binary
// and <base>/<tag>/checksums.txt listing sum (the archive's by default).
func releaseArchive(t *testing.T, sum string) (base string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	bin, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	tw.WriteHeader(&tar.Header{Name: "mayfly", Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	tw.Close()
	gz.Close()
	archive := buf.Bytes()
	name := fmt.Sprintf("mayfly_1.2.3_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH)
	if sum == "" {
		h := sha256.Sum256(archive)
		sum = hex.EncodeToString(h[:])
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dl/v1.2.3/" + name:
			w.Write(archive)
		case "/dl/v1.2.3/checksums.txt":
			fmt.Fprintf(w, "%064d  mayfly_1.2.3_plan9_mips.tar.gz\n%s  %s\n", 0, sum, name)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/dl"
}

// The GitLab component installs the release its version input names,
// only when the archive's SHA-256 matches checksums.txt.
func TestGitLabComponentInstallsRelease(t *testing.T) {
	sh := needTool(t, "sh")
	for _, tool := range []string{"curl", "tar", "sha256sum", "awk"} {
		needTool(t, tool)
	}
	for _, tt := range []struct {
		name, sum string
		code      int
		want      string
	}{
		{"checksum matches", "", 0, "verified (sha256 "},
		{"checksum differs", strings.Repeat("f", 64), 1, "does not match checksums.txt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := releaseArchive(t, tt.sum)
			jobs := loadGitLabComponent(t, map[string]string{"version": "v1.2.3", "release_url": base})
			j := resolve(jobs, ".mayfly-id-token")
			project := filepath.Join(t.TempDir(), "app")
			os.MkdirAll(project, 0o755)
			env := []string{"PATH=" + os.Getenv("PATH"), "CI_PROJECT_DIR=" + project, "HOME=" + project}
			body := strings.Join(append(append([]string{}, j.BeforeScript...), "mayfly version"), "\n")
			so, se, code := runTool(t, project, env, sh, "-c", body)
			if code != tt.code || !strings.Contains(so+se, tt.want) || (code == 0) != strings.Contains(so, runtime.Version()+" "+runtime.GOOS) {
				t.Fatalf("exit %d, want %d; output:\n%s\n%s", code, tt.code, so, se)
			}
			if _, err := os.Stat(filepath.Join(project+".tmp", "mayfly-bin", "mayfly")); (err == nil) != (tt.code == 0) {
				t.Fatalf("binary installed: %v", err == nil)
			}
		})
	}
	// Inputs are checked as GitLab checks them: a version that is not a
	// release tag never reaches the script.
	for _, v := range []string{"latest", "v1.2.3; rm -rf /", "main"} {
		if ok := regexp.MustCompile(componentRegex(t, "version")).MatchString(v); ok {
			t.Errorf("version input %q accepted", v)
		}
	}
}

// componentRegex returns the regex of one of the component's inputs.
func componentRegex(t *testing.T, name string) string {
	t.Helper()
	b, _ := os.ReadFile("../templates/mayfly.yml")
	head, _, _ := strings.Cut(string(b), "\n---\n")
	var spec gitlabSpec
	if err := yaml.Unmarshal([]byte(head), &spec); err != nil {
		t.Fatal(err)
	}
	return spec.Spec.Inputs[name].Regex
}
