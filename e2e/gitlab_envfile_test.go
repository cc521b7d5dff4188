package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `mayfly login --format env` single-quotes a value sh would misread; the
// .mayfly job reads its file without a shell, so it removes the quotes
// itself. A stand-in mayfly prints such a file.
func TestGitLabBeforeScriptReadsQuotedEnv(t *testing.T) {
	sh := needTool(t, "sh")
	j := resolve(loadGitLabComponent(t, nil), ".mayfly")
	bin := t.TempDir()
	fake := "#!/bin/sh\nprintf '%s\\n' 'MAYFLY_TOKEN=mfy_x' \"MAYFLY_GATEWAY='https://m.example/~ci/gw'\"\n"
	if err := os.WriteFile(filepath.Join(bin, "mayfly"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	project := filepath.Join(t.TempDir(), "app")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "CI_PROJECT_DIR=" + project, "HOME=" + project,
		"MAYFLY_ADDR=https://m.example/~ci", "MAYFLY_GRANTS=g"}
	body := strings.Join(append(append([]string{}, j.BeforeScript...), `printf '%s|%s' "$MAYFLY_TOKEN" "$MAYFLY_GATEWAY" > "$CI_PROJECT_DIR/seen"`), "\n")
	so, se, code := runTool(t, project, env, sh, "-c", body)
	if code != 0 {
		t.Fatalf("before_script: exit %d\n%s\n%s", code, so, se)
	}
	if b, _ := os.ReadFile(filepath.Join(project, "seen")); string(b) != "mfy_x|https://m.example/~ci/gw" {
		t.Errorf("exported MAYFLY_TOKEN|MAYFLY_GATEWAY = %q", b)
	}
}
