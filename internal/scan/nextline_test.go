package scan

import (
	"strings"
	"testing"
)

// A value may stand on the line after its name: YAML's block scalars
// (password: >- or |, then the value indented below) and a plain or quoted
// scalar on the next, deeper line; a shell or Python line continued with a
// backslash. gitleaks reads a value after a line end too.
func TestGenericValueOnNextLine(t *testing.T) {
	g := newGen(73)
	pw := "Xy7" + g.str(abcB62, 17)
	tests := []struct {
		name, file, text string
		want             bool
	}{
		{"YAML folded", "values.yaml", "db:\n  password: >-\n    " + pw + "\n", true},
		{"YAML literal", "values.yaml", "api_token: |\n  " + pw + "\n", true},
		{"YAML quoted, next line", "values.yaml", "db:\n  password:\n    \"" + pw + "\"\n", true},
		{"YAML plain, next line", "values.yml", "secret_key:\n  " + pw + "\n", true},
		{"YAML CRLF", "values.yaml", "password: >-\r\n  " + pw + "\r\n", true},
		{"shell continuation", "deploy.sh", "export API_SECRET=\\\n" + pw + "\n", true},
		{"Python continuation", "settings.py", "SECRET_KEY = \\\n    \"" + pw + "\"\n", true},
		// A mapping or a list under the name, or a line not deeper: no value.
		{"YAML mapping below", "deploy.yaml", "password:\n  secretKeyRef:\n    name: db-" + pw + "\n", false},
		{"YAML mapping, one key", "deploy.yaml", "password:\n  vault_path_" + pw + ": x\n", false},
		{"YAML list below", "deploy.yaml", "tokens:\n  - " + pw + "\n", false},
		{"next line not deeper", "deploy.yaml", "  password:\n  " + pw + "\n", false},
		{"Python bare name", "settings.py", "SECRET_KEY = \\\n    " + pw + "\n", false},
	}
	s := newScanner(t, Options{Enable: []string{"generic-secret"}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := s.ScanBytes(tt.file, []byte(tt.text))
			var got []string
			for _, f := range fs {
				got = append(got, f.Secret)
			}
			if found := len(fs) == 1 && fs[0].Secret == pw; found != tt.want || len(fs) > 1 {
				t.Fatalf("findings %q, want %q: %v", got, pw, tt.want)
			}
		})
	}
}

// Looking at the next line costs one look per line that ends after a
// name's colon, whatever the lines' indentation.
func TestGenericValueOnNextLineCostLinear(t *testing.T) {
	const size = 128 << 10
	fill := func(unit string) []byte { return []byte(strings.Repeat(unit, size/len(unit))) }
	plain := fill("the quick brown fox jumps over the lazy dog; ")
	s := newScanner(t, Options{})
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"names ending lines", fill("password:\n")},
		{"deeper and deeper", fill("password: >-\n  token:\n    secret: |\n      x\n")},
		{"deep indentation", fill(strings.Repeat(" ", 4000) + "password:\n")},
		{"continuations", fill("token=\\\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ratio, got, base := costRatio(plain, tc.body, func(b []byte) { s.ScanBytes("values.yaml", b) })
			if ratio > 200 {
				t.Fatalf("%d bytes took %v, as much plain text %v: %.0f times as long", len(tc.body), got, base, ratio)
			}
		})
	}
}
