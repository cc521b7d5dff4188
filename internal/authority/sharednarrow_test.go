package authority

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/githubapp"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// anotherGHNode is a second node on gb's database (its own store handle,
// lease view, vault, mint manager and GitHub source) against the same
// GitHub double, at the policy version stored.
func anotherGHNode(t *testing.T, gb *ghBench, db *store.DB) *ghBench {
	t.Helper()
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(db, h, lease.Options{})
	n := &ghBench{bench: &bench{db: db, m: m, iss: gb.iss, rec: newRecorder(t, db), sec: newVaultSecrets(t, db)}, gh: gb.gh}
	n.mt, err = mint.New(mint.Config{Store: db, Hasher: h, SealKey: bytes.Repeat([]byte{2}, 32), Audit: n.rec,
		Sources: map[string]mint.Source{policy.KindGitHubApp: githubapp.New(githubapp.Config{Secrets: n.sec.v})}})
	if err != nil {
		t.Fatal(err)
	}
	n.a = New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: n.rec, Secrets: n.sec, Minter: n.mt})
	if err := n.a.LoadPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// shared is what the gateway injects for grant g on this node: the
// grant's shared installation token under the policy in force.
func (gb *ghBench) shared(t *testing.T, g string) string {
	t.Helper()
	p := gb.a.Policy()
	is, err := gb.mt.Shared(ctx, p.Upstreams[p.Grants[g].Upstream], p.Grants[g])
	if err != nil {
		t.Fatal(err)
	}
	return is.Credential.Token
}

// A policy version that changes what a deliver: gateway grant's shared
// installation token may do (a permission lowered or removed, its
// repositories restricted) has every node inject a token minted with the
// new scope, and every token minted with the old one deleted at GitHub:
// those cached on each node before the version, and one a node that had
// not yet followed it minted under the old version after it was applied.
// The cached token used to keep its old, wider scope at GitHub until it
// expired (up to an hour). A change that leaves the token's shape alone
// keeps the cached token.
func TestNarrowedSharedTokenReplacedOnEveryNode(t *testing.T) {
	const before = "{repositories: [app, lib], permissions: {contents: write, issues: read}}"
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tc := range []struct {
				name, scope string
				perms       map[string]string
				repos       []string
				kept        bool // the shape is unchanged: the cached token serves on
			}{
				{"permission lowered", "{repositories: [app, lib], permissions: {contents: read, issues: read}}",
					map[string]string{"contents": "read", "issues": "read"}, []string{"app", "lib"}, false},
				{"permission removed", "{repositories: [app, lib], permissions: {contents: write}}",
					map[string]string{"contents": "write"}, []string{"app", "lib"}, false},
				{"repositories restricted", "{repositories: [app], permissions: {contents: write, issues: read}}",
					map[string]string{"contents": "write", "issues": "read"}, []string{"app"}, false},
				{"unchanged scope", before, map[string]string{"contents": "write", "issues": "read"}, []string{"app", "lib"}, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					na := newGHBench(t, b)
					pol := func(scope, paths string) []policy.File {
						return []policy.File{{Name: "p.yaml", Data: []byte(fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  gh: {url: %q, credential: {github_app: {app_id: %q, private_key_secret: gh-app-key, installation_id: "7890"}}}
grants:
  wide: {upstream: gh, ttl: 10m, github: %s, allow: [{methods: [GET], paths: [%q]}], who: [{issuer: ci, claims: {repository: acme/app}}]}
`, na.iss.URL(), benchAudience, na.iss.Algorithm(), na.gh.URL, na.gh.AppID, scope, paths))}}
					}
					if _, err := na.a.ApplyPolicy(ctx, pol(before, "/**"), "test"); err != nil {
						t.Fatal(err)
					}
					nb := anotherGHNode(t, na, b.Another(t))
					nc := anotherGHNode(t, na, b.Another(t))
					var old []string
					for _, n := range []*ghBench{na, nb} {
						old = append(old, n.shared(t, "wide"))
					}
					// The allowed paths change too: a version that changes
					// the scope is not told apart by them.
					if _, err := na.a.ApplyPolicy(ctx, pol(tc.scope, "/repos/**"), "test"); err != nil {
						t.Fatal(err)
					}
					// Node C has not followed yet: it mints under the
					// version it has.
					old = append(old, nc.shared(t, "wide"))
					for _, n := range []*ghBench{nb, nc} {
						if err := n.a.SyncPolicy(ctx); err != nil {
							t.Fatal(err)
						}
					}
					want := maps.Clone(tc.perms)
					want["metadata"] = "read" // GitHub adds it to every token
					var now []string
					for i, n := range []*ghBench{na, nb, nc} {
						tok := n.shared(t, "wide")
						now = append(now, tok)
						info, ok := na.gh.Tokens()[tok]
						if !ok || !maps.Equal(info.Permissions, want) || !slices.Equal(slices.Sorted(slices.Values(info.Repositories)), tc.repos) {
							t.Errorf("node %d injects a token of %v on %v, want %v on %v", i, info.Permissions, info.Repositories, want, tc.repos)
						}
					}
					for range 2 {
						for _, n := range []*ghBench{na, nb, nc} {
							n.mt.RevokeDue(ctx)
						}
					}
					for i, tok := range old {
						if live := na.gh.Live(tok); live != tc.kept {
							t.Errorf("the token node %d cached under the old version: live at GitHub %v", i, live)
						}
					}
					for i, tok := range now {
						if !na.gh.Live(tok) {
							t.Errorf("node %d's token of the new version was deleted at GitHub", i)
						}
						if tc.kept && tok != old[i] {
							t.Errorf("node %d minted again for a version that left the token's scope alone", i)
						}
					}
				})
			}
		})
	}
}
