package scan

import (
	"encoding/base64"
	"slices"
	"testing"
)

// PowerShell's -EncodedCommand takes a script as base64 of UTF-16LE; a CI
// log shows the command line (a runner's trace, a process listing). The
// masker masks a secret in it; `mayfly scan` must find a token in it, and
// a /v1/leaks report of that log revoke it.
func TestScanPowerShellEncodedCommand(t *testing.T) {
	s := newScanner(t, Options{})
	for _, script := range []string{
		"$env:MAYFLY_TOKEN = '%s'; ./deploy.ps1",
		"x%s",
		"xy%s\r\n",
		"Invoke-RestMethod -Headers @{Authorization = 'Bearer %s'} https://gw.example.com/gw/github/user",
	} {
		tok := jobToken(t)
		text := []byte(fmtScript(script, tok))
		le := make([]byte, 0, 2*len(text))
		for _, c := range text {
			le = append(le, c, 0)
		}
		log := "+ powershell.exe -NoProfile -NonInteractive -EncodedCommand " + base64.StdEncoding.EncodeToString(le) + "\n"
		var found []string
		for _, f := range s.ScanBytes("ci.log", []byte(log)) {
			found = append(found, f.Secret)
		}
		if !slices.Contains(found, tok) {
			t.Errorf("script %q: scan misses the token (findings %d)", script, len(found))
		}
		if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
			t.Errorf("script %q: /v1/leaks would not revoke it (tokens %d)", script, len(rep.Tokens))
		}
	}
}

func fmtScript(script, tok string) string {
	for i := 0; i+1 < len(script); i++ {
		if script[i:i+2] == "%s" {
			return script[:i] + tok + script[i+2:]
		}
	}
	return script
}
