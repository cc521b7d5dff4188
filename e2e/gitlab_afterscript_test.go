package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The .mayfly job of the GitLab component in an image that has wget but no
// curl (Alpine/BusyBox) and no mayfly: before_script installs the release
// into ${CI_PROJECT_DIR}.tmp/mayfly-bin (wget), logs in and exports the
// token. GitLab runs after_script in a new shell, where that PATH change is
// gone; without curl the after_script revokes with `mayfly scan --revoke`,
// which it then cannot find. The token must still be revoked.
func TestGitLabAfterScriptRevokesWithInstalledMayflyNoCurl(t *testing.T) {
	sh := needTool(t, "sh")
	needTool(t, "wget")
	// The image's tools: everything the component needs, wget but no curl,
	// and no mayfly.
	tools := t.TempDir()
	for _, name := range []string{"sh", "sed", "rm", "mkdir", "cat", "tar", "awk", "sha256sum", "cut", "uname", "wget", "gzip"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("%s: %v", name, err)
		}
		if err := os.Symlink(p, filepath.Join(tools, name)); err != nil {
			t.Fatal(err)
		}
	}
	w := newCIWorld(t)
	base := releaseArchive(t, "")
	jobs := loadGitLabComponent(t, map[string]string{"version": "v1.2.3", "release_url": base})
	j := resolve(jobs, ".mayfly")
	builds := t.TempDir()
	project := filepath.Join(builds, "acme", "app")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	idTok, err := w.iss.Mint(map[string]any{"project_id": "4242", "project_path": "acme/app", "job_id": "77"}, w.n.url, 0)
	if err != nil {
		t.Fatal(err)
	}
	env := func(extra ...string) []string {
		return append([]string{"PATH=" + tools, "HOME=" + builds, "CI=true", "GITLAB_CI=true",
			"CI_PROJECT_DIR=" + project, "CI_PROJECT_ID=4242", "CI_BUILDS_DIR=" + builds,
			"MAYFLY_ADDR=" + w.n.url, "MAYFLY_AUDIENCE=" + w.n.url, "MAYFLY_CACERT=" + w.caFile,
			"MAYFLY_GRANTS=gitlab-read"}, extra...)
	}
	seen := filepath.Join(builds, "seen-token")
	body := strings.Join(append(append([]string{}, j.BeforeScript...), `printf '%s' "$MAYFLY_TOKEN" > "$SEEN"`), "\n")
	so, se, code := runTool(t, project, env("MAYFLY_ID_TOKEN="+idTok, "SEEN="+seen), sh, "-c", body)
	if code != 0 || !strings.Contains(so, "verified (sha256 ") {
		t.Fatalf("before_script: exit %d\n%s\n%s", code, so, se)
	}
	b, _ := os.ReadFile(seen)
	tok := string(b)
	if !strings.HasPrefix(tok, "mfy_") || !w.introspect(t, tok) {
		t.Fatalf("no live token after before_script (%q)", tok[:min(len(tok), 8)])
	}
	// after_script: a new shell with the image's PATH, as GitLab runs it.
	so, se, code = runTool(t, project, env(), sh, "-c", strings.Join(j.AfterScript, "\n"))
	if w.introspect(t, tok) || !strings.Contains(so, "job token revoked") {
		t.Fatalf("job token still active after after_script (exit %d):\nstdout: %s\nstderr: %s", code, so, se)
	}

	// When no mayfly can be found at all, the warning says why.
	state := project + ".tmp/mayfly"
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "env"), []byte("MAYFLY_TOKEN="+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(project + ".tmp/mayfly-bin"); err != nil {
		t.Fatal(err)
	}
	_, se, _ = runTool(t, project, env(), sh, "-c", strings.Join(j.AfterScript, "\n"))
	if !strings.Contains(se, "WARNING") || !strings.Contains(se, "not found") || strings.Contains(se, tok) {
		t.Fatalf("after_script without mayfly: stderr %q", se)
	}
}

// A binary left in ${CI_PROJECT_DIR}.tmp/mayfly-bin by an earlier job (a
// shell runner keeps the builds directory) is removed by the install step
// even when the image has mayfly, so after_script never runs it.
func TestGitLabInstallRemovesStaleBinary(t *testing.T) {
	sh := needTool(t, "sh")
	jobs := loadGitLabComponent(t, nil)
	j := resolve(jobs, ".mayfly-id-token")
	project := filepath.Join(t.TempDir(), "app")
	stale := filepath.Join(project+".tmp", "mayfly-bin", "mayfly")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("#!/bin/sh\necho planted\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "mayfly")); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "CI_PROJECT_DIR=" + project, "HOME=" + project}
	so, se, code := runTool(t, project, env, sh, "-c", strings.Join(j.BeforeScript, "\n"))
	if code != 0 {
		t.Fatalf("before_script: exit %d\n%s\n%s", code, so, se)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale binary kept: %v", err)
	}
}
