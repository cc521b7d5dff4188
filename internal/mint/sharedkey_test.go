package mint

import (
	"testing"

	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A grant's shared credential is minted again when the policy changes
// anything that shapes it: where it is minted and sent (the upstream's
// url, which is the App API's when api_url is not given), its App, its
// scope. A token minted by one API is never injected into requests to
// another host.
func TestSharedKeyFollowsTheUpstream(t *testing.T) {
	const pol = `issuers:
  ci: {url: "http://127.0.0.1:1", audience: x}
upstreams:
  gh:
    url: https://api.github.com
    credential: {github_app: {app_id: "1", private_key_secret: key, installation_id: "2"}}
grants:
  release:
    upstream: gh
    ttl: 10m
    github: {permissions: {contents: read}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {p: x}}]
`
	h := newHarness(t, storetest.SQLite(t))
	h.m.cfg.Sources[policy.KindGitHubApp] = h.up
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(pol)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	up, g := p.Upstreams["gh"], p.Grants["release"]
	first, err := h.m.Shared(ctx, up, g)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.m.Shared(ctx, up, g); err != nil || again.ID != first.ID {
		t.Fatalf("an unchanged upstream minted again (%v)", err)
	}
	for _, tc := range []struct {
		name   string
		change func(u *policy.Upstream, g *policy.Grant)
	}{
		{"url (the App API's too)", func(u *policy.Upstream, _ *policy.Grant) { u.URL = "https://ghe.example.com/api/v3" }},
		{"api_url", func(u *policy.Upstream, _ *policy.Grant) {
			app := *u.Credential.GitHubApp
			app.APIURL = "https://ghe.example.com/api/v3"
			u.Credential.GitHubApp = &app
		}},
		{"permissions", func(_ *policy.Upstream, g *policy.Grant) {
			g.GitHub = &policy.GitHubScope{Permissions: map[string]string{"contents": "write"}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u2, g2 := *up, *g
			tc.change(&u2, &g2)
			is, err := h.m.Shared(ctx, &u2, &g2)
			if err != nil {
				t.Fatal(err)
			}
			if is.ID == first.ID {
				t.Fatalf("the credential minted for %s is served after its %s changed", up.URL, tc.name)
			}
		})
	}
}
