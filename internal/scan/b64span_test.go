package scan

import (
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// decodeHit follows an encoded span at most maxSpan past the keyword that
// revealed it, and later keywords before the span's end are not decoded
// again. A second token whose encoding straddles that cut (a Kubernetes
// secret of a whole .env file, a CI variable holding a config) must still
// be found, from its own keyword.
func TestEncodedTokenAtSpanCut(t *testing.T) {
	s := newScanner(t, Options{})
	tests := []struct {
		name   string
		encode func([]byte) string
		lo, hi int // plain offsets of the second token around the cut (maxSpan encoded bytes after the first)
	}{
		{"base64", base64.StdEncoding.EncodeToString, 12240, 12300},
		{"hex", hex.EncodeToString, 8150, 8200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for at := tt.lo; at < tt.hi; at += 3 {
				tok1, tok2 := jobToken(t), jobToken(t)
				plain := "A=" + tok1 + "\n"
				plain += "# " + strings.Repeat("configuration comment line ", (at-len(plain))/27+1)
				plain = plain[:at-len("B=")] + "B=" + tok2 + "\n" + strings.Repeat("# more config\n", 400)
				in := "data:\n  env: " + tt.encode([]byte(plain)) + "\n"
				var got []string
				for _, f := range s.ScanBytes("secret.yaml", []byte(in)) {
					got = append(got, f.Secret)
				}
				if !slices.Contains(got, tok1) || !slices.Contains(got, tok2) {
					t.Errorf("token at plain offset %d: first found %v, second found %v",
						at, slices.Contains(got, tok1), slices.Contains(got, tok2))
				}
			}
		})
	}
}
