package policy

import (
	"strings"
	"testing"
)

// A postgres template the exchange could not render safely is refused when
// the policy is read, at its line, before any role is made.
func TestPostgresTemplatesRenderable(t *testing.T) {
	const creation = `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}';`
	const revocation = `DROP ROLE IF EXISTS "{{name}}";`
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"placeholder in a comment", revocation, `DROP ROLE IF EXISTS "{{name}}"; -- was {{name}}`, `upstreams.db.postgres.revocation: line 1: {{name}} inside a comment`},
		{"password in revocation", revocation, `DROP ROLE IF EXISTS "{{name}}"; SELECT '{{password}}';`, `upstreams.db.postgres.revocation: line 1: {{password}} is not available here`},
		{"unterminated literal", creation, `CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}};`, `upstreams.db.postgres.creation: unterminated string literal`},
		{"unterminated identifier", creation, `CREATE ROLE "{{name}} LOGIN PASSWORD '{{password}}';`, `upstreams.db.postgres.creation: unterminated quoted identifier`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(minted, tt.old) {
				t.Fatalf("%q not in the sample", tt.old)
			}
			src := strings.Replace(minted, tt.old, "'"+strings.ReplaceAll(tt.new, "'", "''")+"'", 1)
			_, err := Parse(one("policy.yaml", src), secrets("gh-app-key", "db-admin"))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "policy.yaml:") {
				t.Fatalf("error %v, want %q at a line", err, tt.want)
			}
		})
	}
	// The sample itself and quoting in all its forms pass.
	ok := strings.Replace(minted, creation, `'DO $$ BEGIN EXECUTE format(''CREATE ROLE %I LOGIN PASSWORD %L'', ''{{name}}'', ''{{password}}''); END $$; /* note */ SELECT E''\'''', "a""b"'`, 1)
	if _, err := Parse(one("policy.yaml", ok), secrets("gh-app-key", "db-admin")); err != nil {
		t.Fatalf("a renderable template refused: %v", err)
	}
}
