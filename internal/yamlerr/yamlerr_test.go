package yamlerr

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The line reported is the line the problem is on, for parser and scanner
// errors alike (yaml/v3 prints parser errors one line early).
func TestSyntaxLine(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		line int
		want string
	}{
		{"a: 1\nb: [x\nc: 2\n", 2, "did not find expected ',' or ']'"},
		{"a: [x\n", 1, "did not find expected ',' or ']'"},
		{"a: 1\n\n\n\nb: {x: 1\n", 5, "did not find expected ',' or '}'"},
		{"a: 1\nb: \"x\n", 2, "found unexpected end of stream"},
		{"a: 1\n  b: 2\n", 2, "mapping values are not allowed in this context"},
		{"a:\n  - 1\n  x: 2\n", 2, "did not find expected '-' indicator"}, // the list's first line: yaml/v3 keeps no other
		{"a: 1\n\tb: 2\n", 2, "found a tab character"},
	} {
		var v any
		err := yaml.Unmarshal([]byte(tc.doc), &v)
		if err == nil {
			t.Fatalf("%q parsed", tc.doc)
		}
		line, reason := Syntax(err, []byte(tc.doc))
		if line != tc.line || !strings.Contains(reason, tc.want) || strings.HasPrefix(reason, "line") {
			t.Errorf("%q: line %d %q, want line %d %q (yaml said %q)", tc.doc, line, reason, tc.line, tc.want, err)
		}
	}
}

func TestType(t *testing.T) {
	var v struct {
		Rate  float64 `yaml:"rate"`
		Names []string
	}
	err := yaml.Unmarshal([]byte("rate: fast\nnames: {a: 1}\n"), &v)
	te, ok := err.(*yaml.TypeError)
	if !ok || len(te.Errors) != 2 {
		t.Fatalf("%v", err)
	}
	for i, want := range []struct {
		line      int
		want, got string
	}{{1, "a number", `"fast"`}, {2, "a list", "a mapping"}} {
		line, w, g, ok := Type(te.Errors[i])
		if !ok || line != want.line || w != want.want || g != want.got {
			t.Errorf("%q: %d %q %q %v", te.Errors[i], line, w, g, ok)
		}
	}
}

func TestSuggest(t *testing.T) {
	keys := []string{"limits", "listen", "log_level", "log_format", "admin_cidrs"}
	for in, want := range map[string]string{"limts": "limits", "lisen": "listen", "admin_cidr": "admin_cidrs", "zzz": "", "log": "", "": ""} {
		if got := Suggest(in, keys); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzSyntax: any document's error gives a line within the document and a
// reason without yaml's prefix.
func FuzzSyntax(f *testing.F) {
	f.Add("a: [x\n")
	f.Add("a: 1\n\tb: 2\n")
	f.Fuzz(func(t *testing.T, doc string) {
		var v any
		err := yaml.Unmarshal([]byte(doc), &v)
		if err == nil {
			return
		}
		if _, ok := err.(*yaml.TypeError); ok {
			return
		}
		line, reason := Syntax(err, []byte(doc))
		if line < 1 || line > strings.Count(doc, "\n")+2 || strings.HasPrefix(reason, "yaml:") {
			t.Fatalf("%q: line %d, %q", doc, line, reason)
		}
	})
}
