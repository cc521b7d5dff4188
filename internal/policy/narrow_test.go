package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const narrowPolicy = `issuers:
  ci: {url: "http://127.0.0.1:1", audience: a}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: s}}
grants:
  g:
    upstream: api
    ttl: 5m
    max_uses: 5
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// Outgrown judges a token against a narrowed grant as the exchange would
// judge it now, but never for what the narrowing did not change: a token
// used up under its own limit is not "narrowed", and one whose exchange
// address is unknown is not refused for it.
func TestOutgrown(t *testing.T) {
	old := mustParse(t, []File{{Name: "p.yaml", Data: []byte(narrowPolicy)}})
	holder := func(src string) *Holder {
		h := &Holder{Issuer: "ci", Claims: map[string]string{"iss": "http://127.0.0.1:1", "repository": "acme/app"}, Grants: []string{"g"}}
		h.Source, _ = netip.ParseAddr(src)
		return h
	}
	for _, tc := range []struct {
		name     string
		from, to string
		h        *Holder
		limit    int64
		why      string
	}{
		{"unchanged", "", "", holder("10.0.0.1"), 5, ""},
		// The gateway counts a token against the limit it was issued
		// with: one still under a lowered limit would keep its own
		// (here 5 uses where the grant now gives 3), however often it
		// was used so far.
		{"limit lowered", "max_uses: 5", "max_uses: 3", holder("10.0.0.1"), 5, "use limit lowered"},
		{"limit raised", "max_uses: 5", "max_uses: 9", holder("10.0.0.1"), 5, ""},
		{"limit lowered to the token's own", "max_uses: 5", "max_uses: 4", holder("10.0.0.1"), 4, ""},
		{"a limit set where it had none", "max_uses: 5", "max_uses: 2", holder("10.0.0.1"), 0, "use limit lowered"},
		{"claims no longer match", "acme/app", "acme/other", holder("10.0.0.1"), 5, NoWhoMatches.String()},
		{"exchange address left out", "acme/app}", "acme/app}, source_cidrs: [192.0.2.0/24]", holder("10.0.0.1"), 5, SourceNotAllowed.String()},
		{"exchange address unknown", "acme/app}", "acme/app}, source_cidrs: [192.0.2.0/24]", holder(""), 5, ""},
		{"grant removed", "\n  g:\n", "\n  h:\n", holder("10.0.0.1"), 5, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustParse(t, []File{{Name: "p.yaml", Data: []byte(strings.Replace(narrowPolicy, tc.from, tc.to, 1))}})
			if _, why := Outgrown(old, p, tc.h, tc.limit); why != tc.why {
				t.Errorf("why = %q, want %q", why, tc.why)
			}
		})
	}
}
