package scan

import (
	"bytes"
	"encoding/base64"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"
)

// stampLines puts prefix before every line of s, as GitHub Actions and
// GitLab Runner (FF_TIMESTAMPS) do in the job logs they hand out.
func stampLines(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

// A job log downloaded from GitHub Actions or GitLab has a timestamp before
// every line. A token that a hex dump, a PEM block or a quoted-printable
// part cuts over lines must be found through those timestamps, by scan and
// by a /v1/leaks report of the log, as without them.
func TestScanTimestampedLog(t *testing.T) {
	s := newScanner(t, Options{})
	prefixes := map[string]string{
		"GitHub Actions": "2026-12-07T06:00:00.1234567Z ",
		"GitLab":         "2026-12-07T06:00:00.123456Z 00O ",
	}
	type form struct {
		name string
		make func(tok string, lead int) string
	}
	var forms []form
	for _, f := range []string{"xxd", "hexdump -C", "od -A x -t x1z", "od -x"} {
		forms = append(forms, form{f, func(tok string, lead int) string {
			return "$ " + f + " .env\n" + hexDump([]byte(strings.Repeat("#", lead)+"MAYFLY_TOKEN="+tok+"\nCI=true\n"), f) + "$ next step\n"
		}})
	}
	forms = append(forms, form{"PEM", func(tok string, lead int) string {
		enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("#", lead) + "MAYFLY_TOKEN=" + tok + "\nCI=true\n"))
		var lines []string
		for len(enc) > 64 {
			lines, enc = append(lines, enc[:64]), enc[64:]
		}
		return "-----BEGIN ENV-----\n" + strings.Join(append(lines, enc), "\n") + "\n-----END ENV-----\n"
	}}, form{"quoted-printable", func(tok string, lead int) string {
		var b bytes.Buffer
		w := quotedprintable.NewWriter(&b)
		_, _ = w.Write([]byte(strings.Repeat("x", 40+lead) + " Your CI token is " + tok + " and it expires in an hour.\r\n"))
		_ = w.Close()
		return "Content-Transfer-Encoding: quoted-printable\n\n" + strings.ReplaceAll(b.String(), "\r\n", "\n") + "\n"
	}})
	for pname, prefix := range prefixes {
		for _, f := range forms {
			for lead := 0; lead < 16; lead += 5 {
				tok := jobToken(t)
				log := stampLines(f.make(tok, lead), prefix)
				if strings.Contains(log, tok) {
					t.Fatalf("precondition: the token is whole in %q", log)
				}
				var found []string
				for _, fd := range s.ScanBytes("ci.log", []byte(log)) {
					found = append(found, fd.Secret)
				}
				if !slices.Contains(found, tok) {
					t.Errorf("%s, %s, lead %d: scan misses the token (findings %d)", pname, f.name, lead, len(found))
				}
				if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
					t.Errorf("%s, %s, lead %d: /v1/leaks would not revoke it", pname, f.name, lead)
				}
			}
		}
	}
}
