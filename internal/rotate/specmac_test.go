package rotate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A database writer without the node's keys could rewrite a secret's
// stored rotation settings (or plant some for a secret without any), and
// the next attempt acted on them: an ALTER ROLE of any role with any
// stored admin DSN, or the secret fed to another rotator of the config
// file. Now settings whose MAC does not verify (none, one made by another
// key, or another secret's) are refused before anything reads them:
// nothing runs, the value stays, the refusal is audited (502, refused:
// the upstream_failure alert fires), counted
// and logged; settings an admin sets again work.
func TestUnauthenticatedRotationSettingsAreRefused(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			dir := t.TempDir()
			// Either rotator leaves a mark of having run.
			good := script(t, `read v; touch "`+dir+`/good"; printf 'new-%s' "$v"`)
			evil := script(t, `read v; touch "`+dir+`/evil"; printf 'new-%s' "$v"`)
			r := newRig(t, b, map[string][]string{"good": {good}, "evil": {evil}}, key(t))
			r.put(t, "api", secretValue("api-"), `{"every":"1h","via":{"command":"good"}}`)
			r.put(t, "other", secretValue("other-"), `{"every":"2h","via":{"command":"evil"}}`)
			r.put(t, "plain", secretValue("plain-"), "")
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := b.DB.SQL().ExecContext(ctx, b.DB.Rebind(q), args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			otherRow, err := b.DB.GetRotation(ctx, "other")
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name   string
				secret string
				plant  func()
			}{
				{"settings rewritten", "api", func() {
					exec(`UPDATE secret_rotations SET spec = ? WHERE name = 'api'`, `{"every":"1h","via":{"command":"evil"}}`)
				}},
				{"another secret's settings and MAC", "api", func() {
					exec(`UPDATE secret_rotations SET spec = ?, mac = ? WHERE name = 'api'`, otherRow.Spec, otherRow.MAC)
				}},
				{"MAC removed", "api", func() { exec(`UPDATE secret_rotations SET mac = NULL WHERE name = 'api'`) }},
				{"planted for a secret without rotation", "plain", func() {
					exec(`INSERT INTO secret_rotations (name, spec, next_at) VALUES ('plain', ?, 0)`, `{"every":"1h","via":{"command":"evil"}}`)
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					os.Remove(filepath.Join(dir, "evil"))
					os.Remove(filepath.Join(dir, "good"))
					before := r.value(t, tc.secret)
					refused := r.refused.Load()
					tc.plant()
					_, err := r.m.Rotate(ctx, tc.secret, "alice", "")
					if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, ErrFailed) {
						t.Fatalf("rotate over unauthenticated settings: %v", err)
					}
					// Due at once: the schedule refuses it too.
					exec(`UPDATE secret_rotations SET next_at = 0 WHERE name = ?`, tc.secret)
					r.m.RunDue(ctx)
					for _, f := range []string{"evil", "good"} {
						if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
							t.Fatalf("the %s rotator ran", f)
						}
					}
					if got := r.value(t, tc.secret); got != before {
						t.Fatal("the value changed")
					}
					if n := r.refused.Load() - refused; n != 2 {
						t.Fatalf("refusals counted %d, want 2", n)
					}
					if j := r.log.json(t); !strings.Contains(j, `"status":502`) || !strings.Contains(j, `"refused":true`) || !strings.Contains(j, "settings not authenticated") {
						t.Fatalf("the refusal is not audited: %s", j)
					}
					// An admin setting the rotation again makes it work.
					s, err := r.m.Parse(ctx, tc.secret, []byte(`{"every":"1h","via":{"command":"good"}}`), true)
					if err != nil {
						t.Fatal(err)
					}
					if err := r.m.Set(ctx, tc.secret, &s); err != nil {
						t.Fatal(err)
					}
					if _, err := r.m.Rotate(ctx, tc.secret, "alice", ""); err != nil {
						t.Fatalf("rotate after the admin set it again: %v", err)
					}
					if _, err := os.Stat(filepath.Join(dir, "good")); err != nil || r.value(t, tc.secret) == before {
						t.Fatalf("the re-set rotation did not run: %v", err)
					}
				})
			}
		})
	}
}

// An upgrade seals the settings stored before they were authenticated
// (once, audited), which then rotate; over a database whose rotations are
// authenticated already it seals nothing, so settings planted without a
// MAC stay refused.
func TestLegacyRotationSettingsSealedAtUpgrade(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			dir := t.TempDir()
			good := script(t, `read v; touch "`+dir+`/good"; printf 'new-%s' "$v"`)
			r := newRig(t, b, map[string][]string{"good": {good}}, key(t))
			r.put(t, "api", secretValue("api-"), `{"every":"1h","via":{"command":"good"}}`)
			r.put(t, "db", secretValue("db-"), `{"every":"1h","via":{"command":"good"}}`)
			exec := func(q string) {
				t.Helper()
				if _, err := b.DB.SQL().ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			// As the previous release left them: no MAC.
			exec(`UPDATE secret_rotations SET mac = NULL`)
			sealed, err := r.m.SealLegacy(ctx, b.DB, "upgrade")
			if err != nil || len(sealed) != 2 {
				t.Fatalf("sealed %v, %v; want both", sealed, err)
			}
			if j := r.log.json(t); !strings.Contains(j, `"reason":"seal"`) {
				t.Fatalf("the sealing is not audited: %s", j)
			}
			if _, err := r.m.Rotate(ctx, "api", "alice", ""); err != nil {
				t.Fatalf("rotate a sealed legacy rotation: %v", err)
			}
			// A sealed database: a MAC removed is not sealed again.
			exec(`UPDATE secret_rotations SET mac = NULL WHERE name = 'db'`)
			if sealed, err := r.m.SealLegacy(ctx, b.DB, "upgrade"); err != nil || len(sealed) != 0 {
				t.Fatalf("sealed %v, %v over a sealed database; want none", sealed, err)
			}
			if _, err := r.m.Rotate(ctx, "db", "alice", ""); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("rotate db: %v, want a refusal", err)
			}
		})
	}
}
