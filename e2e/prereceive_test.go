package e2e

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// contrib/hooks/pre-receive refuses a push that adds a secret, also on a
// new branch, whose new commits it finds with rev-list. The pusher sets
// the commit dates: a merge whose parent that adds the secret is dated
// after its other parent must not leave that commit out of the range.
func TestPreReceiveHook(t *testing.T) {
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	hook, err := os.ReadFile("../contrib/hooks/pre-receive")
	if err != nil {
		t.Fatal(err)
	}
	// The hook runs mayfly from PATH.
	path := filepath.Dir(binary) + string(os.PathListSeparator) + os.Getenv("PATH")
	git := func(t *testing.T, dir, date string, args ...string) string {
		t.Helper()
		cmd := exec.Command(gitBin, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir,
			"GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date, "PATH="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ghp := func() string {
		const a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 30)
		_, _ = rand.Read(b)
		for i := range b {
			b[i] = a[int(b[i])%len(a)]
		}
		return "ghp_" + string(b) + token.Checksum(string(b))
	}
	const d2020, d2025, d2030 = "2020-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2030-01-01T00:00:00Z"
	write := func(t *testing.T, dir, name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		branch func(t *testing.T, dir string) string // makes the commits to push, returns the tip
		refuse bool
		ref    string // where the tip is pushed (default refs/heads/feature)
	}{
		{"clean branch", func(t *testing.T, dir string) string {
			write(t, dir, "c.txt", "c\n")
			git(t, dir, d2025, "add", ".")
			git(t, dir, d2025, "commit", "-q", "-m", "clean")
			return git(t, dir, d2025, "rev-parse", "HEAD")
		}, false, ""},
		{"secret on a branch", func(t *testing.T, dir string) string {
			write(t, dir, "s.txt", "k="+ghp()+"\n")
			git(t, dir, d2025, "add", ".")
			git(t, dir, d2025, "commit", "-q", "-m", "secret")
			return git(t, dir, d2025, "rev-parse", "HEAD")
		}, true, ""},
		{"secret behind a merge dated to hide it", func(t *testing.T, dir string) string {
			write(t, dir, "s.txt", "k="+ghp()+"\n")
			git(t, dir, d2030, "add", ".")
			git(t, dir, d2030, "commit", "-q", "-m", "P")
			p := git(t, dir, d2030, "rev-parse", "HEAD")
			write(t, dir, "c.txt", "c\n")
			git(t, dir, d2020, "add", ".")
			git(t, dir, d2020, "commit", "-q", "-m", "C")
			c := git(t, dir, d2020, "rev-parse", "HEAD")
			return git(t, dir, d2025, "commit-tree", "-p", c, "-p", p, "-m", "M", "HEAD^{tree}")
		}, true, ""},
		{"secret in a tag's message, the commit already pushed", func(t *testing.T, dir string) string {
			git(t, dir, d2025, "tag", "-a", "v1", "-m", "release", "-m", "token "+ghp())
			return "v1"
		}, true, "refs/tags/v1"},
		// A tag may name any object: a blob or a tree is published by
		// the push as a commit is, and has no history to scan.
		{"secret in a blob pushed as a tag", func(t *testing.T, dir string) string {
			write(t, dir, "s.txt", "k="+ghp()+"\n")
			return git(t, dir, d2025, "hash-object", "-w", "s.txt")
		}, true, "refs/tags/key"},
		{"secret in a tree pushed as a tag", func(t *testing.T, dir string) string {
			write(t, dir, "s.txt", "k="+ghp()+"\n")
			git(t, dir, d2025, "add", ".")
			return git(t, dir, d2025, "write-tree")
		}, true, "refs/tags/tree"},
		{"secret in a blob behind an annotated tag", func(t *testing.T, dir string) string {
			write(t, dir, "s.txt", "k="+ghp()+"\n")
			blob := git(t, dir, d2025, "hash-object", "-w", "s.txt")
			git(t, dir, d2025, "tag", "-a", "key", "-m", "the key", blob)
			return "key"
		}, true, "refs/tags/key"},
		{"clean blob pushed as a tag", func(t *testing.T, dir string) string {
			write(t, dir, "pub.txt", "a public key, no secret\n")
			return git(t, dir, d2025, "hash-object", "-w", "pub.txt")
		}, false, "refs/tags/pub"},
		{"clean tag", func(t *testing.T, dir string) string {
			git(t, dir, d2025, "tag", "-a", "v1", "-m", "release")
			return "v1"
		}, false, "refs/tags/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			server := filepath.Join(root, "server.git")
			git(t, root, d2020, "init", "-q", "--bare", "-b", "main", server)
			if err := os.WriteFile(filepath.Join(server, "hooks", "pre-receive"), hook, 0o755); err != nil {
				t.Fatal(err)
			}
			work := filepath.Join(root, "work")
			git(t, root, d2020, "init", "-q", "-b", "main", work)
			write(t, work, "a.txt", "a\n")
			git(t, work, d2020, "add", ".")
			git(t, work, d2020, "commit", "-q", "-m", "X")
			git(t, work, d2020, "push", "-q", server, "main")

			tip := tt.branch(t, work)
			ref := tt.ref
			if ref == "" {
				ref = "refs/heads/feature"
			}
			cmd := exec.Command(gitBin, "push", "-q", server, tip+":"+ref)
			cmd.Dir = work
			cmd.Env = append(os.Environ(), "PATH="+path, "GIT_CONFIG_NOSYSTEM=1", "HOME="+root)
			out, err := cmd.CombinedOutput()
			if refused := err != nil; refused != tt.refuse {
				t.Fatalf("push refused: %v, want %v\n%s", refused, tt.refuse, out)
			}
			if tt.refuse && !strings.Contains(string(out), "secrets found") {
				t.Fatalf("refused for another reason:\n%s", out)
			}
		})
	}
}
