package mask

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"testing"
)

// longPEM is a PEM block of n bytes or so: lines of 64 base64 characters
// between a BEGIN and an END line.
func longPEM(n int) string {
	r := rand.New(rand.NewPCG(11, 12))
	raw := make([]byte, n*3/4)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	b := base64.StdEncoding.EncodeToString(raw)
	var sb strings.Builder
	sb.WriteString("-----BEGIN PRIVATE KEY-----\n")
	for len(b) > 64 {
		sb.WriteString(b[:64] + "\n")
		b = b[64:]
	}
	sb.WriteString(b + "\n-----END PRIVATE KEY-----\n")
	return sb.String()
}

// A long secret (a PEM key, a kubeconfig: a credential the gateway injects,
// a value `mayfly exec --mask-env` or `mask --values-file` is given) costs
// little to add: every form of every line of it made building a Matcher
// take ~30 KB and 0.5 ms per secret byte (a 4 KiB key 125 MB and 2 s, a
// 64 KiB one 1.9 GB and 35 s). It is still masked as it is printed whole,
// line by line, and in the forms SPEC section 8 names: base64, hex,
// percent-encoding and JSON escaping.
func TestLongSecretCheap(t *testing.T) {
	multi := longPEM(8 << 10)
	single := strings.ReplaceAll(multi[28:len(multi)-26], "\n", "")
	for _, tc := range []struct {
		name   string
		secret string
	}{
		{"multi-line", multi},
		{"one line", single},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			m := newTestMatcher(t, tc.secret)
			runtime.ReadMemStats(&after)
			// Bytes allocated per secret byte: a short secret's every
			// form, ~300 pattern bytes a byte, cost ~30 KB (and ~10 KB
			// kept); a long one's ~30 pattern bytes ~3 KB.
			perByte := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(tc.secret))
			if perByte > 4096 {
				t.Errorf("building for a %d-byte secret allocated %.0f bytes per secret byte", len(tc.secret), perByte)
			}
			if perByte := float64(m.Size()) / float64(len(tc.secret)); perByte > 2048 {
				t.Errorf("the Matcher for a %d-byte secret holds %.0f bytes per secret byte", len(tc.secret), perByte)
			}

			s := tc.secret
			j, _ := json.Marshal(s)
			php := strings.ReplaceAll(string(j), "/", `\/`)
			b64 := base64.StdEncoding.EncodeToString([]byte(s))
			var wrapped strings.Builder
			for b := b64; len(b) > 0; b = b[min(len(b), 76):] {
				wrapped.WriteString(b[:min(len(b), 76)] + "\n")
			}
			lines := strings.Split(strings.TrimSpace(s), "\n")
			for _, in := range []string{
				"key: " + s + " end",
				`{"key":` + string(j) + `}`,
				`{"key":` + php + `}`,
				"data: " + b64 + "\n",
				"x" + b64 + "\n", // at another alignment
				"xy" + base64.URLEncoding.EncodeToString([]byte(s)),
				"hex " + hex.EncodeToString([]byte(s)),
				"HEX " + strings.ToUpper(hex.EncodeToString([]byte(s))),
				"?key=" + url.QueryEscape(s),
				"/" + url.PathEscape(s),
				wrapped.String(),
				"line: " + lines[len(lines)/2] + "\n",
				"crlf: " + strings.ReplaceAll(s, "\n", "\r\n"),
			} {
				out := string(maskParts(t, m, []byte(in)))
				for _, l := range lines {
					if len(l) >= 16 && strings.Contains(out, l[:16]) {
						t.Fatalf("%.40q... masked as %.200q", in, out)
					}
				}
				if strings.Contains(out, b64[8:40]) || strings.Contains(out, hex.EncodeToString([]byte(s[8:40]))) {
					t.Fatalf("%.40q... masked as %.200q", in, out)
				}
			}
		})
	}
}
