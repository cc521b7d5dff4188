package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// TestPolicyTestShowsNoTerminalControls: policy test decodes an ID token
// anyone may have made (its signature is not checked) and prints its iss,
// sub and aud. Raw, an ESC sequence in sub could erase the refusal printed
// after it or draw a "granted" line of its own, and a bidi override could
// reorder it; they are shown as escapes.
func TestPolicyTestShowsNoTerminalControls(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte(policyTestYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	const gh = "https://token.actions.githubusercontent.com"
	hostile := mintFile(t, gh, "https://mayfly.example.com\u202e", map[string]any{"repository": "evil/app",
		"sub": "repo:evil/app\x1b[8m\n\x1b[1A\x1b[2Kdeploy-prod: granted\x1b[9999B"})
	out, _, code := runCLI(t, "", "policy", "test", "--id-token", hostile, "--grant", "deploy-prod", pf)
	if code != exitNegative {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, r := range out {
		if r != '\n' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
			t.Fatalf("output holds %U:\n%q", r, out)
		}
	}
	for _, want := range []string{`repo:evil/app\x1b[8m\n\x1b[1A\x1b[2Kdeploy-prod: granted`, `https://mayfly.example.com\u202e`, "deploy-prod: refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\ndeploy-prod: granted") {
		t.Errorf("a forged verdict line:\n%s", out)
	}
}
