package scan

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Hex with a separator between the bytes on one line (Go's "% x", hexdump
// -ve, Python's bytes.hex(" "), openssl's colons, .NET's BitConverter
// dashes) of a token: the masker masks it; mayfly scan must find it and a
// /v1/leaks report of that log revoke it.
func TestScanSeparatedHex(t *testing.T) {
	s := newScanner(t, Options{})
	sep := func(v, by string, upper bool) string {
		h := hex.EncodeToString([]byte(v))
		if upper {
			h = strings.ToUpper(h)
		}
		var parts []string
		for i := 0; i < len(h); i += 2 {
			parts = append(parts, h[i:i+2])
		}
		return strings.Join(parts, by)
	}
	tests := []struct {
		name string
		log  func(tok string) string
	}{
		{"Go % x", func(tok string) string { return fmt.Sprintf("debug: token bytes [% x]\n", tok) }},
		{"Go % X after other bytes", func(tok string) string { return fmt.Sprintf("body: % X\n", "Authorization: Bearer "+tok) }},
		{"colons", func(tok string) string { return "value " + sep("x:"+tok, ":", false) + " end\n" }},
		{".NET BitConverter", func(tok string) string { return "Bytes: " + sep(tok, "-", true) + "\r\n" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := jobToken(t)
			log := tt.log(tok)
			var found []string
			for _, f := range s.ScanBytes("ci.log", []byte(log)) {
				found = append(found, f.Secret)
			}
			if !slices.Contains(found, tok) {
				t.Errorf("scan misses the token (findings %d)", len(found))
			}
			if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
				t.Errorf("/v1/leaks would not revoke it (tokens %d)", len(rep.Tokens))
			}
		})
	}
}
