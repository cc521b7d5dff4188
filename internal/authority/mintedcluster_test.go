package authority

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// anotherMintNode is a second node on mb's database (its own store
// handle, lease view, audit recorder and mint manager), with the same
// issuer and upstream, at the policy version stored.
func anotherMintNode(t *testing.T, mb *mintBench, db *store.DB) *mintBench {
	t.Helper()
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(db, h, lease.Options{})
	n := &mintBench{bench: &bench{db: db, m: m, iss: mb.iss, rec: newRecorder(t, db), sec: newVaultSecrets(t, db)}, up: mb.up, db: db}
	n.mt, err = mint.New(mint.Config{Store: db, Hasher: h, SealKey: bytes.Repeat([]byte{1}, 32), Audit: n.rec,
		Sources: map[string]mint.Source{policy.KindPostgres: mb.up, policy.KindGitHubApp: mb.up}})
	if err != nil {
		t.Fatal(err)
	}
	n.a = New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: n.rec, Secrets: n.sec, Minter: n.mt})
	if err := n.a.LoadPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// A policy version that removes a grant ends its credentials upstream on
// every node, whoever applied it: a job's credential (with its lease) and
// the grant's shared one (deliver: gateway, no lease) that each node
// minted for its gateway, each destroyed once.
func TestRemovedGrantCredentialsDestroyedOnEveryNode(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			na := newMintBench(t, b)
			nb := anotherMintNode(t, na, b.Another(t))
			var held []string
			for _, n := range []*mintBench{na, nb} {
				if _, err := n.exchange(t, "release"); err != nil { // the node's shared token
					t.Fatal(err)
				}
				res, err := n.exchange(t, "migrate")
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, res.Credentials["db"].Password)
			}
			na.up.mu.Lock()
			for v := range na.up.live {
				if !bytes.Contains([]byte(fmt.Sprint(held)), []byte(v)) {
					held = append(held, v) // the shared ones
				}
			}
			na.up.mu.Unlock()
			if len(held) != 4 {
				t.Fatalf("%d credentials upstream, want 4", len(held))
			}
			// Node A drops every minting grant; node B follows.
			pol := fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
  other: {upstream: api, ttl: 5m, allow: [{methods: [GET], paths: ["/x"]}], who: [{issuer: ci, claims: {repository: acme/app}}]}
`, na.iss.URL(), benchAudience, na.iss.Algorithm())
			na.sec.set(t, "gh", "x")
			if _, err := na.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
				t.Fatal(err)
			}
			if err := nb.a.SyncPolicy(ctx); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				na.mt.RevokeDue(ctx)
				nb.mt.RevokeDue(ctx)
			}
			for i, v := range held {
				if na.up.exists(v) {
					t.Errorf("credential %d of a removed grant still alive upstream", i)
				}
			}
			na.up.mu.Lock()
			n := na.up.revokes
			na.up.mu.Unlock()
			if n != len(held) {
				t.Errorf("%d revocations upstream for %d credentials, want one each", n, len(held))
			}
		})
	}
}
