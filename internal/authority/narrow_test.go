package authority

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// narrowBase has a job-delivered credential on each minting kind: a
// database role (migrate) and a GitHub installation token (release).
const narrowBase = `issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  db:
    postgres:
      admin_dsn_secret: admin
      creation: CREATE ROLE "{{name}}" PASSWORD '{{password}}'
      revocation: DROP ROLE "{{name}}"
  db2:
    postgres:
      admin_dsn_secret: admin
      creation: CREATE ROLE "{{name}}" PASSWORD '{{password}}'
      revocation: DROP ROLE "{{name}}"
  gh:
    url: http://127.0.0.1:3
    credential: {github_app: {app_id: "1", private_key_secret: key, installation_id: "2"}}
grants:
  migrate:
    upstream: db
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {repository: acme/app}}]
  release:
    upstream: gh
    ttl: 10m
    max_uses: 5
    deliver: job
    bind_source_ip: true
    github: {permissions: {contents: write}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// A policy version that narrows a grant, so that it would no longer give
// a live token what it holds (its identity no longer matches, its uses
// reach the new limit, the credential handed to the job is wider than the
// grant now mints or is for another upstream), revokes that token on
// every node, with its minted credential, audited as "grant narrowed".
// The gateway and renewal refused such a token already, but a credential
// delivered to the job lived on until the lease expired. Narrowings the
// gateway decides per request (methods, paths) or that shorten only future
// tokens (ttl) revoke nothing, nor does a widening.
func TestNarrowedGrantRevokesWhatItNoLongerGives(t *testing.T) {
	tests := []struct {
		name             string
		old, new         string // replaced in narrowBase
		migrate, release bool   // whether the lease of each is revoked
	}{
		{"who narrowed", "bind_source_ip: true\n    who: [{issuer: ci, claims: {repository: acme/app}}]\n  release",
			"bind_source_ip: true\n    who: [{issuer: ci, claims: {repository: acme/other}}]\n  release", true, false},
		{"who widened", "claims: {repository: acme/app}}]\n  release", "claims: {repository: [acme/app, acme/lib]}}]\n  release", false, false},
		{"source_cidrs leave out the exchange address", "claims: {repository: acme/app}}]\n  release",
			"claims: {repository: acme/app}, source_cidrs: [192.0.2.0/24]}]\n  release", true, false},
		{"max_uses lowered to the uses so far", "max_uses: 5", "max_uses: 2", false, true},
		// The gateway counts the token against the 5 it was issued with.
		{"max_uses lowered above the uses so far", "max_uses: 5", "max_uses: 3", false, true},
		{"max_uses raised", "max_uses: 5", "max_uses: 9", false, false},
		{"upstream changed", "upstream: db\n", "upstream: db2\n", true, false},
		{"github permissions narrowed", "contents: write", "contents: read", false, true},
		{"github permissions widened", "contents: write", "contents: write, issues: read", false, false},
		{"github repositories narrowed", "github: {permissions", "github: {repositories: [app], permissions", false, true},
		{"delivered by the gateway now", "deliver: job", "deliver: gateway", false, true},
		{"paths narrowed", `paths: ["/**"]`, `paths: ["/repos/**"]`, false, false},
		{"ttl shortened", "ttl: 10m\n    bind", "ttl: 1m\n    bind", false, false},
	}
	for _, backend := range []func(testing.TB) storetest.Backend{storetest.SQLite, storetest.Postgres} {
		t.Run(backend(t).Name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					b := backend(t) // a fresh database per case
					na := newMintBench(t, b)
					base := fmt.Sprintf(narrowBase, na.iss.URL(), benchAudience, na.iss.Algorithm())
					if _, err := na.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(base)}}, "test"); err != nil {
						t.Fatal(err)
					}
					nb := anotherMintNode(t, na, b.Another(t))
					// Node B holds the role, node A the GitHub token.
					mig, err := nb.exchange(t, "migrate")
					if err != nil {
						t.Fatal(err)
					}
					rel, err := na.exchange(t, "release")
					if err != nil {
						t.Fatal(err)
					}
					l, err := na.m.Lookup(ctx, rel.Token)
					if err != nil {
						t.Fatal(err)
					}
					for range 2 {
						if err := na.m.Use(ctx, l); err != nil {
							t.Fatal(err)
						}
					}
					next := strings.Replace(base, tc.old, tc.new, 1)
					if next == base {
						t.Fatalf("%q is not in the policy", tc.old)
					}
					if _, err := na.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(next)}}, "test"); err != nil {
						t.Fatal(err)
					}
					if err := nb.a.SyncPolicy(ctx); err != nil {
						t.Fatal(err)
					}
					for _, n := range []*mintBench{na, nb} {
						if err := n.m.Poll(ctx); err != nil {
							t.Fatal(err)
						}
						n.mt.RevokeDue(ctx)
					}
					for _, c := range []struct {
						grant   string
						res     *ExchangeResult
						secret  string
						revoked bool
					}{
						{"migrate", mig, mig.Credentials["db"].Password, tc.migrate},
						{"release", rel, rel.Credentials["gh"].Token, tc.release},
					} {
						if c.secret == "" {
							t.Fatalf("%s: no credential delivered: %+v", c.grant, c.res.Credentials)
						}
						sl, err := na.db.LeaseByID(ctx, c.res.LeaseID)
						if err != nil {
							t.Fatal(err)
						}
						if got := !sl.RevokedAt.IsZero(); got != c.revoked {
							t.Errorf("%s: lease revoked in the store = %v, want %v", c.grant, got, c.revoked)
						}
						for i, n := range []*mintBench{na, nb} {
							_, err := n.m.Lookup(ctx, c.res.Token)
							if got := errors.Is(err, lease.ErrRevoked); got != c.revoked {
								t.Errorf("%s: revoked on node %d = %v (%v), want %v", c.grant, i, got, err, c.revoked)
							}
						}
						if alive := na.up.exists(c.secret); alive == c.revoked {
							t.Errorf("%s: credential alive upstream = %v, want %v", c.grant, alive, !c.revoked)
						}
						found := false
						for _, ev := range na.rec.all() {
							if ev.Type == "token.revoke" && ev.Grant == c.grant {
								found = true
								if ev.Reason != "grant narrowed" || ev.Count != 1 || ev.PolicyVersion != "3" || ev.Admin != "policy v3" {
									t.Errorf("%s: revocation entry %+v", c.grant, ev)
								}
							}
						}
						if found != c.revoked {
							t.Errorf("%s: revocation audited = %v, want %v", c.grant, found, c.revoked)
						}
					}
				})
			}
		})
	}
}

// A version stored by a node that stopped before it revoked what the
// version narrowed is carried out by the node that follows it.
func TestNarrowedGrantRevokedByTheNodeThatFollows(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			na := newMintBench(t, b)
			base := fmt.Sprintf(narrowBase, na.iss.URL(), benchAudience, na.iss.Algorithm())
			if _, err := na.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(base)}}, "test"); err != nil {
				t.Fatal(err)
			}
			nb := anotherMintNode(t, na, b.Another(t))
			mig, err := na.exchange(t, "migrate") // node B never met it
			if err != nil {
				t.Fatal(err)
			}
			p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.Replace(base, "acme/app", "acme/other", 1))}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := na.db.PutPolicyVersion(ctx, store.PolicyVersion{Version: 3, Hash: p.Hash, Source: p.Source, AppliedAt: time.Now(), AppliedBy: "test"}); err != nil {
				t.Fatal(err)
			}
			if err := nb.a.SyncPolicy(ctx); err != nil {
				t.Fatal(err)
			}
			sl, err := nb.db.LeaseByID(ctx, mig.LeaseID)
			if err != nil || sl.RevokedAt.IsZero() {
				t.Fatalf("lease of a narrowed grant after node B followed: revoked at %v, %v", sl.RevokedAt, err)
			}
			nb.mt.RevokeDue(ctx)
			if na.up.exists(mig.Credentials["db"].Password) {
				t.Error("the role of a narrowed grant's lease is still alive upstream")
			}
		})
	}
}
