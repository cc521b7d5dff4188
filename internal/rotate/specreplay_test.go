package rotate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A rotation's MAC covers its secret's name and settings only, so a
// database writer without the node's keys who kept (or read) settings a
// node once wrote could put them back after an admin changed or removed
// them: the next attempt fed the secret to the rotator (or ALTERed the role
// with the admin DSN) of those older settings. Now the rotations' head,
// authenticated, lists the MAC in force for each secret with a generation
// that only grows: older settings, alone or with the head of their time,
// are refused (audited 502, counted, logged), and settings an admin sets
// again work.
func TestReplayedRotationSettingsAreRefused(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			dir := t.TempDir()
			good := script(t, `read v; touch "`+dir+`/good"; printf 'new-%s' "$v"`)
			evil := script(t, `read v; touch "`+dir+`/evil"; printf 'new-%s' "$v"`)
			r := newRig(t, b, map[string][]string{"good": {good}, "evil": {evil}}, key(t))
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := b.DB.SQL().ExecContext(ctx, b.DB.Rebind(q), args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			set := func(name, spec string) {
				t.Helper()
				if spec == "" {
					if err := r.m.Set(ctx, name, nil); err != nil {
						t.Fatal(err)
					}
					return
				}
				s, err := r.m.Parse(ctx, name, []byte(spec), true)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.m.Set(ctx, name, &s); err != nil {
					t.Fatal(err)
				}
			}
			const evilSpec, goodSpec = `{"every":"1h","via":{"command":"evil"}}`, `{"every":"1h","via":{"command":"good"}}`
			for _, tc := range []struct {
				name     string
				then     string // what the admin sets after the older settings ("": removes them)
				withHead bool   // the head of the older settings' time is put back too
			}{
				{"older settings put back", goodSpec, false},
				{"removed settings put back", "", false},
				{"older settings and their head put back", goodSpec, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					name := strings.ReplaceAll(tc.name, " ", "-")
					if _, err := r.vault.Put(ctx, name, secretValue("v-")); err != nil {
						t.Fatal(err)
					}
					set(name, evilSpec) // genuine, once
					old, err := b.DB.GetRotation(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					var head store.RotationHead
					if err := b.DB.SQL().QueryRowContext(ctx, `SELECT gen, manifest, mac FROM rotation_head WHERE id = 1`).Scan(&head.Gen, &head.Manifest, &head.MAC); err != nil {
						t.Fatal(err)
					}
					set(name, tc.then)
					set(name, tc.then) // twice: the older head is two generations behind
					if tc.then != "" {
						// This node rotates under the new settings: it has
						// seen the head that lists them.
						if _, err := r.m.Rotate(ctx, name, "alice", ""); err != nil {
							t.Fatalf("rotate under the admin's settings: %v", err)
						}
					}
					os.Remove(filepath.Join(dir, "evil"))
					os.Remove(filepath.Join(dir, "good"))
					before := r.value(t, name)
					refused := r.refused.Load()

					// The attack: the older genuine row written back.
					exec(`DELETE FROM secret_rotations WHERE name = ?`, name)
					exec(`INSERT INTO secret_rotations (name, spec, mac, next_at) VALUES (?, ?, ?, 0)`, name, old.Spec, old.MAC)
					if tc.withHead {
						exec(`UPDATE rotation_head SET gen = ?, manifest = ?, mac = ? WHERE id = 1`, head.Gen, head.Manifest, head.MAC)
					}
					_, err = r.m.Rotate(ctx, name, "alice", "")
					if !errors.Is(err, ErrUnauthenticated) {
						t.Fatalf("rotate over replayed settings: %v", err)
					}
					if _, err := os.Stat(filepath.Join(dir, "evil")); err == nil {
						t.Fatal("the older settings' rotator ran")
					}
					if got := r.value(t, name); got != before {
						t.Fatal("the value changed")
					}
					if n := r.refused.Load() - refused; n != 1 {
						t.Fatalf("refusals counted %d, want 1", n)
					}
					if j := r.log.json(t); !strings.Contains(j, `"status":502`) || !strings.Contains(j, `"refused":true`) {
						t.Fatalf("the refusal is not audited: %s", j)
					}
					// An admin setting the rotation again makes it work.
					set(name, goodSpec)
					if _, err := r.m.Rotate(ctx, name, "alice", ""); err != nil {
						t.Fatalf("rotate after the admin set it again: %v", err)
					}
					if _, err := os.Stat(filepath.Join(dir, "good")); err != nil {
						t.Fatalf("the re-set rotation did not run: %v", err)
					}
				})
			}
		})
	}
}
