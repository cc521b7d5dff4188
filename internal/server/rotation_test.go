package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// rotatorScript writes a command rotator for the server's config: it
// prints a fresh value made from the old one.
func rotatorScript(t *testing.T, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("rotator scripts are POSIX shell")
	}
	p := filepath.Join(t.TempDir(), "rotate.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// Rotation over the API on both backends: bad settings are 400 and change
// nothing; a rotation writes a version and shows its state; a failure
// keeps the value and is visible in GET, the metric and the audit log;
// no value reaches a response, the audit log or the logs.
func TestSecretRotationAPI(t *testing.T) {
	bump := rotatorScript(t, `read v; printf '%s-r' "$v"`)
	fail := rotatorScript(t, `read v; echo "$v" >&2; exit 7`)
	onBothBackends(t, func(t *testing.T, cfg Config) {
		cfg.Rotators = map[string][]string{"bump": {bump}, "fail": {fail}}
		h := newHarness(t, cfg)
		version := func(name string) float64 {
			return h.do("GET", "/v1/secrets/"+name, h.admin, "", "", 200)["version"].(float64)
		}
		put := func(name, value, rotate string, want int) map[string]any {
			body := fmt.Sprintf(`{"value":%q`, value)
			if rotate != "" {
				body += `,"rotate":` + rotate
			}
			return h.do("PUT", "/v1/secrets/"+name, h.admin, "application/json", body+"}", want)
		}
		bad := []struct{ name, rotate, says string }{
			{"bad duration", `{"every":"daily","via":{"command":"bump"}}`, "not a duration"},
			{"unknown rotator", `{"every":"1h","via":{"command":"/bin/sh"}}`, `unknown rotator "/bin/sh"`},
			{"a program, not a name", `{"every":"1h","via":{"command":["/bin/sh","-c","id"]}}`, "want a string"},
			{"unknown key", `{"every":"1h","via":{"command":"bump"},"exec":"id"}`, `unknown key "exec"`},
			{"grace past every", `{"every":"1h","grace":"2h","via":{"command":"bump"}}`, "grace 2h0m0s is out of range"},
			{"missing admin DSN secret", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"nope","role":"r"}}}`, `unknown secret "nope"`},
		}
		for _, tt := range bad {
			out := put("gh", "must-not-be-stored-"+tt.name, tt.rotate, 400)
			if out["error"] != "invalid_request" || !strings.Contains(out["error_description"].(string), tt.says) {
				t.Errorf("%s: %v", tt.name, out)
			}
		}
		if v := version("gh"); v != 1 {
			t.Fatalf("refused puts changed the secret: v%v", v)
		}
		if _, ok := h.do("GET", "/v1/secrets/gh", h.admin, "", "", 200)["rotation"]; ok {
			t.Fatal("refused puts set a rotation")
		}

		// No rotation yet: 409; unknown secret: 404.
		// The refusal says how to set one, with the command a user of
		// `mayfly secret rotate` has at hand as well as the API call.
		if out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 409); out["error"] != "no_rotation" ||
			!strings.Contains(out["error_description"].(string), "mayfly secret put gh --rotate-every") {
			t.Fatalf("rotate without a rotation = %v", out)
		}
		h.do("POST", "/v1/secrets/ghost/rotate", h.admin, "", "", 404)

		first := "first-" + strings.Repeat("v", 20)
		put("gh", first, `{"every":"24h","grace":"2m","via":{"command":"bump"}}`, 200)
		out := h.do("POST", "/v1/secrets/gh/rotate", h.admin, "", "", 200)
		if out["version"].(float64) != 3 || out["grace_until"] == nil || out["next_at"] == nil {
			t.Fatalf("rotate = %v", out)
		}
		meta := h.do("GET", "/v1/secrets/gh", h.admin, "", "", 200)
		rot := meta["rotation"].(map[string]any)
		if rot["every"] != "24h0m0s" || rot["grace"] != "2m0s" || rot["last_version"].(float64) != 3 || rot["failures"].(float64) != 0 || rot["last_at"] == nil {
			t.Fatalf("rotation state = %v", rot)
		}
		// A PUT without "rotate" keeps it; "rotate":null removes it.
		put("gh", first, "", 200)
		if _, ok := h.do("GET", "/v1/secrets/gh", h.admin, "", "", 200)["rotation"]; !ok {
			t.Fatal("a plain put dropped the rotation")
		}

		// A failing rotator: 502, the value kept, visible everywhere.
		put("other", "other-"+strings.Repeat("o", 20), `{"every":"1h","via":{"command":"fail"}}`, 200)
		out = h.do("POST", "/v1/secrets/other/rotate", h.admin, "", "", 502)
		if out["error"] != "rotation_failed" || !strings.Contains(out["error_description"].(string), "exited with status 7") {
			t.Fatalf("failed rotate = %v", out)
		}
		if v := version("other"); v != 1 {
			t.Fatalf("a failed rotation wrote v%v", v)
		}
		list := h.do("GET", "/v1/secrets", h.admin, "", "", 200)["secrets"].([]any)
		var failures float64 = -1
		for _, s := range list {
			m := s.(map[string]any)
			if m["name"] == "other" {
				failures = m["rotation"].(map[string]any)["failures"].(float64)
			}
		}
		if failures != 1 {
			t.Fatalf("list shows failures %v, want 1", failures)
		}
		body := scrape(t, h.http.URL+"/metrics", h.admin, 200)
		for series, want := range map[string]string{
			`mayfly_secret_rotations_total{result="failed",secret="other"}`: "1",
			`mayfly_secret_rotations_total{result="ok",secret="gh"}`:        "1",
			`mayfly_secret_rotation_failures{secret="other"}`:               "1",
		} {
			if got := metricValue(body, series); got != want {
				t.Errorf("%s = %q, want %s", series, got, want)
			}
		}
		put("gh", "third-"+strings.Repeat("t", 20), "null", 200)
		if _, ok := h.do("GET", "/v1/secrets/gh", h.admin, "", "", 200)["rotation"]; ok {
			t.Fatal(`"rotate":null kept the rotation`)
		}

		// The audit log: a start and an outcome per attempt, no value.
		raw := h.rawEntries(t)
		var kinds []string
		for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
			var e map[string]any
			json.Unmarshal([]byte(l), &e)
			if e["type"] == "secret.rotate" {
				kinds = append(kinds, fmt.Sprintf("%v/%v/%v", e["secret"], e["status"], e["reason"]))
			}
		}
		want := []string{"gh/<nil>/started", "gh/200/<nil>", "other/<nil>/started", "other/502/rotator fail: exited with status 7"}
		if strings.Join(kinds, " ") != strings.Join(want, " ") {
			t.Fatalf("rotation entries = %q, want %q", kinds, want)
		}
		for _, v := range []string{first, first + "-r", "other-" + strings.Repeat("o", 20), "must-not-be-stored"} {
			if strings.Contains(raw, v) || strings.Contains(h.logs.String(), v) {
				t.Errorf("a value (%.12s…) reached the audit log or the logs", v)
			}
		}
	})
}

// rawEntries reads the whole audit log over the API.
func (h *harness) rawEntries(t *testing.T) string {
	t.Helper()
	return scrape(t, h.http.URL+"/v1/audit/entries?start=0&limit=1000", h.admin, 200)
}

// Only an admin decides what an admin DSN is used for: an operator may not
// give a secret a postgres_password rotation with another secret's admin
// DSN (with it the server would set a role's password of the operator's
// choosing into a secret of the operator's choosing); its own DSN is fine.
func TestSecretRotationAdminDSNNeedsAdmin(t *testing.T) {
	h := newHarness(t, Config{})
	ops := h.do("POST", "/v1/admin/tokens", h.admin, "application/json", `{"name":"ops","role":"operator"}`, 200)["token"].(string)
	h.do("PUT", "/v1/secrets/pg-admin", h.admin, "application/json", `{"value":"postgres://admin:pw@db.internal/app"}`, 200)
	other := `{"every":"24h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"victim"}}}`
	own := `{"every":"24h","via":{"postgres_password":{"admin_dsn_secret":"x","role":"app"}}}`
	tests := []struct {
		name, bearer, rotate string
		want                 int
	}{
		{"operator, another secret's admin DSN", ops, other, 403},
		{"operator, its own DSN", ops, own, 200},
		{"admin, another secret's admin DSN", h.admin, other, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := *h
			h.t = t
			out := h.do("PUT", "/v1/secrets/x", tt.bearer, "application/json", `{"value":"postgres://app:pw@db.internal/app","rotate":`+tt.rotate+`}`, tt.want)
			if tt.want != 200 {
				if out["error"] != "forbidden" || !strings.Contains(out["error_description"].(string), "admin role") {
					t.Fatalf("refusal = %v", out)
				}
				h.do("GET", "/v1/secrets/x", h.admin, "", "", 404) // nothing stored
				// and the refusal is recorded, as a role denial is.
				if e := h.rawEntries(t); !strings.Contains(e, `"type":"secret.write","status":403,`) || !strings.Contains(e, `"admin":"ops"`) {
					t.Fatalf("no refused secret.write entry in %s", e)
				}
				return
			}
			if _, ok := h.do("GET", "/v1/secrets/x", h.admin, "", "", 200)["rotation"]; !ok {
				t.Fatal("no rotation set")
			}
		})
	}
}

// A rotation overtaken by an admin's PUT of the secret (on another
// request) answers 409 conflict: the admin's value stands, and the
// attempt is recorded with status 409.
func TestSecretRotationOvertakenByPut(t *testing.T) {
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	slow := rotatorScript(t, `read v; touch "`+started+`"; while [ ! -e "`+release+`" ]; do sleep 0.05; done; printf '%s-r' "$v"`)
	h := newHarness(t, Config{Rotators: map[string][]string{"slow": {slow}}})
	h.do("PUT", "/v1/secrets/svc", h.admin, "application/json", `{"value":"first-value-0123456789","rotate":{"every":"24h","via":{"command":"slow"}}}`, 200)
	admin := make(chan error, 1)
	go func() {
		admin <- func() error {
			defer os.WriteFile(release, nil, 0o600)
			for i := 0; ; i++ {
				if _, err := os.Stat(started); err == nil {
					break
				}
				if i > 400 {
					return fmt.Errorf("the rotator never started")
				}
				time.Sleep(25 * time.Millisecond)
			}
			req, _ := http.NewRequest("PUT", h.http.URL+"/v1/secrets/svc", strings.NewReader(`{"value":"admin-value-0123456789"}`))
			req.Header.Set("Authorization", "Bearer "+h.admin)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("admin PUT: status %d", resp.StatusCode)
			}
			return nil
		}()
	}()
	out := h.do("POST", "/v1/secrets/svc/rotate", h.admin, "", "", 409)
	if err := <-admin; err != nil {
		t.Fatal(err)
	}
	if out["error"] != "conflict" || !strings.Contains(out["error_description"].(string), "replaced or deleted while it was rotated") {
		t.Fatalf("rotate = %v", out)
	}
	if v := h.do("GET", "/v1/secrets/svc", h.admin, "", "", 200)["version"].(float64); v != 2 {
		t.Fatalf("live version %v, want the admin's (2)", v)
	}
	if e := h.rawEntries(t); !strings.Contains(e, `"type":"secret.rotate","status":409,`) {
		t.Fatalf("no secret.rotate entry with status 409 in %s", e)
	}
}
