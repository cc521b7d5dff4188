package server

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// An installation from before rotation settings had MACs upgrades: its
// first start seals them (once, recorded in the data dir) and they
// rotate. A database writer who then points the settings at another
// rotator and makes the database look unsealed again (every MAC removed)
// does not get them sealed: the rotation is refused (502, counted) and
// the other rotator never runs. Settings an admin puts again rotate.
func TestLegacyRotationSettingsSealedOnceAtUpgrade(t *testing.T) {
	dir := t.TempDir()
	bump := rotatorScript(t, `read v; printf '%s-r' "$v"`)
	evil := rotatorScript(t, `read v; touch "`+dir+`/evil"; printf '%s-e' "$v"`)
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		cfg.Rotators = map[string][]string{"bump": {bump}, "evil": {evil}}
		h := newHarness(t, cfg)
		h.do("PUT", "/v1/secrets/gh", h.admin, "application/json", `{"value":"first-value-0123456789","rotate":{"every":"24h","via":{"command":"bump"}}}`, 200)
		h.srv.Close(ctx)
		// What the previous release left: settings without a MAC, a data
		// dir without the sealing's record.
		db := openStore(t, h.dir, cfg)
		if _, err := db.SQL().ExecContext(ctx, `UPDATE secret_rotations SET mac = NULL`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if err := os.Remove(datadir.Dir(h.dir).RotationSealed()); err != nil {
			t.Fatal(err)
		}
		if err := h.restart(t, cfg); err != nil {
			t.Fatalf("upgrade start: %v", err)
		}
		if _, err := os.Stat(datadir.Dir(h.dir).RotationSealed()); err != nil {
			t.Fatalf("the sealing is not recorded in the data dir: %v", err)
		}
		version := func() float64 { return h.do("GET", "/v1/secrets/gh", h.admin, "", "", 200)["version"].(float64) }
		v0 := version()
		if out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 200); out["version"].(float64) != v0+1 {
			t.Fatalf("rotate after the upgrade: %v", out)
		}

		// The attack: the settings pointed at another rotator, every MAC
		// removed.
		h.srv.Close(ctx)
		db = openStore(t, h.dir, cfg)
		if _, err := db.SQL().ExecContext(ctx, `UPDATE secret_rotations SET mac = NULL, spec = '{"every":"24h","via":{"command":"evil"}}'`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if err := h.restart(t, cfg); err != nil {
			t.Fatalf("start: %v", err)
		}
		out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 502)
		if !strings.Contains(out["error_description"].(string), "not authenticated") {
			t.Fatalf("rotate over planted settings: %v", out)
		}
		if _, err := os.Stat(dir + "/evil"); err == nil {
			t.Fatal("the planted rotator ran")
		}
		if n := counter(t, h.srv, "mayfly_rotation_refused_total"); n != 1 {
			t.Fatalf("mayfly_rotation_refused_total = %v, want 1", n)
		}
		if v := version(); v != v0+1 {
			t.Fatalf("the refused rotation changed the secret: v%v", v)
		}
		// The admin sets the rotation again: it is authentic and runs.
		h.do("PUT", "/v1/secrets/gh", h.admin, "application/json", `{"value":"second-value-0123456789","rotate":{"every":"24h","via":{"command":"bump"}}}`, 200)
		if out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 200); out["version"].(float64) != v0+3 {
			t.Fatalf("rotate after the admin set it again: %v", out)
		}
	})
}

// An installation whose rotations have MACs but no head yet (schema 16)
// upgrades: its first start seals the head over them (once: the data
// dir keeps the head's generation) and they rotate. A database writer who
// then makes the head look unsealed again does not get it sealed over
// settings of their choosing: rotations are refused until an admin sets
// them again.
func TestRotationHeadSealedOnceAtUpgrade(t *testing.T) {
	bump := rotatorScript(t, `read v; printf '%s-r' "$v"`)
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		cfg.Rotators = map[string][]string{"bump": {bump}}
		h := newHarness(t, cfg)
		h.do("PUT", "/v1/secrets/gh", h.admin, "application/json", `{"value":"first-value-0123456789","rotate":{"every":"24h","via":{"command":"bump"}}}`, 200)
		h.srv.Close(ctx)
		exec := func(qs ...string) {
			t.Helper()
			db := openStore(t, h.dir, cfg)
			defer db.Close()
			for _, q := range qs {
				if _, err := db.SQL().ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
		}
		// What the previous release left: no head, a data dir without
		// its generation (store.Open migrates to 17 again: a NULL head).
		exec(`DROP TABLE rotation_head`, `UPDATE meta SET value = '16' WHERE key = 'schema_version'`)
		if err := os.Remove(datadir.Dir(h.dir).RotationHeadFloor()); err != nil {
			t.Fatal(err)
		}
		if err := h.restart(t, cfg); err != nil {
			t.Fatalf("upgrade start: %v", err)
		}
		if _, err := os.Stat(datadir.Dir(h.dir).RotationHeadFloor()); err != nil {
			t.Fatalf("the head's generation is not kept in the data dir: %v", err)
		}
		h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 200)

		h.srv.Close(ctx)
		exec(`UPDATE rotation_head SET gen = 0, manifest = '', mac = NULL`)
		if err := h.restart(t, cfg); err != nil {
			t.Fatalf("start: %v", err)
		}
		out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 502)
		if !strings.Contains(out["error_description"].(string), "not authenticated") {
			t.Fatalf("rotate under an unsealed head: %v", out)
		}
		if n := counter(t, h.srv, "mayfly_rotation_refused_total"); n != 1 {
			t.Fatalf("mayfly_rotation_refused_total = %v, want 1", n)
		}
		h.do("PUT", "/v1/secrets/gh", h.admin, "application/json", `{"value":"second-value-0123456789","rotate":{"every":"24h","via":{"command":"bump"}}}`, 200)
		h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 200)
	})
}
