package authority

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

const (
	macPolicy = `issuers:
  ci: {url: "http://127.0.0.1:9/ci", audience: "https://mayfly.test"}
upstreams:
  api:
    url: %s
    credential: {secret: gh}
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository_id: "1"}}]
`
	genuineURL  = "http://127.0.0.1:2"
	attackerURL = "http://198.51.100.7"
)

func macPolicyFor(url string) []byte { return []byte(strings.Replace(macPolicy, "%s", url, 1)) }

var testPolicyKey = []byte("0123456789abcdef0123456789abcdef") // mayfly:allow test key

// macNode is an Authority with a policy key over db, and what it refused.
type macNode struct {
	a       *Authority
	rec     *recorder
	refused []int64
}

func newMACNode(t *testing.T, db *store.DB, key []byte) *macNode {
	t.Helper()
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef")) // mayfly:allow test key
	if err != nil {
		t.Fatal(err)
	}
	n := &macNode{rec: newRecorder(t, db)}
	n.a = New(Config{Leases: lease.New(db, h, lease.Options{}), Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: n.rec,
		PolicyKey: key, PolicyRefused: func(v int64) { n.refused = append(n.refused, v) }})
	if err := n.a.LoadPolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *macNode) apply(t *testing.T, src []byte) {
	t.Helper()
	if _, err := n.a.ApplyPolicy(context.Background(), []policy.File{{Name: "p.yaml", Data: src}}, "alice"); err != nil {
		t.Fatal(err)
	}
}

// A database writer without the node's keys can write policy_versions:
// before, a row they inserted (or edited) was put in force by the next
// sync or start, pointing an upstream, and the credential the gateway
// injects, at their server. Now every version carries a MAC under a key
// of the vault and a version whose MAC does not verify is refused: the
// running node keeps the version it had, a starting one refuses to start.
func TestStoredPolicyVersionTamperingIsRefused(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	planted := macPolicyFor(attackerURL)
	tests := []struct {
		name string
		// tamper changes the database after version 1 (genuine); it
		// returns the version it made newest.
		tamper func(t *testing.T, db *store.DB) int64
	}{
		{"planted new version without a MAC", func(t *testing.T, db *store.DB) int64 {
			plant(t, db, store.PolicyVersion{Version: 2, Hash: "h", Source: planted, AppliedAt: at, AppliedBy: "alice"})
			return 2
		}},
		{"planted new version with a made-up MAC", func(t *testing.T, db *store.DB) int64 {
			plant(t, db, store.PolicyVersion{Version: 2, Hash: "h", Source: planted, AppliedAt: at, AppliedBy: "alice", MAC: make([]byte, 32)})
			return 2
		}},
		{"planted new version with a MAC under another key", func(t *testing.T, db *store.DB) int64 {
			pv := store.PolicyVersion{Version: 2, Hash: "h", Source: planted, AppliedAt: at, AppliedBy: "alice"}
			pv.MAC = PolicyMAC([]byte("another key, not the cluster's!!"), pv) // mayfly:allow test key
			plant(t, db, pv)
			return 2
		}},
		{"version 1's MAC and fields copied to version 2 with another source", func(t *testing.T, db *store.DB) int64 {
			v1, err := db.PolicyVersionAt(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			v1.Version, v1.Source = 2, planted
			plant(t, db, v1)
			return 2
		}},
		{"version 1 copied as version 2 with its MAC", func(t *testing.T, db *store.DB) int64 {
			v1, err := db.PolicyVersionAt(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			v1.Version = 2
			plant(t, db, v1)
			return 2
		}},
		{"source of the latest version edited", func(t *testing.T, db *store.DB) int64 {
			execSQL(t, db, `UPDATE policy_versions SET source = ? WHERE version = 1`, planted)
			return 1
		}},
		{"applied_by of the latest version edited", func(t *testing.T, db *store.DB) int64 {
			execSQL(t, db, `UPDATE policy_versions SET applied_by = 'bob' WHERE version = 1`)
			return 1
		}},
		{"applied_at of the latest version edited", func(t *testing.T, db *store.DB) int64 {
			execSQL(t, db, `UPDATE policy_versions SET applied_at = applied_at + 1 WHERE version = 1`)
			return 1
		}},
		{"MAC of the latest version removed", func(t *testing.T, db *store.DB) int64 {
			execSQL(t, db, `UPDATE policy_versions SET mac = NULL WHERE version = 1`)
			return 1
		}},
	}
	for _, b := range storetest.Backends(t) {
		for _, tt := range tests {
			t.Run(b.Name+"/"+tt.name, func(t *testing.T) {
				db := b.Another(t)
				execSQL(t, db, `DELETE FROM policy_versions`)
				execSQL(t, db, `UPDATE policy_head SET version = 0 WHERE id = 1`)
				running := newMACNode(t, db, testPolicyKey)
				running.apply(t, macPolicyFor(genuineURL))
				if running.a.PolicyVersion() != 1 {
					t.Fatalf("version %d in force, want 1", running.a.PolicyVersion())
				}
				bad := tt.tamper(t, db)

				// A running node keeps enforcing version 1, and says so once.
				for range 2 {
					if err := running.a.SyncPolicy(ctx); err != nil {
						t.Fatalf("sync: %v", err)
					}
				}
				if v, url := running.a.PolicyVersion(), running.a.Policy().Upstreams["api"].URL; v != 1 || url != genuineURL {
					t.Fatalf("after sync: version %d in force, upstream %s; want 1 and %s", v, url, genuineURL)
				}
				if bad > 1 && (len(running.refused) != 1 || running.refused[0] != bad) {
					t.Fatalf("refusals reported %v, want [%d] once", running.refused, bad)
				}

				// A starting node has no good version to keep: it refuses.
				fresh := New(Config{Leases: running.a.cfg.Leases, Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: running.rec, PolicyKey: testPolicyKey})
				err := fresh.LoadPolicy(ctx)
				var ue *UnauthenticatedPolicyError
				if !errors.As(err, &ue) || ue.Version != bad || !errors.Is(err, ErrPolicyUnauthenticated) {
					t.Fatalf("load: %v, want version %d refused", err, bad)
				}
				if strings.Contains(err.Error(), attackerURL) {
					t.Fatalf("the refusal quotes the source: %v", err)
				}
				if fresh.PolicyVersion() != 0 || len(fresh.Policy().Upstreams) != 0 {
					t.Fatal("a refused version was put in force at start")
				}

				// An admin replaces it with a genuine version, planned
				// against the version in force, which every node follows.
				if _, err := running.a.ApplyPolicyOver(ctx, []policy.File{{Name: "p.yaml", Data: macPolicyFor(genuineURL + "1")}}, "alice", running.a.PolicyVersion()); err != nil {
					t.Fatalf("apply planned against the version in force: %v", err)
				}
				if err := fresh.LoadPolicy(ctx); err != nil {
					t.Fatalf("load after a genuine apply over it: %v", err)
				}
				if url := fresh.Policy().Upstreams["api"].URL; fresh.PolicyVersion() != bad+1 || url != genuineURL+"1" {
					t.Fatalf("version %d with upstream %s in force, want %d and %s1", fresh.PolicyVersion(), url, bad+1, genuineURL)
				}
			})
		}
	}
}

// The upgrade seals the rows from before MACs (NULL), in one transaction
// with a policy.seal entry, and nothing else: a row with a wrong MAC stays
// refused, and a second run finds nothing to seal.
func TestSealLegacyPolicies(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			db := b.DB
			at := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
			// As the previous release wrote them: no MAC.
			plant(t, db, store.PolicyVersion{Version: 1, Hash: "h1", Source: macPolicyFor(genuineURL), AppliedAt: at, AppliedBy: "policy-file"})
			plant(t, db, store.PolicyVersion{Version: 2, Hash: "h2", Source: macPolicyFor(genuineURL + "2"), AppliedAt: at.Add(time.Hour), AppliedBy: "alice"})
			execSQL(t, db, `UPDATE policy_head SET version = 2 WHERE id = 1`)
			h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef")) // mayfly:allow test key
			rec := newRecorder(t, db)
			a := New(Config{Leases: lease.New(db, h, lease.Options{}), Verifier: identity.NewVerifier(identity.Options{}), Policies: db, Audit: rec, PolicyKey: testPolicyKey})
			if err := a.LoadPolicy(ctx); !errors.Is(err, ErrPolicyUnauthenticated) {
				t.Fatalf("load before sealing: %v, want refused", err)
			}
			sealed, err := a.SealLegacyPolicies(ctx, "upgrade")
			if err != nil || len(sealed) != 2 || sealed[0] != 1 || sealed[1] != 2 {
				t.Fatalf("sealed %v, %v; want [1 2]", sealed, err)
			}
			if err := a.LoadPolicy(ctx); err != nil {
				t.Fatal(err)
			}
			if a.PolicyVersion() != 2 || a.Policy().Upstreams["api"].URL != genuineURL+"2" {
				t.Fatalf("version %d in force", a.PolicyVersion())
			}
			ev, ok := rec.last(audit.TypePolicySeal)
			if !ok || ev.Count != 2 || ev.Admin != "upgrade" {
				t.Fatalf("policy.seal entry %+v (found %v)", ev, ok)
			}
			if again, err := a.SealLegacyPolicies(ctx, "upgrade"); err != nil || len(again) != 0 {
				t.Fatalf("second sealing: %v, %v", again, err)
			}
			if n := rec.count(audit.TypePolicySeal); n != 1 {
				t.Fatalf("%d policy.seal entries, want 1", n)
			}
		})
	}
}

// plant inserts pv as a database writer would, policy_head following.
func plant(t *testing.T, db *store.DB, pv store.PolicyVersion) {
	t.Helper()
	var mac any
	if pv.MAC != nil {
		mac = pv.MAC
	}
	execSQL(t, db, `INSERT INTO policy_versions (version, hash, source, applied_at, applied_by, mac) VALUES (?, ?, ?, ?, ?, ?)`,
		pv.Version, pv.Hash, pv.Source, pv.AppliedAt.UnixNano(), pv.AppliedBy, mac)
	execSQL(t, db, `UPDATE policy_head SET version = ? WHERE id = 1`, pv.Version)
}

func execSQL(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.SQL().ExecContext(context.Background(), db.Rebind(q), args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
