package store_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// A database the previous release (schema 12) left, with its policy
// versions, upgrades: the versions keep everything, have no MAC until
// sealed, and sealing sets their MACs only on a database never sealed.
func TestPolicyVersionsUpgradeUnsealedThenSealed(t *testing.T) {
	for _, m := range readOnlyBackends() {
		t.Run(m.name, func(t *testing.T) {
			at := time.Date(2025, 3, 1, 0, 0, 0, 42, time.UTC)
			b := m.make(t, func(b roBackend) {
				if err := store.CreateAtSchema(ctx, b.cfg, 12); err != nil {
					t.Fatal(err)
				}
				for v := 1; v <= 2; v++ {
					b.exec(t, `INSERT INTO policy_versions (version, hash, source, applied_at, applied_by) VALUES (?, ?, ?, ?, ?)`,
						v, "h", []byte("grants: {}"), at.UnixNano(), "policy-file")
				}
				b.exec(t, `UPDATE policy_head SET version = 2 WHERE id = 1`)
			})
			db, err := store.Open(ctx, b.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			un, err := db.UnsealedPolicyVersions(ctx)
			if err != nil || len(un) != 2 || un[0].Version != 1 || !un[0].AppliedAt.Equal(at) || string(un[1].Source) != "grants: {}" || un[1].AppliedBy != "policy-file" {
				t.Fatalf("unsealed after upgrade: %+v, %v", un, err)
			}
			latest, err := db.LatestPolicy(ctx)
			if err != nil || latest.Version != 2 || latest.MAC != nil {
				t.Fatalf("latest %+v, %v: want version 2 without a MAC", latest, err)
			}
			if all, sealed, err := db.PolicyVersionCounts(ctx); err != nil || all != 2 || sealed != 0 {
				t.Fatalf("counts %d, %d, %v; want 2 versions, none sealed", all, sealed, err)
			}
			// Version 2 sealed by another node meanwhile: the database is
			// sealed, so version 1 (planted, as no sealing leaves one
			// behind) is left without a MAC.
			b.exec(t, `UPDATE policy_versions SET mac = ? WHERE version = 2`, []byte("other"))
			sealed, err := db.SealPolicyVersions(ctx, map[int64][]byte{1: []byte("m1"), 2: []byte("m2")}, nil)
			if err != nil || len(sealed) != 0 {
				t.Fatalf("sealed %v, %v over a sealed database; want none", sealed, err)
			}
			if all, sealed, err := db.PolicyVersionCounts(ctx); err != nil || all != 2 || sealed != 1 {
				t.Fatalf("counts %d, %d, %v; want 2 versions, 1 sealed", all, sealed, err)
			}
			// A database never sealed: every version gets its MAC.
			b.exec(t, `UPDATE policy_versions SET mac = NULL`)
			sealed, err = db.SealPolicyVersions(ctx, map[int64][]byte{1: []byte("m1"), 2: []byte("m2")}, nil)
			if err != nil || len(sealed) != 2 {
				t.Fatalf("sealed %v, %v; want [1 2]", sealed, err)
			}
			for v, want := range map[int64]string{1: "m1", 2: "m2"} {
				pv, err := db.PolicyVersionAt(ctx, v)
				if err != nil || !bytes.Equal(pv.MAC, []byte(want)) {
					t.Fatalf("version %d MAC %q, %v; want %q", v, pv.MAC, err, want)
				}
			}
			if un, err := db.UnsealedPolicyVersions(ctx); err != nil || len(un) != 0 {
				t.Fatalf("unsealed after sealing: %v, %v", un, err)
			}
		})
	}
}
