package mask

import (
	"bytes"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// qpEncode is s as Go's mime/quotedprintable writes it: '=' as =3D, lines
// cut at 76 characters by a soft line break ("=\r\n").
func qpEncode(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// An e-mail or MIME part in quoted-printable, dumped into a CI log (a
// notification mail, a test's captured SMTP session): '=' is written =3D
// and long lines are cut by soft line breaks, "=\r\n" (or "=\n" once the
// log's line ends are converted). A secret in it must not be readable
// once the reader decodes the quoted-printable.
func TestQuotedPrintableMasked(t *testing.T) {
	secrets := []string{
		"hunter2-plain-Secret9-with-a-longer-tail-0123456789",
		"dGhpcyBpcyBhIGJhc2U2NCBrZXk=",                // mayfly:allow a padded base64 key
		"gr\u00fc\u00dfe-\u65e5\u672c-\U0001F511-key", // non-ASCII: =C3=BC...
	}
	for _, secret := range secrets {
		m := newTestMatcher(t, secret)
		for lead := 0; lead < 80; lead += 3 {
			for _, eol := range []string{"\r\n", "\n"} {
				body := strings.Repeat("x", lead) + " token " + secret + " end of mail"
				qp := strings.ReplaceAll(qpEncode(t, body), "\r\n", eol)
				in := "Content-Transfer-Encoding: quoted-printable\n\n" + qp + "\n"
				dec, err := readQP(in[strings.Index(in, "\n\n")+2:])
				if err != nil || !strings.Contains(dec, secret) {
					t.Fatalf("precondition: %q does not decode to the secret (%v)", qp, err)
				}
				out := string(maskParts(t, m, []byte(in), len(in)/3))
				got, _ := readQP(out[strings.Index(out, "\n\n")+2:])
				for _, piece := range []string{secret[:MinSecretLen+2], secret[len(secret)-MinSecretLen-2:]} {
					if strings.Contains(got, piece) {
						t.Fatalf("lead %d, eol %q: %q decodes to %q, holding %q", lead, eol, out, got, piece)
					}
				}
			}
		}
	}
}

func readQP(s string) (string, error) {
	b := new(bytes.Buffer)
	_, err := b.ReadFrom(quotedprintable.NewReader(strings.NewReader(s)))
	return b.String(), err
}
