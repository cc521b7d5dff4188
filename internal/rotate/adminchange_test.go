package rotate

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// changeAt is the vault of a rotation during which an admin deletes the
// secret or puts a new value of it, just before the rotation's write at
// step at: "put" (a command rotator's), "stage" (postgres_password, its
// ALTER ROLE not committed yet) or "promote" (its ALTER ROLE committed).
type changeAt struct {
	Vault
	at     string
	change func() error
}

func (c changeAt) now(step string) {
	if c.at == step {
		if err := c.change(); err != nil {
			panic(err)
		}
	}
}

func (c changeAt) PutKeepingNoted(ctx context.Context, name string, v []byte, base int, keep time.Time, n *store.Note) (int, error) {
	c.now("put")
	return c.Vault.PutKeepingNoted(ctx, name, v, base, keep, n)
}

func (c changeAt) Stage(ctx context.Context, name string, v []byte, base int) (int, error) {
	c.now("stage")
	return c.Vault.Stage(ctx, name, v, base)
}

func (c changeAt) Promote(ctx context.Context, name string, version, base int, keep time.Time, n *store.Note) error {
	c.now("promote")
	return c.Vault.Promote(ctx, name, version, base, keep, n)
}

// An admin deletes a secret (DELETE /v1/secrets/{name}), or puts a new
// value of it (PUT), while its rotation runs: the admin's change stands,
// and the rotation fails with ErrChanged, recorded (status 409) and
// counted. Before, the rotation stored a value derived from the one it
// had read: a deleted secret was live (and injected) again, its schedule
// gone, and an accepted value was overwritten. For postgres_password, a
// change before the value is staged rolls its ALTER ROLE back; one after
// its ALTER ROLE committed leaves the role with the rotation's password,
// and the next attempt of a secret still rotated sets one for the value
// then in use.
func TestAdminChangeDuringRotationStands(t *testing.T) {
	const adminValue = "admin-new-value-0123" // mayfly:allow
	tests := []struct {
		name   string
		at     string // the write the change comes before (changeAt)
		delete bool   // the admin deletes; else puts a new value
	}{
		{"command rotator, delete", "put", true},
		{"command rotator, put", "put", false},
		{"postgres_password before staging, delete", "stage", true},
		{"postgres_password before staging, put", "stage", false},
		{"postgres_password after ALTER ROLE, delete", "promote", true},
		{"postgres_password after ALTER ROLE, put", "promote", false},
	}
	suffix := strings.ToLower(rand.Text()[:10])
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					bb := storetest.SQLite(t)
					if b.Name != "sqlite" {
						bb = storetest.Postgres(t)
					}
					r := newRig(t, bb, map[string][]string{"x": {script(t, `read v; printf 'rotated-%s' "$v"`)}}, key(t))
					old, role, oldPW := "old-value-0123456789", "", "" // mayfly:allow
					spec := `{"every":"1h","via":{"command":"x"}}`
					var pg *pgFixture
					if tt.at != "put" {
						pg = newPG(t)
						role, oldPW = fmt.Sprintf("mayfly_rot_change_%s%d%s", suffix, i, b.Name[:1]), "old-"+rand.Text()
						pg.role(t, role, oldPW)
						old = pg.dsnFor(t, role, oldPW)
						r.put(t, "pg-admin", []byte(pg.admin), "")
						spec = fmt.Sprintf(`{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":%q}}}`, role)
					}
					r.put(t, "api", []byte(old), spec)
					admin := adminValue
					if role != "" {
						admin = pg.dsnFor(t, role, adminValue)
					}
					r.m.cfg.Vault = changeAt{Vault: r.vault, at: tt.at, change: func() error {
						if tt.delete {
							return r.vault.Delete(ctx, "api")
						}
						_, err := r.vault.Put(ctx, "api", []byte(admin))
						return err
					}}

					_, err := r.m.Rotate(ctx, "api", "schedule", "")
					if !errors.Is(err, ErrChanged) || errors.Is(err, ErrFailed) {
						t.Fatalf("err = %v, want ErrChanged", err)
					}
					if tt.at == "stage" && !pgroletest.SCRAMAccepts(t, pg.verifier(t, role), oldPW) {
						t.Fatal("the role's password changed although the rotation stored nothing")
					}
					if _, _, err := r.vault.RevealPending(ctx, "api"); !errors.Is(err, secret.ErrNotFound) {
						t.Fatalf("a staged value is left: %v", err)
					}
					last := r.log.evs[len(r.log.evs)-1]
					if last.Type != AuditType || last.Status != 409 || !strings.Contains(last.Reason, "replaced or deleted") {
						t.Fatalf("outcome entry = %+v", last)
					}
					if j := r.log.json(t); strings.Contains(j, old) || strings.Contains(j, adminValue) || (oldPW != "" && strings.Contains(j, oldPW)) {
						t.Fatal("a value reached the audit log")
					}
					if tt.delete {
						if _, ver, err := r.vault.Reveal(ctx, "api"); !errors.Is(err, secret.ErrNotFound) {
							t.Fatalf("the deleted secret is live again: v%d (err %v)", ver, err)
						}
						if _, err := r.m.Get(ctx, "api"); !errors.Is(err, ErrNoRotation) {
							t.Fatalf("the deleted secret's rotation is back: %v", err)
						}
						return
					}
					if got := r.value(t, "api"); got != admin {
						t.Fatal("the admin's value was overwritten by the rotation")
					}
					if st, err := r.m.Get(ctx, "api"); err != nil || st.Failures != 1 || !strings.Contains(st.LastError, "replaced or deleted") {
						t.Fatalf("state = %+v %v", st, err)
					}
					if role == "" {
						return
					}
					// The next attempt rotates the admin's value: the role
					// then has the password of the value in use.
					r.m.cfg.Vault = r.vault
					r.clock.add(time.Hour)
					if _, err := r.m.Rotate(ctx, "api", "schedule", ""); err != nil {
						t.Fatal(err)
					}
					pw, err := passwordIn([]byte(r.value(t, "api")))
					if err != nil || !pgroletest.SCRAMAccepts(t, pg.verifier(t, role), pw) {
						t.Fatalf("the role does not have the password in use: %v", err)
					}
				})
			}
		})
	}
}
