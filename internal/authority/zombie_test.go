package authority

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// fixedVerifier accepts any ID token as one CI identity.
type fixedVerifier struct{}

func (fixedVerifier) Verify(context.Context, string) (*identity.Identity, error) {
	return &identity.Identity{Issuer: "ci", Subject: "repo:acme/app", Claims: map[string]string{"repository_id": "1"},
		Expiry: time.Now().Add(time.Hour)}, nil
}
func (fixedVerifier) ConsumeJTI(context.Context, identity.JTIStore, *identity.Identity) error {
	return nil
}
func (fixedVerifier) SetIssuers([]identity.IssuerConfig) {}

// node is one mayfly node's authority over its own store handle.
type zombieNode struct {
	a  *Authority
	m  *lease.Manager
	db *store.DB
}

func newZombieNode(t *testing.T, db *store.DB) zombieNode {
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(db, h, lease.Options{})
	if err := m.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := New(Config{Leases: m, Verifier: fixedVerifier{}, Policies: db, Audit: newRecorder(t, db)})
	if err := a.LoadPolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
	return zombieNode{a: a, m: m, db: db}
}

func policyFile(grants ...string) []policy.File {
	var b strings.Builder
	b.WriteString(strings.Split(testPolicy, "grants:\n")[0] + "grants:\n")
	for _, g := range grants {
		b.WriteString(strings.ReplaceAll(strings.Split(testPolicy, "grants:\n")[1], "  deploy:", "  "+g+":"))
	}
	return []policy.File{{Name: "p.yaml", Data: []byte(b.String())}}
}

// Node B has not yet followed a policy version node A applied, which
// removed a grant: B's exchange for that grant is decided again under the
// version in force when it commits, and refused. When B follows the
// version, it revokes live leases of removed grants itself, even those the
// applying node never revoked (it stopped in between).
func TestNoZombieTokens(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			na := newZombieNode(t, b.DB)
			nb := newZombieNode(t, b.Another(t))
			if _, err := na.a.ApplyPolicy(ctx, policyFile("deploy", "read", "build"), "test"); err != nil {
				t.Fatal(err)
			}
			if err := nb.a.SyncPolicy(ctx); err != nil {
				t.Fatal(err)
			}
			old, err := nb.a.Exchange(ctx, ExchangeRequest{SubjectToken: "x", Scope: []string{"deploy"}})
			if err != nil {
				t.Fatal(err)
			}
			readTok, err := nb.a.Exchange(ctx, ExchangeRequest{SubjectToken: "x", Scope: []string{"read"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := na.a.ApplyPolicy(ctx, policyFile("read", "build"), "test"); err != nil {
				t.Fatal(err)
			}
			// B still holds the old version in memory.
			if nb.a.PolicyVersion() != 1 {
				t.Fatalf("node B at version %d", nb.a.PolicyVersion())
			}
			_, err = nb.a.Exchange(ctx, ExchangeRequest{SubjectToken: "x", Scope: []string{"deploy"}})
			var re *Error
			if !errors.As(err, &re) || re.Code != "invalid_scope" {
				t.Fatalf("exchange for a removed grant on a node behind: %v", err)
			}
			if nb.a.PolicyVersion() != 2 {
				t.Fatalf("node B did not follow: version %d", nb.a.PolicyVersion())
			}
			// B revoked its own lease of the removed grant on following.
			if _, err := nb.m.Lookup(ctx, old.Token); !errors.Is(err, lease.ErrRevoked) {
				t.Fatalf("lease of a removed grant on node B: %v", err)
			}
			// A version stored by a node that stopped before revoking:
			// B, following it, revokes in the store.
			p, err := policy.Parse(policyFile("build"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := na.db.PutPolicyVersion(ctx, store.PolicyVersion{Version: 3, Hash: p.Hash, Source: p.Source, AppliedAt: time.Now(), AppliedBy: "test"}); err != nil {
				t.Fatal(err)
			}
			if err := nb.a.SyncPolicy(ctx); err != nil {
				t.Fatal(err)
			}
			l, err := na.db.LeaseByID(ctx, readTok.LeaseID)
			if err != nil || l.RevokedAt.IsZero() {
				t.Fatalf("lease of a grant version 3 removed: revoked at %v, %v", l.RevokedAt, err)
			}
		})
	}
}

// A node that has not yet followed (SyncPolicy, every 2 s) the version
// another node applied plans, lists revocations and applies against the
// latest stored version, not the one it holds: a roll-back to the version
// it holds is applied (not answered "unchanged" and lost), and a grant only
// the latest version has is listed for confirmation (the API's 409
// revocation_not_confirmed) and its live tokens are revoked with the apply.
func TestApplyOnANodeBehindDecidesAgainstTheLatestVersion(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		apply []policy.File // applied on nodes still at version 1
	}{
		{"roll back to version 1", policyFile("deploy")},
		{"remove the grant only version 2 has", policyFile("deploy", "read")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := storetest.Postgres(t)
			na := newZombieNode(t, b.DB)
			if _, err := na.a.ApplyPolicy(ctx, policyFile("deploy"), "test"); err != nil {
				t.Fatal(err)
			}
			// One node behind for each entry point: each syncs.
			planner, lister, applier := newZombieNode(t, b.Another(t)), newZombieNode(t, b.Another(t)), newZombieNode(t, b.Another(t))
			// Node A adds grant build (v2) and a job takes a token of it.
			if _, err := na.a.ApplyPolicy(ctx, policyFile("deploy", "build"), "test"); err != nil {
				t.Fatal(err)
			}
			tok, err := na.a.Exchange(ctx, ExchangeRequest{SubjectToken: "x", Scope: []string{"build"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []zombieNode{planner, lister, applier} {
				if v := n.a.PolicyVersion(); v != 1 {
					t.Fatalf("a node is at version %d, want 1", v)
				}
			}

			cs, err := planner.a.Plan(ctx, tc.apply)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(cs, func(c policy.Change) bool { return c.String() == "- grants.build" }) {
				t.Errorf("plan on a node behind = %v, want it to remove grant build", cs)
			}
			p, err := lister.a.ParsePolicy(ctx, tc.apply)
			if err != nil {
				t.Fatal(err)
			}
			revs, err := lister.a.Revocations(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(revs) != 1 || revs[0] != (GrantRevocation{Grant: "build", Leases: 1}) {
				t.Errorf("revocations listed on a node behind = %v, want build's 1 live token", revs)
			}
			res, err := applier.a.ApplyPolicy(ctx, tc.apply, "test")
			if err != nil {
				t.Fatal(err)
			}
			latest, err := na.db.LatestPolicy(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Unchanged || res.Version != 3 || latest.Version != 3 || latest.Hash != p.Hash {
				t.Errorf("apply on a node behind = %+v; version %d in force, hash match %v: not applied over version 2",
					res, latest.Version, latest.Hash == p.Hash)
			}
			l, err := na.db.LeaseByID(ctx, tok.LeaseID)
			if err != nil {
				t.Fatal(err)
			}
			if res.Revoked != 1 || l.RevokedAt.IsZero() {
				t.Errorf("grant build's live token not revoked with the apply (Revoked %d)", res.Revoked)
			}
		})
	}
}
