package policy

import (
	"fmt"
	"strings"
	"testing"
)

// TestSharedIssuerKeysElsewhereWarn: the broad rule makes a who entry of
// GitHub Actions or GitLab.com pin a repository or project, but a
// jwks_url on another host makes whoever holds those keys able to sign
// that issuer's ID tokens with any repository in them: no pin holds. A
// policy under review that does so looks like a well-pinned GitHub trust,
// so check, plan and apply say it, at the jwks_url line.
func TestSharedIssuerKeysElsewhereWarn(t *testing.T) {
	const want = "keys of a shared issuer"
	tests := []struct {
		name, url, jwks string
		warn            bool
	}{
		{"github, keys elsewhere", "https://token.actions.githubusercontent.com", "https://keys.example.com/jwks", true},
		{"github, keys on a look-alike", "https://token.actions.githubusercontent.com", "https://token.actions.githubusercontent.com.example.com/.well-known/jwks", true},
		{"gitlab.com, keys on loopback http", "https://gitlab.com", "http://127.0.0.1:8080/keys", true},
		{"gitlab.com, keys on another port", "https://gitlab.com", "https://gitlab.com:8443/oauth/discovery/keys", true},
		{"github, its own keys", "https://token.actions.githubusercontent.com", "https://token.actions.githubusercontent.com/.well-known/jwks", false},
		{"gitlab.com, its own keys, host case", "https://gitlab.com", "https://GitLab.com/oauth/discovery/keys", false},
		{"github, discovery", "https://token.actions.githubusercontent.com", "", false},
		{"not shared", "https://ci.example.com", "https://keys.example.com/jwks", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwks := ""
			if tt.jwks != "" {
				jwks = "\n    jwks_url: " + tt.jwks
			}
			src := fmt.Sprintf(`issuers:
  ci:
    url: %s
    audience: mayfly%s
upstreams:
  api:
    url: https://api.example.com
    credential: {secret: api-token}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/x"]}]
    who: [{issuer: ci, claims: {repository_id: "1", project_id: "1"}}]
`, tt.url, jwks)
			p := mustParse(t, one("policy.yaml", src))
			var got []string
			for _, w := range p.Warnings {
				if strings.Contains(w.Msg, want) {
					got = append(got, w.Error())
				}
			}
			switch {
			case !tt.warn && len(got) > 0:
				t.Fatalf("warned: %v", got)
			case tt.warn && (len(got) != 1 || !strings.HasPrefix(got[0], "policy.yaml:5: issuers.ci.jwks_url: ")):
				t.Fatalf("warnings %v, want one at policy.yaml:5: issuers.ci.jwks_url", p.Warnings)
			}
		})
	}
}
