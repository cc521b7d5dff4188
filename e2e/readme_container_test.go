package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's container set-up, as a user would follow it with the
// README's policy as policy.yaml: each `docker run` of its Install section
// in order, run as the binary the image holds (the image's CMD when none
// is named), with the named volume and bind mounts as folders of the
// test. Only the listen address changes (a free loopback port). Before,
// the server exited at once: the section stored no secret, and the
// policy names one.
func TestReadmeContainerSetUp(t *testing.T) {
	policies := codeBlocks(readmeSection(t, "### Policy for GitHub Actions and GitLab CI"), "yaml")
	runs := regexp.MustCompile("`(docker run [^`]+)`").FindAllStringSubmatch(readmeSection(t, "## Install"), -1)
	if len(policies) != 1 || len(runs) < 2 {
		t.Fatalf("README: %d policy blocks, %d docker runs", len(policies), len(runs))
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var imageCmd []string
	if m := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindSubmatch(dockerfile); m == nil || json.Unmarshal(m[1], &imageCmd) != nil {
		t.Fatal("the Dockerfile has no CMD [...]")
	}
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "policy.yaml"), []byte(policies[0]), 0o600)
	const planted = "ghp_READMEcontainerTOKEN0123456789abcdef" // mayfly:allow
	os.WriteFile(filepath.Join(work, "token.txt"), []byte(planted+"\n"), 0o600)
	env := append(os.Environ(), "MAYFLY_ADDR=", "MAYFLY_CACERT=", "MAYFLY_TOKEN=", "MAYFLY_POSTGRES=")
	started := false
	for _, run := range runs {
		words := strings.Fields(strings.TrimPrefix(run[1], "docker run "))
		mounts := map[string]string{} // in the container → here
		var args []string
		for i := 0; i < len(words); i++ {
			switch w := words[i]; {
			case w == "-v":
				i++
				parts := strings.Split(words[i], ":")
				host := strings.ReplaceAll(parts[0], "$PWD", work)
				if !strings.Contains(host, "/") { // a named volume
					host = filepath.Join(work, "volume-"+host)
				}
				mounts[parts[1]] = host
			case w == "-p":
				i++
			case strings.HasPrefix(w, "-"):
			default:
				args = words[i+1:] // words[i] is the image
				i = len(words)
			}
		}
		if len(args) == 0 {
			args = imageCmd
		}
		line := strings.Join(args, " ")
		for in, here := range mounts {
			line = strings.ReplaceAll(line, in, here)
		}
		if args[0] == "server" {
			addrFile := filepath.Join(work, "addr")
			line = strings.ReplaceAll(line, "0.0.0.0:8443", "127.0.0.1:0") + " --metrics-listen off --addr-file " + addrFile
			srv := exec.Command("sh", "-c", "exec "+binary+" "+line)
			var logs syncBuffer
			srv.Dir, srv.Env, srv.Stdout, srv.Stderr = work, env, &logs, &logs
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { srv.Wait(); close(exited) }()
			t.Cleanup(func() { srv.Process.Kill(); <-exited })
			for b, _ := os.ReadFile(addrFile); len(b) == 0; b, _ = os.ReadFile(addrFile) {
				select {
				case <-exited:
					t.Fatalf("README: %s: the server exited: %s", run[1], logs.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			if !strings.Contains(logs.String(), "policy applied") || strings.Contains(logs.String(), planted) {
				t.Fatalf("README: %s: the policy was not applied, or the secret was printed: %s", run[1], logs.String())
			}
			started = true
			continue
		}
		cmd := exec.Command("sh", "-c", binary+" "+line)
		cmd.Dir, cmd.Env = work, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README: %s: %v\n%s", run[1], err, out)
		}
	}
	if !started {
		t.Fatal("the README's container set-up starts no server")
	}
}
