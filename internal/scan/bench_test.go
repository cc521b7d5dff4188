package scan

import (
	"fmt"
	"strings"
	"testing"
)

// sourceText returns about n bytes of source-like text: Go, YAML and log
// lines with the words scanners trip over (token, password, secret, key),
// hashes, UUIDs and URLs, and no secret.
func sourceText(n int) []byte {
	g := newGen(42)
	lines := []func() string{
		func() string {
			return fmt.Sprintf("\tif err := s.store.Put(ctx, key%d, value); err != nil {", g.r.IntN(100))
		},
		func() string { return "\t\treturn fmt.Errorf(\"saving the token for %s: %w\", name, err)" },
		func() string { return fmt.Sprintf("\tuser.PasswordHash = hash(%q)", g.str("abcdefgh", 6)) },
		func() string { return "// Package auth checks passwords and API tokens against the store." },
		func() string {
			return fmt.Sprintf("  image: registry.example.com/team/app@sha256:%s", g.str(abcHex, 64))
		},
		func() string {
			return fmt.Sprintf("2025-01-0%dT10:00:00Z INFO request id=%s-%s path=/v1/items status=200", 1+g.r.IntN(9), g.str(abcHex, 8), g.str(abcHex, 4))
		},
		func() string { return "\tfor i, tok := range tokens {" },
		func() string { return fmt.Sprintf("\tconst maxRetries = %d", g.r.IntN(10)) },
		func() string { return "  secretRef:\n    name: db-credentials" },
		func() string {
			return fmt.Sprintf("commit %s Merge pull request #%d", g.str(abcHex, 40), g.r.IntN(9999))
		},
		func() string {
			return "\tresp, err := http.Get(\"https://api.example.com/v2/users?page=\" + strconv.Itoa(page))"
		},
		func() string { return "func (c *Client) Do(req *http.Request) (*http.Response, error) {" },
		func() string { return "" },
		func() string { return "}" },
	}
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(lines[g.r.IntN(len(lines))]())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func BenchmarkScanSource(b *testing.B) {
	data := sourceText(8 << 20)
	s := newScanner(b, Options{})
	if fs := s.ScanBytes("bench", data); len(fs) != 0 {
		b.Fatalf("false positives in benchmark text: %v", rulesOf(fs))
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s.ScanBytes("bench", data)
	}
}

func BenchmarkScanSourceNoDecode(b *testing.B) {
	data := sourceText(8 << 20)
	s := newScanner(b, Options{NoDecode: true})
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s.ScanBytes("bench", data)
	}
}

func BenchmarkMayflyOnly(b *testing.B) {
	data := sourceText(8 << 20)
	s := newScanner(b, Options{Enable: []string{RuleMayflyJob, RuleMayflyAdmin}, NoDecode: true})
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		s.ScanBytes("bench", data)
	}
}
