package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"testing"
)

// stampLines puts prefix before every line of s, as GitHub Actions and
// GitLab Runner (FF_TIMESTAMPS) do in the job logs they hand out.
func stampLines(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

// logPrefixes are the timestamps CI systems put before each line of a job
// log: GitHub Actions', GitLab Runner's (with its stream and flag), and
// one with fewer fraction digits.
var logPrefixes = map[string]string{
	"GitHub Actions":        "2026-12-07T06:00:00.1234567Z ",
	"GitLab":                "2026-12-07T06:00:00.123456Z 00O ",
	"GitLab, stderr":        "2026-12-07T06:00:00.123456Z 01E ",
	"no fraction":           "2026-12-07T06:00:00Z ",
	"fraction of one digit": "2026-12-07T06:00:00.5Z ",
}

// A job log downloaded from GitHub Actions or GitLab (through the gateway,
// or piped through mayfly mask) has a timestamp before every line: a
// secret's base64 wrapped over lines, a PEM block or a quoted-printable
// part then has one between its pieces. They are looked through as the
// line end is, whatever the cuts of the stream.
func TestTimestampedWrapsMasked(t *testing.T) {
	const secret = "sk-live-q7Z2xK9mP4q7Z2xK9mP4q7Z2xK9mP4q7" // mayfly:allow test secret
	m := newTestMatcher(t, secret)
	plain := "HOME=/home/runner\nCI=true\nAPI_KEY=" + secret + "\nOTHER=value\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(plain))
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	_, _ = w.Write([]byte(strings.Repeat("x", 50) + " Your key is " + secret + " and it expires in an hour."))
	_ = w.Close()
	forms := []struct {
		name, text string
		unwrap     func(string) string
	}{
		{"base64, 76 columns", "$ base64 .env\n" + wrap(b64, 76, "\n"), func(s string) string { return strings.ReplaceAll(s, "\n", "") }},
		{"PEM, 64 columns", "-----BEGIN ENV-----\n" + wrap(b64, 64, "\n") + "-----END ENV-----\n", func(s string) string { return strings.ReplaceAll(s, "\n", "") }},
		{"Ruby, 60 columns", wrap(b64, 60, "\n"), func(s string) string { return strings.ReplaceAll(s, "\n", "") }},
		{"quoted-printable", "Content-Transfer-Encoding: quoted-printable\n\n" + strings.ReplaceAll(qp.String(), "\r\n", "\n") + "\n",
			func(s string) string { return strings.ReplaceAll(s, "=\n", "") }},
	}
	for pname, prefix := range logPrefixes {
		for _, f := range forms {
			in := []byte(stampLines(f.text, prefix) + prefix + "$ next\n")
			if !containsAny([]byte(f.unwrap(strings.ReplaceAll(string(in), prefix, ""))), Forms([]byte(secret))) {
				t.Fatalf("%s, %s: precondition: the joined input holds no form", pname, f.name)
			}
			out := m.MaskBytes(in)
			if leaked := containsAny([]byte(f.unwrap(strings.ReplaceAll(string(out), prefix, ""))), Forms([]byte(secret))); leaked {
				t.Errorf("%s, %s: a form of the secret shows once the lines are joined:\n%s", pname, f.name, out)
				continue
			}
			if !bytes.HasSuffix(out, []byte(prefix+"$ next\n")) {
				t.Errorf("%s, %s: the text after it changed:\n%s", pname, f.name, out)
			}
			for cut := 0; cut <= len(in); cut++ {
				if got := maskParts(t, m, in, cut); !bytes.Equal(got, out) {
					t.Fatalf("%s, %s, cut %d: %q, in one piece %q", pname, f.name, cut, got, out)
				}
			}
		}
	}
}

// A hex dump in such a log has a timestamp before each of its lines:
// neither its hex nor its text column may give the secret back.
func TestTimestampedDumpMasked(t *testing.T) {
	const secret = "hunter2-plain-Secret9" // mayfly:allow test secret
	m := newTestMatcher(t, secret)
	formats := []struct {
		name  string
		dump  func([]byte) string
		words bool
	}{
		{"xxd", func(b []byte) string { return xxdDump(b, false) }, false},
		{"hexdump -C", func(b []byte) string { return hex.Dump(b) + fmt.Sprintf("%08x\n", len(b)) }, false},
		{"od -A x -t x1z", func(b []byte) string { return odDump(b, false) }, false},
		{"od -x", func(b []byte) string { return odDump(b, true) }, true},
	}
	for pname, prefix := range logPrefixes {
		for _, f := range formats {
			for lead := 0; lead < 16; lead += 3 {
				data := []byte(strings.Repeat("#", lead) + "export API_TOKEN=" + secret + "\nnext line\n")
				before := "$ xxd .env\n"
				if lead%2 == 1 {
					before = strings.Repeat("a long line of build output ", 3) + "\n$ xxd\n"
				}
				in := []byte(stampLines(before+f.dump(data)+"$ done\n", prefix))
				out := string(m.MaskBytes(in))
				d, text := readDump(strings.ReplaceAll(out, prefix, ""), f.words)
				for _, piece := range []string{secret[:MinSecretLen+2], secret[len(secret)-MinSecretLen-2:]} {
					if strings.Contains(d, piece) || strings.Contains(text, piece) {
						t.Fatalf("%s, %s, lead %d: %q can be read back from\n%s", pname, f.name, lead, piece, out)
					}
				}
				if !strings.HasPrefix(out, stampLines(before, prefix)) || !strings.HasSuffix(out, prefix+"$ done\n") {
					t.Fatalf("%s, %s, lead %d: the text around the dump changed:\n%s", pname, f.name, lead, out)
				}
				if lead%6 != 3 {
					continue
				}
				for cut := 0; cut <= len(in); cut++ {
					if got := maskParts(t, m, in, cut); string(got) != out {
						t.Fatalf("%s, %s, lead %d, cut %d: %q, in one piece %q", pname, f.name, lead, cut, got, out)
					}
				}
			}
		}
	}
}

// Timestamped lines that are no dump's are left alone.
func TestTimestampedLookalikesIntact(t *testing.T) {
	m := newTestMatcher(t, "hunter2-plain-Secret9")
	for _, prefix := range logPrefixes {
		for _, in := range []string{
			"3f2a9c1 Fix the build\n0123abc add feature dead beef\n",
			"00000000: 6865 6c6c 6f20 776f 726c 640a            hello world.\n",
			"deadbeef cafe babe 0011 2233\nabcdef012345 not a dump\n",
			"plain text\n2026-12-07 not a stamp\n",
		} {
			in = stampLines(in, prefix)
			if got := string(m.MaskBytes([]byte(in))); got != in {
				t.Errorf("%q became %q", in, got)
			}
		}
	}
}
