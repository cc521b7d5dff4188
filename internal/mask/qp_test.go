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

// A quoted-printable soft line break that a write boundary splits ('=' at
// the end of one Write, its line end at the start of the next: a mail
// relayed through a pipe, a buffered writer flushing at its size) is
// looked through as one that arrives whole: at every split point of the
// encoded body, through both streaming APIs, the output is the same as
// masking the body in one piece, and the secret cannot be read back.
func TestQuotedPrintableSplitBreak(t *testing.T) {
	const secret = "hunter2-plain-Secret9-with-a-longer-tail-0123456789"
	m := newTestMatcher(t, secret)
	for _, eol := range []string{"\r\n", "\n"} {
		for _, lead := range []int{20, 40, 62} {
			body := strings.Repeat("x", lead) + " token " + secret + " end of mail"
			qp := strings.ReplaceAll(qpEncode(t, body), "\r\n", eol)
			if !strings.Contains(qp, "="+eol) {
				t.Fatalf("precondition: %q has no soft line break", qp)
			}
			in := []byte("Content-Transfer-Encoding: quoted-printable\n\n" + qp + "\n")
			want := m.MaskBytes(in)
			for cut := 0; cut <= len(in); cut++ {
				out := maskParts(t, m, in, cut)
				st := m.NewStream(StreamOptions{})
				sout := st.Flush(st.Mask(st.Mask(nil, in[:cut]), in[cut:]), MinSecretLen)
				for name, got := range map[string][]byte{"Writer": out, "Stream": sout} {
					if !bytes.Equal(got, want) {
						t.Fatalf("eol %q, lead %d, cut %d (%q|%q): %s gives %q, in one piece %q",
							eol, lead, cut, in[max(0, cut-3):cut], in[cut:min(len(in), cut+3)], name, got, want)
					}
					dec, _ := readQP(string(got[bytes.Index(got, []byte("\n\n"))+2:]))
					for _, piece := range []string{secret[:MinSecretLen+2], secret[len(secret)-MinSecretLen-2:]} {
						if strings.Contains(dec, piece) {
							t.Fatalf("eol %q, lead %d, cut %d: %s output %q decodes to %q, holding %q", eol, lead, cut, name, got, dec, piece)
						}
					}
				}
			}
		}
	}
}
