package policy

import (
	"strings"
	"testing"
)

// TestNonASCIIHostsWarn: a url whose host is not ASCII can be a look-alike
// of a known host ("tоken.actions.githubusercontent.com" with a Cyrillic
// "о"): in a policy under review it reads as GitHub's issuer while it
// trusts whoever runs that host (and, not being GitHub's, escapes the
// broad rule), or sends an upstream's credential or a GitHub App's JWT
// there. check, plan and apply say so at that line, with the ASCII
// (punycode) form the host resolves to.
func TestNonASCIIHostsWarn(t *testing.T) {
	const want = "is not ASCII"
	tests := []struct {
		name, old, new, at string
	}{
		{"issuer url", "url: https://ci.example.com", "url: https://tоken.actions.githubusercontent.com",
			"policy.yaml:3: issuers.ci.url: host \"tоken.actions.githubusercontent.com\" is not ASCII (its ASCII form is xn--tken-"},
		{"jwks_url", "    audience: mayfly\n", "    audience: mayfly\n    jwks_url: https://ci.exаmple.com/keys\n",
			"policy.yaml:5: issuers.ci.jwks_url: host"},
		{"upstream url", "url: https://api.example.com", "url: https://api.githuЬ.com", "policy.yaml:7: upstreams.api.url: host"},
		{"ascii hosts", "", "", ""},
		{"punycode", "url: https://api.example.com", "url: https://api.xn--githu-7ve.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, one("policy.yaml", strings.Replace(base, tt.old, tt.new, 1)))
			var got []string
			for _, w := range p.Warnings {
				if strings.Contains(w.Msg, want) {
					got = append(got, w.Error())
				}
			}
			switch {
			case tt.at == "" && len(got) > 0:
				t.Fatalf("warned: %v", got)
			case tt.at != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.at)):
				t.Fatalf("warnings %v, want one starting %s", p.Warnings, tt.at)
			}
		})
	}
}

// A GitHub App's api_url receives the App's JWT: a look-alike host there
// is warned of too.
func TestNonASCIIAppURLWarns(t *testing.T) {
	src := strings.Replace(minted, "        installation_id:", "        api_url: https://api.githuЬ.com\n        installation_id:", 1)
	if src == minted {
		t.Fatal("the minted sample changed: no installation_id line")
	}
	p := mustParse(t, one("policy.yaml", src))
	for _, w := range p.Warnings {
		if strings.Contains(w.Msg, "is not ASCII") && strings.HasSuffix(w.Path, ".github_app.api_url") {
			return
		}
	}
	t.Fatalf("no warning for a non-ASCII api_url: %v", p.Warnings)
}
