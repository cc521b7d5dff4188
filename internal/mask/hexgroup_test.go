package mask

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// Hex with a separator between the bytes, on one line, as debug output
// prints a secret's bytes: Go's fmt "% x" and "% X", hexdump -ve '1/1
// "%.2x "', Python's bytes.hex(" ") and hex(":"), openssl's and Java's
// HexFormat colons, .NET's BitConverter.ToString dashes. A reader joins
// the digits back; the secret must not be readable from them.
func TestSeparatedHexMasked(t *testing.T) {
	const secret = "hunter2-plain-Secret9"
	m := newTestMatcher(t, secret)
	sep := func(s, by string, upper bool) string {
		h := hex.EncodeToString([]byte(s))
		if upper {
			h = strings.ToUpper(h)
		}
		var parts []string
		for i := 0; i < len(h); i += 2 {
			parts = append(parts, h[i:i+2])
		}
		return strings.Join(parts, by)
	}
	tests := []struct{ name, in string }{
		{"Go % x", fmt.Sprintf("token bytes: [% x]\n", secret)},
		{"Go % X", fmt.Sprintf("token bytes: % X\n", "T="+secret)},
		{"hexdump -ve", sep("export T="+secret+"\n", " ", false) + " \n"},
		{"colons", "sha: " + sep(secret, ":", false) + "\n"},
		{"colons, upper case", "key " + sep(secret, ":", true) + " ok\n"},
		{".NET BitConverter", "Bytes: " + sep(secret, "-", true) + "\n"},
		{"dashes, lower case", "Bytes: " + sep(secret, "-", false) + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := string(maskParts(t, m, []byte(tt.in), len(tt.in)/2))
			digits := strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F' {
					return r
				}
				return -1
			}, out)
			for _, piece := range []string{secret[:MinSecretLen+2], secret[len(secret)-MinSecretLen-2:]} {
				for _, h := range []string{hex.EncodeToString([]byte(piece)), strings.ToUpper(hex.EncodeToString([]byte(piece)))} {
					if strings.Contains(digits, h) {
						t.Fatalf("%q: the hex of %q can be read back", out, piece)
					}
				}
			}
		})
	}
}
