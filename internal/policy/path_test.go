package policy

import (
	"strings"
	"testing"
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

func TestEscapePath(t *testing.T) {
	for in, want := range map[string]string{"/": "/", "/a b/c;d": "/a%20b/c%3Bd", "/café/": "/caf%C3%A9/", "/x:y@z": "/x:y@z"} {
		if got := EscapePath(in); got != want {
			t.Errorf("EscapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/a/b", "/a/%2e%2e/b", "/a%2fb", "//", "/a/./b", "/%c0%ae", "/a%252e", "/a b/", "/x..;/y", "/\u00e9"} {
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
		// Idempotent, and what is forwarded reads back as what was checked.
		if q, err := CleanPath(p); err != nil || q != p {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", raw, p, q, err)
		}
		if q, err := CleanPath(EscapePath(p)); err != nil || q != p {
			t.Fatalf("escape round trip: %q -> %q -> %q, %v", raw, p, EscapePath(p), err)
		}
	})
}
