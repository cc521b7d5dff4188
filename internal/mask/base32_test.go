package mask

import (
	"encoding/base32"
	"strings"
	"testing"
)

// b32Readable reports whether some run of base32 characters in out
// decodes, from some character offset, to bytes holding the first or the
// last 8 bytes of secret: what a reader of the log recovers from what the
// masker let through.
func b32Readable(out, secret string) bool {
	isB32 := func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= '2' && r <= '7' }
	for _, run := range strings.FieldsFunc(out, func(r rune) bool { return !isB32(r) }) {
		for off := 0; off < 8 && off < len(run); off++ {
			p := run[off:]
			p = p[:len(p)-len(p)%8]
			b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(p)
			if err != nil {
				continue
			}
			if strings.Contains(string(b), secret[:8]) || strings.Contains(string(b), secret[len(secret)-8:]) {
				return true
			}
		}
	}
	return false
}

// A secret in RFC 4648 base32 (upper case, padded or not: a TOTP or
// recovery-code export, an encoded config value) is masked as its base64
// is: alone, and at each of the 5 byte offsets it may have inside a longer
// encoded value. Before, base32 went through in the clear.
func TestBase32Masked(t *testing.T) {
	for _, secret := range []string{"hunter2-plain-Secret9", "s3cr3t\x00\xffbinary-value-01"} {
		m := newTestMatcher(t, secret)
		for k := 0; k < 5; k++ {
			blob := "prefix"[:k] + secret + "-suffix"
			for _, enc := range []*base32.Encoding{base32.StdEncoding, base32.StdEncoding.WithPadding(base32.NoPadding)} {
				for _, in := range []string{
					"seed: " + enc.EncodeToString([]byte(blob)) + "\n",
					"seed: " + enc.EncodeToString([]byte("prefix"[:k]+secret)) + "\n",
				} {
					if !b32Readable(in, secret) {
						t.Fatalf("precondition: the test cannot read the secret from %q", in)
					}
					out := string(maskParts(t, m, []byte(in), len(in)/2))
					if b32Readable(out, secret) {
						t.Fatalf("offset %d: the secret can be read back from %q (input %q)", k, out, in)
					}
				}
			}
		}
	}
}
