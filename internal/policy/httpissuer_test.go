package policy

import (
	"strings"
	"testing"
)

// An issuer whose keys come over plain http (allowed on loopback, for
// mayfly dev-issuer) is trusted on the word of whatever listens on that
// port of the server's host: once the dev issuer is stopped, any local
// user may listen there and sign ID tokens for every grant naming it.
// check, plan and apply say so at the line that makes it so, so such an
// issuer left over from trying pipelines is not applied to a production
// server unseen. Keys fetched over https (jwks_url) are not warned of.
func TestPlainHTTPIssuerKeysWarn(t *testing.T) {
	const want = "keys come over plain http"
	tests := []struct {
		name, old, new, at string
	}{
		{"http url, keys by discovery", "url: https://ci.example.com", "url: http://127.0.0.1:8700",
			"policy.yaml:3: issuers.ci.url: "},
		{"http jwks_url", "    audience: mayfly\n", "    audience: mayfly\n    jwks_url: http://localhost:8700/.well-known/jwks\n",
			"policy.yaml:5: issuers.ci.jwks_url: "},
		{"http url, https jwks_url", "url: https://ci.example.com\n    audience: mayfly\n",
			"url: http://127.0.0.1:8700\n    audience: mayfly\n    jwks_url: https://keys.example.com/jwks\n", ""},
		{"https", "", "", ""},
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
