package scan

import (
	"bytes"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"
)

// An e-mail or MIME part in quoted-printable dumped into a CI log (a
// notification mail, a test's captured SMTP session) cuts lines longer
// than 76 characters with soft line breaks ('=' then the line end): a token
// cut by one must still be found and revoked, as the masker masks it.
func TestScanQuotedPrintable(t *testing.T) {
	s := newScanner(t, Options{})
	for lead := 0; lead < 76; lead += 5 {
		for _, eol := range []string{"\r\n", "\n"} {
			tok := jobToken(t)
			var b bytes.Buffer
			w := quotedprintable.NewWriter(&b)
			_, _ = w.Write([]byte(strings.Repeat("x", lead) + " Your CI token is " + tok + " and it expires in an hour.\r\n"))
			_ = w.Close()
			log := "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
				strings.ReplaceAll(b.String(), "\r\n", eol) + "\n"
			var found []string
			for _, f := range s.ScanBytes("ci.log", []byte(log)) {
				found = append(found, f.Secret)
			}
			if !slices.Contains(found, tok) {
				t.Errorf("lead %d, eol %q: scan misses the token (findings %d)", lead, eol, len(found))
			}
			if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
				t.Errorf("lead %d, eol %q: /v1/leaks would not revoke it", lead, eol)
			}
		}
	}
}
