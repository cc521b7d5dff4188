package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// readmeSection returns the README's text from the heading line that
// starts with heading to the next heading of the same or a higher level
// (lines inside fenced blocks are not headings).
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	level := strings.Index(heading, " ")
	var out []string
	in, fenced := false, false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
		}
		if !fenced && strings.HasPrefix(l, "#") {
			n := len(l) - len(strings.TrimLeft(l, "#"))
			if in && n <= level && strings.HasPrefix(l[n:], " ") {
				break
			}
			if strings.HasPrefix(l, heading) {
				in = true
			}
		}
		if in {
			out = append(out, l)
		}
	}
	if !in {
		t.Fatalf("README has no %q", heading)
	}
	return strings.Join(out, "\n")
}

// codeBlocks returns the fenced blocks of language lang in text.
func codeBlocks(text, lang string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// The README's set-up, as a user would follow it: its policy saved as
// policy.yaml, a token.txt, then every command of its shell blocks in order
// through sh, with mayfly on PATH. The only changes: the data dir is a
// temporary one, the server listens on a free port (the README's
// 127.0.0.1:8443 becomes that address) and runs in the background, and
// mfya_… becomes the admin token init printed.
func TestReadmeSetUp(t *testing.T) {
	policies := codeBlocks(readmeSection(t, "### Policy for GitHub Actions and GitLab CI"), "yaml")
	blocks := codeBlocks(readmeSection(t, "## Running a server"), "sh")
	if len(policies) != 1 || len(blocks) < 2 {
		t.Fatalf("README: %d policy blocks, %d shell blocks", len(policies), len(blocks))
	}
	work := t.TempDir()
	data := filepath.Join(work, "var-lib-mayfly")
	os.WriteFile(filepath.Join(work, "policy.yaml"), []byte(policies[0]), 0o600)
	const planted = "ghp_READMEtestTOKENvalue0123456789abcdef"
	os.WriteFile(filepath.Join(work, "token.txt"), []byte(planted+"\n"), 0o600)
	env := append(os.Environ(), "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"MAYFLY_ADDR=", "MAYFLY_CACERT=", "MAYFLY_TOKEN=")
	addrFile := filepath.Join(work, "addr")
	var admin, url string
	var srv *exec.Cmd
	var srvLogs syncBuffer
	subst := func(line string) string {
		line = strings.ReplaceAll(line, "/var/lib/mayfly", data)
		if url != "" {
			line = strings.ReplaceAll(line, "https://127.0.0.1:8443", url)
		}
		return strings.ReplaceAll(line, "mfya_…", admin)
	}
	var outputs []string
	for _, block := range blocks {
		sc := bufio.NewScanner(strings.NewReader(block))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			line = subst(line)
			if strings.HasPrefix(line, "export ") {
				// An assignment for the commands that follow.
				env = append(env, strings.Fields(strings.TrimPrefix(line, "export "))...)
				continue
			}
			if strings.HasPrefix(line, "mayfly server ") {
				cmd := strings.SplitN(line, "#", 2)[0] + " --listen 127.0.0.1:0 --metrics-listen off --addr-file " + addrFile
				srv = exec.Command("sh", "-c", "exec "+cmd)
				srv.Dir, srv.Env, srv.Stdout, srv.Stderr = work, env, &srvLogs, &srvLogs
				if err := srv.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan struct{})
				go func() { srv.Wait(); close(exited) }()
				t.Cleanup(func() { srv.Process.Kill(); <-exited })
				for url == "" {
					if b, _ := os.ReadFile(addrFile); len(b) > 0 {
						url = strings.TrimSpace(string(b))
						break
					}
					select {
					case <-exited:
						t.Fatalf("README: %s: the server exited: %s", line, srvLogs.String())
					case <-time.After(20 * time.Millisecond):
					}
				}
				continue
			}
			cmd := exec.Command("sh", "-c", line)
			cmd.Dir, cmd.Env = work, env
			var so, se bytes.Buffer
			cmd.Stdout, cmd.Stderr = &so, &se
			if err := cmd.Run(); err != nil {
				t.Fatalf("README: %s: %v\nstdout: %s\nstderr: %s\nserver: %s", line, err, so.String(), se.String(), srvLogs.String())
			}
			outputs = append(outputs, so.String())
			if strings.HasPrefix(line, "mayfly init ") {
				admin = regexp.MustCompile(`mfya_[0-9A-Za-z]+`).FindString(so.String())
				if admin == "" {
					t.Fatalf("init printed no admin token: %s", so.String())
				}
			}
		}
	}
	if srv == nil {
		t.Fatal("the README starts no server")
	}
	all := strings.Join(outputs, "\n")
	for _, want := range []string{"deploy-prod", "github-deploy-token"} {
		if !strings.Contains(all, want) {
			t.Errorf("the README's commands never show %q:\n%s", want, all)
		}
	}
	if !strings.Contains(srvLogs.String(), "policy applied") {
		t.Errorf("server did not load the policy: %s", srvLogs.String())
	}
	if strings.Contains(all+srvLogs.String(), planted) {
		t.Fatal("the secret value was printed")
	}
}

// syncBuffer is a bytes.Buffer a child process writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
