package rotate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	checks := Checks{Rotators: []string{"bump", "vendor-x"}, SecretExists: func(n string) bool { return n == "pg-admin" }, Admin: true}
	tests := []struct {
		name    string
		raw     string
		every   time.Duration
		grace   time.Duration
		kind    string
		wantErr string // "" = accepted
	}{
		{"command, default grace", `{"every":"24h","via":{"command":"bump"}}`, 24 * time.Hour, DefaultGrace, "command:bump", ""},
		{"postgres, own grace", `{"every":"1h","grace":"90s","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"app"}}}`, time.Hour, 90 * time.Second, "postgres_password", ""},
		{"postgres, rotates its own DSN", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"db","role":"app"}}}`, time.Hour, DefaultGrace, "postgres_password", ""},
		{"no grace", `{"every":"10m","grace":"0s","via":{"command":"bump"}}`, 10 * time.Minute, 0, "command:bump", ""},
		{"role needing quotes", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"a\"; DROP ROLE x; --"}}}`, time.Hour, DefaultGrace, "postgres_password", ""},
		{"bad duration", `{"every":"daily","via":{"command":"bump"}}`, 0, 0, "", `"daily" is not a duration`},
		{"duration as a number", `{"every":86400,"via":{"command":"bump"}}`, 0, 0, "", "a duration is a string"},
		{"no every", `{"via":{"command":"bump"}}`, 0, 0, "", "every is required"},
		{"every too short", `{"every":"30s","via":{"command":"bump"}}`, 0, 0, "", "every 30s is out of range"},
		{"every too long", `{"every":"9000h","via":{"command":"bump"}}`, 0, 0, "", "out of range"},
		{"negative every", `{"every":"-1h","via":{"command":"bump"}}`, 0, 0, "", "out of range"},
		{"grace as long as every", `{"every":"10m","grace":"10m","via":{"command":"bump"}}`, 0, 0, "", "grace 10m0s is out of range"},
		{"negative grace", `{"every":"10m","grace":"-1s","via":{"command":"bump"}}`, 0, 0, "", "grace -1s is out of range"},
		{"grace too long", `{"every":"720h","grace":"25h","via":{"command":"bump"}}`, 0, 0, "", "grace 25h0m0s is out of range"},
		{"unknown rotator", `{"every":"1h","via":{"command":"/bin/sh"}}`, 0, 0, "", `unknown rotator "/bin/sh"`},
		{"no rotator", `{"every":"1h","via":{}}`, 0, 0, "", "via names no rotator"},
		{"two rotators", `{"every":"1h","via":{"command":"bump","postgres_password":{"admin_dsn_secret":"pg-admin","role":"app"}}}`, 0, 0, "", "two rotators"},
		{"unknown key", `{"every":"1h","via":{"command":"bump"},"run":"rm -rf /"}`, 0, 0, "", `unknown key "run"`},
		{"unknown via key", `{"every":"1h","via":{"exec":["/bin/sh"]}}`, 0, 0, "", `unknown key "exec"`},
		{"admin secret missing", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"nope","role":"app"}}}`, 0, 0, "", `unknown secret "nope"`},
		{"admin secret bad name", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"../x","role":"app"}}}`, 0, 0, "", "admin_dsn_secret"},
		{"no role", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin"}}}`, 0, 0, "", "role: want 1 to 63 bytes"},
		{"role too long", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"` + strings.Repeat("r", 64) + `"}}}`, 0, 0, "", "role: want 1 to 63"},
		{"role with NUL", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"a\u0000b"}}}`, 0, 0, "", "no NUL"},
		{"not an object", `"24h"`, 0, 0, "", "want a rotate.Spec"},
		{"bad JSON", `{"every":`, 0, 0, "", "rotate:"},
		{"two values", `{"every":"1h","via":{"command":"bump"}} {}`, 0, 0, "", "more than one JSON value"},
		{"too large", `{"every":"1h","via":{"command":"` + strings.Repeat("b", MaxSpecSize) + `"}}`, 0, 0, "", "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec("db", []byte(tt.raw), checks)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if time.Duration(s.Every) != tt.every || s.GraceOrDefault() != tt.grace || s.Kind() != tt.kind {
				t.Fatalf("= every %v grace %v kind %s", time.Duration(s.Every), s.GraceOrDefault(), s.Kind())
			}
		})
	}
}

// Only an admin decides what an admin DSN is used for: an operator's
// rotation may use the secret's own DSN, never another secret's.
func TestParseSpecNeedsAdmin(t *testing.T) {
	checks := Checks{Rotators: []string{"bump"}, SecretExists: func(n string) bool { return n == "pg-admin" }}
	tests := []struct {
		name, raw  string
		needsAdmin bool
	}{
		{"command", `{"every":"24h","via":{"command":"bump"}}`, false},
		{"its own DSN", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"db","role":"app"}}}`, false},
		{"another secret's admin DSN", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"pg-admin","role":"app"}}}`, true},
		{"a missing admin DSN secret", `{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"nope","role":"app"}}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec("db", []byte(tt.raw), checks)
			if !tt.needsAdmin {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNeedsAdmin) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrNeedsAdmin and ErrInvalid", err)
			}
			// With the admin role the same settings pass that check.
			admin := checks
			admin.Admin = true
			if _, err := ParseSpec("db", []byte(tt.raw), admin); errors.Is(err, ErrNeedsAdmin) {
				t.Fatalf("admin: %v", err)
			}
		})
	}
}

func TestCheckRotators(t *testing.T) {
	tests := []struct {
		name    string
		r       map[string][]string
		wantErr string
	}{
		{"none", nil, ""},
		{"absolute", map[string][]string{"x": {"/usr/local/bin/rotate-x", "--flag"}}, ""},
		{"relative program", map[string][]string{"x": {"rotate-x"}}, "absolute path"},
		{"empty argv", map[string][]string{"x": {}}, "want [program, args…]"},
		{"bad name", map[string][]string{"a b": {"/bin/true"}}, "rules of secret names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRotators(tt.r)
			if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"every":"24h","grace":"5m","via":{"command":"bump"}}`))
	f.Add([]byte(`{"every":"1h","via":{"postgres_password":{"admin_dsn_secret":"a","role":"r"}}}`))
	f.Add([]byte(`{"every":"-9223372036854775808ns"}`))
	checks := Checks{Rotators: []string{"bump"}, SecretExists: func(string) bool { return true }}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := ParseSpec("db", raw, checks)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		// Whatever is accepted is in range and names one known rotator.
		e := time.Duration(s.Every)
		if e < MinEvery || e > MaxEvery || s.GraceOrDefault() < 0 || s.GraceOrDefault() >= e {
			t.Fatalf("accepted out of range: %+v", s)
		}
		if (s.Via.Command == "bump") == (s.Via.PostgresPassword != nil) {
			t.Fatalf("accepted a bad via: %+v", s.Via)
		}
	})
}
