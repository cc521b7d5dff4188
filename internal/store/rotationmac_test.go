package store_test

import (
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
)

// A database the previous release (schema 15) left, with rotations,
// upgrades: they keep their settings and schedule, have no MAC until
// sealed, and sealing sets their MACs only on a database never sealed,
// and only over the settings the MAC was made from.
func TestRotationsUpgradeUnsealedThenSealed(t *testing.T) {
	for _, m := range readOnlyBackends() {
		t.Run(m.name, func(t *testing.T) {
			next := time.Date(2025, 3, 1, 0, 0, 0, 42, time.UTC)
			b := m.make(t, func(b roBackend) {
				if err := store.CreateAtSchema(ctx, b.cfg, 15); err != nil {
					t.Fatal(err)
				}
				for _, n := range []string{"a", "b"} {
					b.exec(t, `INSERT INTO secret_rotations (name, spec, next_at) VALUES (?, ?, ?)`, n, `{"every":"1h"}`, next.UnixNano())
				}
			})
			db, err := store.Open(ctx, b.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			un, err := db.UnsealedRotations(ctx)
			if err != nil || len(un) != 2 || un[0].Name != "a" || un[1].Spec != `{"every":"1h"}` || !un[0].NextAt.Equal(next) || un[0].MAC != nil {
				t.Fatalf("unsealed after upgrade: %+v, %v", un, err)
			}
			if all, sealed, err := db.RotationCounts(ctx); err != nil || all != 2 || sealed != 0 {
				t.Fatalf("counts %d, %d, %v; want 2 rotations, none sealed", all, sealed, err)
			}
			macs := map[string]store.SealedRotation{"a": {Spec: `{"every":"1h"}`, MAC: []byte("ma")}, "b": {Spec: `{"every":"1h"}`, MAC: []byte("mb")}}
			// b sealed by another node meanwhile: the database is sealed,
			// so a (planted, as no sealing leaves one behind) stays
			// without a MAC.
			b.exec(t, `UPDATE secret_rotations SET mac = ? WHERE name = 'b'`, []byte("other"))
			if sealed, err := db.SealRotations(ctx, macs, nil); err != nil || len(sealed) != 0 {
				t.Fatalf("sealed %v, %v over a sealed database; want none", sealed, err)
			}
			// Never sealed, but a's settings changed since they were read:
			// only b is sealed.
			b.exec(t, `UPDATE secret_rotations SET mac = NULL`)
			b.exec(t, `UPDATE secret_rotations SET spec = ? WHERE name = 'a'`, `{"every":"2h"}`)
			sealed, err := db.SealRotations(ctx, macs, nil)
			if err != nil || len(sealed) != 1 || sealed[0] != "b" {
				t.Fatalf("sealed %v, %v; want [b]", sealed, err)
			}
			if r, err := db.GetRotation(ctx, "b"); err != nil || string(r.MAC) != "mb" {
				t.Fatalf("b: MAC %q, %v", r.MAC, err)
			}
			if r, err := db.GetRotation(ctx, "a"); err != nil || r.MAC != nil {
				t.Fatalf("a: MAC %q, %v; want none", r.MAC, err)
			}
			// A rotation set anew keeps its MAC with its settings.
			if err := db.SetRotation(ctx, "a", `{"every":"3h"}`, []byte("m3"), next); err != nil {
				t.Fatal(err)
			}
			if r, err := db.GetRotation(ctx, "a"); err != nil || string(r.MAC) != "m3" || r.Spec != `{"every":"3h"}` {
				t.Fatalf("a after SetRotation: %+v, %v", r, err)
			}
		})
	}
}
