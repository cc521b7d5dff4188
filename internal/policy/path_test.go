package policy

import (
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func TestCleanPath(t *testing.T) {
	tests := []struct {
		raw, want string // want "" = refused
	}{
		{"", "/"},
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a/b/", "/a/b/"},
		{"/a%20b/c%3Bd", "/a b/c;d"},
		{"/caf%C3%A9", "/café"},
		{"/%41", "/A"},
		{"/a.b/v1.2/.well-known", "/a.b/v1.2/.well-known"},
		{"/sha256:abc@x", "/sha256:abc@x"},
		{"a/b", ""},
		{"//", ""},
		{"/a//b", ""},
		{"/a/./b", ""},
		{"/a/../b", ""},
		{"/..", ""},
		{"/.", ""},
		{"/a/...", ""},
		{"/a/..;/b", ""},
		{"/a/;x", ""},
		{"/a/b.", ""},
		{"/a/b ", ""},
		{"/a/%2e", ""},
		{"/a/%2E%2E", ""},
		{"/a%2fb", ""},
		{"/a%2Fb", ""},
		{"/a%5cb", ""},
		{"/a\\b", ""},
		{"/a%00", ""},
		{"/a\x00", ""},
		{"/a%0A", ""},
		{"/a\t", ""},
		{"/a%7F", ""},
		{"/a%25", ""},
		{"/a%252e", ""},
		{"/a%", ""},
		{"/a%4", ""},
		{"/a%zz", ""},
		{"/%c0%ae", ""},
		{"/%ff", ""},
		{"/%ef%bc%8e", ""},
		{"/%e2%80%ae", ""}, // right-to-left override
		// Compatibility forms that NFKC folds to what CleanPath refuses:
		{"/a/%EF%B8%B0", ""},              // U+FE30 vertical two dot leader: ".."
		{"/a/%EF%B8%99", ""},              // U+FE19 vertical ellipsis: "..."
		{"/a/%E2%84%80", ""},              // U+2100 account of: "a/c"
		{"/a/%E2%84%85", ""},              // U+2105 care of: "c/o"
		{"/a/%EF%BC%852e%EF%BC%852e", ""}, // U+FF05 full-width percent: "%2e%2e"
		{"/a/%EF%B9%AA2e", ""},            // U+FE6A small percent sign
		{"/a/%E2%92%88", ""},              // U+2488 digit one full stop: "1."
		{"/a/%E2%92%9B", ""},              // U+249B number twenty full stop: "20."
		{"/a/%F0%9F%84%80", ""},           // U+1F100 digit zero full stop: "0."
		{"/a/%EF%BC%9Bx", ""},             // U+FF1B full-width semicolon: ";x"
		{"/a/x%C2%A8", ""},                // U+00A8 diaeresis: " \u0308", a space
		// and ones that fold to nothing CleanPath refuses stay accepted:
		{"/a/%EF%BC%A1", "/a/\uFF21"}, // full-width A
		{"/a/%C2%BD", "/a/\u00BD"},    // one half: "1\u20442", a fraction slash
		{"/%E6%97%A5%E6%9C%AC", "/\u65E5\u672C"},
		{"/" + strings.Repeat("a", MaxPathLen), ""},
		{"/" + strings.Repeat("a", MaxPathLen-1), "/" + strings.Repeat("a", MaxPathLen-1)},
		// Fits as sent, not as forwarded (each byte becomes %XX or ; becomes %3B).
		{"/" + strings.Repeat("é", MaxPathLen/4), ""},
		{"/" + strings.Repeat("a;", MaxPathLen/3), ""},
		{"/" + strings.Repeat("é", MaxPathLen/6-1), "/" + strings.Repeat("é", MaxPathLen/6-1)},
	}
	for _, tt := range tests {
		got, err := CleanPath(tt.raw)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CleanPath(%q) = %q, want refusal", tt.raw, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
		}
	}
}

// No character that Unicode compatibility normalisation (NFKC, NFKD), as
// some servers apply it, turns into a character CleanPath refuses or reads
// specially is accepted: every code point is tried.
func TestCleanPathRefusesEveryCompatibilityForm(t *testing.T) {
	special := func(s string) bool {
		return strings.ContainsFunc(s, func(r rune) bool {
			return strings.ContainsRune("./\\%; ", r) || r < 0x20 || r == 0x7f
		})
	}
	for r := rune(utf8.RuneSelf); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		s := string(r)
		if !special(norm.NFKC.String(s)) && !special(norm.NFKD.String(s)) {
			continue
		}
		if got, err := CleanPath("/a/x" + url.PathEscape(s) + "x"); err == nil {
			t.Errorf("U+%04X accepted as %q; NFKC folds it to %q", r, got, norm.NFKC.String(s))
		}
	}
}

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{"/": "/", "/a b/c;d": "/a%20b/c%3Bd", "/café/": "/caf%C3%A9/", "/x:y@z": "/x:y@z",
		"/repos/acme/app/issues": "/repos/acme/app/issues", "/a-b_c.d~e/": "/a-b_c.d~e/", "/a?b": "/a%3Fb", "/a%b": "/a%25b"} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
		if got := escapeSegments(in); got != want {
			t.Errorf("escapeSegments(%q) = %q, want %q", in, got, want)
		}
	}
	// Every forwarded request's path is escaped: a path with nothing to
	// escape is returned as it is.
	if n := testing.AllocsPerRun(100, func() { _ = EscapePath("/repos/acme/app/issues/42") }); n != 0 {
		t.Errorf("EscapePath of a plain path: %.0f allocations, want 0", n)
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/a/b", "/a/%2e%2e/b", "/a%2fb", "//", "/a/./b", "/%c0%ae", "/a%252e", "/a b/", "/x..;/y", "/\u00e9", "/a/%EF%B8%B0", "/%E2%84%80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := CleanPath(raw)
		if err != nil {
			return
		}
		if strings.Contains(p, "//") || strings.Contains(p, "\\") || strings.ContainsRune(p, 0) || strings.Contains(p, "%") {
			t.Fatalf("CleanPath(%q) = %q", raw, p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CleanPath(%q) = %q has a dot segment", raw, p)
			}
		}
		if strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
			t.Fatalf("dot-dot in %q", p)
		}
		// A server that folds compatibility forms serves the same segments.
		f := norm.NFKC.String(p)
		for _, c := range []string{"/", ".", ";", " ", "%", "\\"} {
			if strings.Count(f, c) != strings.Count(p, c) {
				t.Fatalf("CleanPath(%q) = %q, which NFKC folds to %q", raw, p, f)
			}
		}
		// Idempotent, and what is forwarded reads back as what was checked.
		if q, err := CleanPath(p); err != nil || q != p {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, p, q, err)
		}
		if e := EscapePath(p); e != escapeSegments(p) {
			t.Fatalf("EscapePath(%q) = %q, segment by segment %q", p, e, escapeSegments(p))
		}
		if q, err := CleanPath(EscapePath(p)); err != nil || q != p {
			t.Fatalf("escape round trip: %q -> %q -> %q, %v", raw, p, EscapePath(p), err)
		}
	})
}
