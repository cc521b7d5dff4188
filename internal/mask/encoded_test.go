package mask

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
)

// decodedPieces decodes each run of base64 characters in out, at each
// offset, as UTF-16 little-endian text: what a reader of the log recovers
// from what the masker let through.
func decodedPieces(out string) []string {
	var texts []string
	for _, run := range strings.FieldsFunc(out, func(r rune) bool { return r >= 0x80 || !isB64(byte(r)) && r != '=' }) {
		run = strings.TrimRight(run, "=")
		for off := 0; off < 4 && off < len(run); off++ {
			p := run[off:]
			if len(p)%4 == 1 {
				p = p[:len(p)-1]
			}
			b, err := base64.RawStdEncoding.DecodeString(p)
			if err != nil {
				continue
			}
			for k := 0; k < 2 && k < len(b); k++ {
				texts = append(texts, decodeUTF16(b[k:len(b)-(len(b)-k)%2], binary.LittleEndian))
			}
		}
	}
	return texts
}

// PowerShell's -EncodedCommand takes a script as base64 of UTF-16LE; a CI
// log shows the command line (a runner's trace, `Write-Host`, a process
// listing). A secret inside the script must not be readable from it.
func TestPowerShellEncodedCommand(t *testing.T) {
	for _, secret := range []string{"hunter2-plain-Secret9", "gr\u00fc\u00dfe-\u65e5\u672c-\U0001F511-key"} {
		m := newTestMatcher(t, secret)
		for _, script := range []string{
			"$env:API_TOKEN = '" + secret + "'; ./deploy.ps1",
			"$t='" + secret + "'",
			"x" + secret,
			"xy" + secret + "\r\n",
		} {
			enc := base64.StdEncoding.EncodeToString(utf16Text(script, binary.LittleEndian))
			in := "Run powershell.exe -NoProfile -EncodedCommand " + enc + "\n"
			if !strings.Contains(strings.Join(decodedPieces(in), "|"), secret) {
				t.Fatalf("precondition: the test cannot read %q from its input", script)
			}
			out := string(maskParts(t, m, []byte(in), len(in)/2))
			for _, text := range decodedPieces(out) {
				if strings.Contains(text, secret[:10]) || strings.Contains(text, secret[len(secret)-10:]) {
					t.Fatalf("script %q: %q can be read back from %q", script, text, out)
				}
			}
		}
	}
}
