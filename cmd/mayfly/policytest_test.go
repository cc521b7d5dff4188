package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

const policyTestYAML = `issuers:
  github:
    url: https://token.actions.githubusercontent.com
    audience: https://mayfly.example.com
upstreams:
  github-api:
    url: https://api.github.com
    credential: {secret: github-deploy-token}
grants:
  deploy-prod:
    upstream: github-api
    ttl: 10m
    allow: [{methods: [POST], paths: ["/repos/acme/app/deployments"]}]
    who:
      - issuer: github
        claims:
          repository: acme/app
          ref: refs/heads/main
          environment: production
  read:
    upstream: github-api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/repos/acme/app/**"]}]
    who:
      - issuer: github
        claims: {repository: acme/app}
  corp:
    upstream: github-api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/x"]}]
    who:
      - issuer: github
        claims: {repository: acme/app}
        source_cidrs: [10.0.0.0/8]
`

// mintFile writes an ID token shaped like GitHub's, signed by a key nobody
// trusts: policy test must not care.
func mintFile(t *testing.T, iss, aud string, claims map[string]any) string {
	t.Helper()
	di, err := devissuer.New(devissuer.Options{URL: iss})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := di.Mint(claims, aud, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "id.jwt")
	if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPolicyTestCommand(t *testing.T) {
	dir := t.TempDir()
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte(policyTestYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	const gh, aud = "https://token.actions.githubusercontent.com", "https://mayfly.example.com"
	dev := mintFile(t, gh, aud, map[string]any{"repository": "acme/app", "ref": "refs/heads/dev"})
	prod := mintFile(t, gh, aud, map[string]any{"repository": "acme/app", "environment": "production"})
	other := mintFile(t, gh, aud, map[string]any{"repository": "evil/app"})
	wrongAud := mintFile(t, gh, "https://elsewhere", nil)
	numericSub := mintFile(t, gh, aud, map[string]any{"repository": "acme/app", "sub": 5})
	tests := []struct {
		name string
		args []string
		code int
		out  []string // substrings of stdout
	}{
		{"dev branch", []string{"--id-token", dev, pf}, 0, []string{
			"signature is not checked offline",
			"issuer: github",
			"deploy-prod: refused: no who entry matches",
			`who[0].claims.environment: expected "production", but the ID token has no such claim`,
			"read: granted\n  allow[0]: GET (and HEAD) /repos/acme/app/**\n",
			"corp: granted only from 10.0.0.0/8 (give --source to decide)\n  allow[0]: GET (and HEAD) /x\n",
		}},
		{"dev branch, one grant", []string{"--id-token", dev, "--grant", "deploy-prod", pf}, 1, []string{"deploy-prod: refused"}},
		{"production", []string{"--id-token", prod, "--grant", "deploy-prod,read", pf}, 0, []string{"deploy-prod: granted\n  allow[0]: POST /repos/acme/app/deployments\n", "read: granted"}},
		{"source decides", []string{"--id-token", prod, "--grant", "corp", "--source", "192.0.2.1", pf}, 1, []string{
			"corp: refused: source address not allowed", `who[0].source_cidrs: expected "10.0.0.0/8", got "192.0.2.1"`}},
		{"other repository", []string{"--id-token", other, pf}, 1, []string{`who[0].claims.repository: expected "acme/app", got "evil/app"`}},
		{"unknown grant", []string{"--id-token", prod, "--grant", "nope", pf}, 1, []string{"nope: refused: unknown grant"}},
		{"audience", []string{"--id-token", wrongAud, pf}, 1, []string{"aud does not contain the configured audience: the server refuses", `who[0].issuer: expected "github", got ""`}},
		// The claims match, but the server refuses the token's shape.
		{"sub not a string", []string{"--id-token", numericSub, "--grant", "read", pf}, 1, []string{
			"issuer: format: sub is not a non-empty string: the server refuses this token (invalid_grant)", "read: refused"}},
		{"no token", []string{pf}, 2, nil},
		{"bad source", []string{"--id-token", dev, "--source", "x", pf}, 2, nil},
		{"not a token", []string{"--id-token", pf, pf}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", append([]string{"policy", "test"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tt.code, out, errOut)
			}
			for _, s := range tt.out {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}

	// JSON: the same answer, no signature anywhere.
	out, _, code := runCLI(t, "", "policy", "test", "--format", "json", "--id-token", dev, "--grant", "deploy-prod", pf)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var res policyTestResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.SignatureChecked || res.Issuer != "github" || len(res.Grants) != 1 || res.Grants[0].Reason != "no_who_match" ||
		len(res.Grants[0].Who) != 1 || res.Grants[0].Who[0].Line != "claims.environment" {
		t.Errorf("json %s", out)
	}
	// A granted grant lists what it allows, HEAD where GET allows it.
	out, _, code = runCLI(t, "", "policy", "test", "--format", "json", "--id-token", dev, "--grant", "read", pf)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	res = policyTestResult{}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Grants) != 1 || len(res.Grants[0].Allow) != 1 || strings.Join(res.Grants[0].Allow[0].Methods, " ") != "GET HEAD" ||
		strings.Join(res.Grants[0].Allow[0].Paths, " ") != "/repos/acme/app/**" {
		t.Errorf("json %s", out)
	}
	raw, _ := os.ReadFile(dev)
	sig := strings.TrimSpace(string(raw))
	sig = sig[strings.LastIndexByte(sig, '.')+1:]
	if strings.Contains(out, sig) {
		t.Error("output holds the token's signature")
	}
}

// A refused login shows the claims it presented, never the token or its
// signature; an accepted one shows nothing of them.
func TestLoginPrintsClaimsWhenRefused(t *testing.T) {
	fs := newFakeServer(t)
	jobEnv(t, fs.URL)
	f := mintFile(t, "https://token.actions.githubusercontent.com", "https://mayfly.example.com",
		map[string]any{"repository": "acme/app", "ref": "refs/heads/dev"})
	raw, _ := os.ReadFile(f)
	tok := strings.TrimSpace(string(raw))
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	tests := []struct {
		grant  string
		code   int
		claims bool
	}{
		{"forbidden", 1, true},
		{"deploy", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.grant, func(t *testing.T) {
			_, errOut, code := runCLI(t, "", "login", "--grant", tt.grant, "--id-token-file", f)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errOut)
			}
			shown := strings.Contains(errOut, "  ref: refs/heads/dev\n") && strings.Contains(errOut, "  repository: acme/app\n")
			if shown != tt.claims {
				t.Errorf("claims shown = %v, want %v:\n%s", shown, tt.claims, errOut)
			}
			if strings.Contains(errOut, sig) || strings.Contains(errOut, tok) {
				t.Error("stderr holds the ID token or its signature")
			}
		})
	}
}
