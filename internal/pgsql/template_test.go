package pgsql_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/token"
)

func TestRender(t *testing.T) {
	pw, _ := token.NewPassword()
	name := pgsql.RoleName("lse_0123456789abcdef01234567", "app-db")
	exp := time.Date(2026, 12, 4, 23, 0, 0, 0, time.FixedZone("x", 3600))
	v := pgsql.Values{Name: name, Password: pw, Expires: exp}
	for _, tc := range []struct {
		name, tmpl, want string
		err              string
	}{
		// <verifier> stands for the SCRAM verifier of pw (random salt).
		{"typical", `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}';`,
			`CREATE ROLE "` + name + `" LOGIN PASSWORD '<verifier>' VALID UNTIL '2026-12-04T22:00:00Z';`, ""},
		{"bare values are quoted", `CREATE ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{ expires }}`,
			`CREATE ROLE "` + name + `" PASSWORD '<verifier>' VALID UNTIL '2026-12-04T22:00:00Z'`, ""},
		{"password in an escape string", `ALTER ROLE "{{name}}" PASSWORD E'{{password}}'`, `ALTER ROLE "` + name + `" PASSWORD E'<verifier>'`, ""},
		{"password in a dollar body, twice", `DO $x$ BEGIN EXECUTE 'ALTER ROLE "{{name}}" PASSWORD ''{{password}}'''; PERFORM '{{password}}'; END $x$;`,
			`DO $x$ BEGIN EXECUTE 'ALTER ROLE "` + name + `" PASSWORD ''<verifier>'''; PERFORM '<verifier>'; END $x$;`, ""},
		{"escape string", `SELECT E'a\'{{name}}'`, `SELECT E'a\'` + name + `'`, ""},
		{"doubled quotes stay inside", `SELECT 'it''s {{name}}', "x""{{name}}"`, `SELECT 'it''s ` + name + `', "x""` + name + `"`, ""},
		{"dollar body", `DO $x$ BEGIN EXECUTE 'GRANT r TO "{{name}}"'; END $x$;`, `DO $x$ BEGIN EXECUTE 'GRANT r TO "` + name + `"'; END $x$;`, ""},
		{"positional parameter is not a dollar quote", `SELECT $1, {{name}}`, `SELECT $1, "` + name + `"`, ""},
		{"block comment passes", `/* a /* nested */ b */ DROP ROLE {{name}}`, `/* a /* nested */ b */ DROP ROLE "` + name + `"`, ""},
		{"placeholder in line comment", "-- {{name}}\nSELECT 1", "", "inside a comment"},
		{"placeholder in block comment", "/* {{password}} */", "", "inside a comment"},
		{"unknown placeholder", `SELECT '{{grant}}'`, "", "unknown placeholder"},
		{"unclosed placeholder", `SELECT '{{name'`, "", "unclosed"},
		{"unterminated literal", `SELECT '{{name}}`, "", "unterminated string"},
		{"unterminated identifier", `SELECT "{{name}}`, "", "unterminated quoted identifier"},
		{"unterminated dollar", `DO $$ {{name}}`, "", "unterminated dollar"},
		{"NUL", "SELECT 1\x00", "", "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pgsql.Render(tc.tmpl, v)
			if tc.err != "" {
				if err == nil || !errors.Is(err, pgsql.ErrTemplate) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Render = %v, want an error saying %q", err, tc.err)
				}
				if strings.Contains(err.Error(), pw) {
					t.Fatal("error holds the password")
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			// The password never reaches the statements: its verifier
			// does, one per Render, and it accepts pw.
			if strings.Contains(got, pw) {
				t.Fatal("the statements hold the password")
			}
			verifiers := map[string]bool{}
			for _, vf := range verifierRE.FindAllString(got, -1) {
				verifiers[vf] = true
			}
			for vf := range verifiers {
				if len(verifiers) > 1 || !pgroletest.SCRAMAccepts(t, vf, pw) {
					t.Fatalf("{{password}} rendered as %d verifiers, or as one that does not accept the password", len(verifiers))
				}
				got = strings.ReplaceAll(got, vf, "<verifier>")
			}
			if got != tc.want {
				t.Fatalf("Render =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// Values that are not of the closed forms are refused whatever the
// template: a hostile name never reaches SQL, even through Render.
func TestRenderRefusesHostileValues(t *testing.T) {
	pw, _ := token.NewPassword()
	good := pgsql.RoleName("lse_0123456789abcdef01234567", "db")
	for _, tc := range []struct {
		name string
		v    pgsql.Values
	}{
		{"name with a quote", pgsql.Values{Name: `mayfly_x"; DROP TABLE t; --`, Password: pw}},
		{"name not ours", pgsql.Values{Name: "postgres", Password: pw}},
		{"name upper hex", pgsql.Values{Name: strings.ToUpper(good), Password: pw}},
		{"password with a quote", pgsql.Values{Name: good, Password: pw[:20] + "'" + pw[21:]}},
		{"password bad checksum", pgsql.Values{Name: good, Password: pw[:40] + "!"}},
		{"password not minted", pgsql.Values{Name: good, Password: "hunter2'; DROP ROLE postgres; --"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgsql.Render(`CREATE ROLE "{{name}}" PASSWORD '{{password}}'`, tc.v)
			if !errors.Is(err, pgsql.ErrTemplate) {
				t.Fatalf("Render = %v, want ErrTemplate", err)
			}
			if strings.Contains(err.Error(), tc.v.Name) || strings.Contains(err.Error(), tc.v.Password) {
				t.Fatal("error holds a value")
			}
		})
	}
	if _, err := pgsql.Render(`SELECT '{{password}}'`, pgsql.Values{Name: good}); err == nil {
		t.Fatal("{{password}} without a password rendered")
	}
}

func TestRoleName(t *testing.T) {
	hostile := []string{"", "lse_", `lse_0123456789abcdef0123456"`, `x"; DROP ROLE postgres; --`, "lse_0123456789ABCDEF01234567",
		strings.Repeat("a", 10000), "ユニコード", "\x00", `' OR 1=1 --`}
	seen := map[string]string{}
	for _, up := range []string{"app-db", `db"; DROP DATABASE x; --`, ""} {
		for _, l := range append(hostile, "lse_0123456789abcdef01234567", "lse_ffffffffffffffffffffffff") {
			n := pgsql.RoleName(l, up)
			if !pgsql.ValidName(n) || !pgsql.OwnedBy(n, up) || len(n) > 63 {
				t.Fatalf("RoleName(%q, %q) = %q: not a valid, owned name", l, up, n)
			}
			if prev, dup := seen[n]; dup {
				t.Fatalf("RoleName collides for %q and %q", prev, l+"|"+up)
			}
			seen[n] = l + "|" + up
		}
	}
	if n := pgsql.RoleName("lse_0123456789abcdef01234567", "app-db"); !strings.HasPrefix(n, "mayfly_0123456789abcdef01234567_") {
		t.Fatalf("a mayfly lease's role is not readable: %s", n)
	}
	if pgsql.OwnedBy(pgsql.RoleName("lse_0123456789abcdef01234567", "a"), "b") {
		t.Fatal("a role of upstream a is owned by b")
	}
	for _, n := range []string{"mayfly_admin", "mayfly_", "postgres", "mayfly_0123456789abcdef01234567_0000000", "mayfly_0123456789abcdef01234567-00000000"} {
		if pgsql.ValidName(n) {
			t.Fatalf("ValidName(%q)", n)
		}
	}
}

func TestCheckTemplate(t *testing.T) {
	if err := pgsql.CheckTemplate(`CREATE ROLE "{{name}}" PASSWORD '{{password}}'`, true); err != nil {
		t.Fatal(err)
	}
	if err := pgsql.CheckTemplate(`DROP ROLE "{{name}}" -- {{password}}`, false); err == nil {
		t.Fatal("a placeholder in a comment passed")
	}
	if err := pgsql.CheckTemplate(`DROP ROLE "{{name}}" '{{password}}'`, false); err == nil {
		t.Fatal("{{password}} in revocation passed")
	}
}

func FuzzRender(f *testing.F) {
	f.Add(`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}';`)
	f.Add(`DO $$ BEGIN EXECUTE E'\'{{name}}'; END $$ /* {{ */`)
	pw, _ := token.NewPassword()
	v := pgsql.Values{Name: pgsql.RoleName("lse_0123456789abcdef01234567", "db"), Password: pw, Expires: time.Unix(1e9, 0)}
	f.Fuzz(func(t *testing.T, tmpl string) {
		out, err := pgsql.Render(tmpl, v)
		if err != nil {
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), v.Name) {
				t.Fatal("error holds a value")
			}
			return
		}
		// Rendering only ever adds the values and their quotes.
		if !strings.Contains(tmpl, "{{") && out != tmpl {
			t.Fatalf("a template without placeholders changed: %q -> %q", tmpl, out)
		}
	})
}

func FuzzQuote(f *testing.F) {
	f.Add(`a"b'c\d`)
	f.Fuzz(func(t *testing.T, s string) {
		q := pgsql.QuoteIdent(s)
		if q[0] != '"' || q[len(q)-1] != '"' || strings.Count(q[1:len(q)-1], `"`)%2 != 0 {
			t.Fatalf("QuoteIdent(%q) = %q", s, q)
		}
		l := pgsql.QuoteLiteral(s)
		if !strings.HasSuffix(l, "'") {
			t.Fatalf("QuoteLiteral(%q) = %q", s, l)
		}
	})
}
