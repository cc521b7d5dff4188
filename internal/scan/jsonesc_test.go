package scan

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// jsonEscapeAll writes every character of s as a JSON \u escape.
func jsonEscapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, `\u%04x`, s[i])
	}
	return b.String()
}

// JSON may escape any character: .NET's System.Text.Json writes '+' as
// \u002B (an AWS secret key, any base64), PHP's json_encode writes '/' as
// \/ (every URL: a Slack webhook), and an escaped value reads as the same
// string to every JSON reader. TruffleHog decodes \u escapes before its
// detectors run; the scanner reads through them (and through \/) too.
func TestSecretsThroughJSONEscapes(t *testing.T) {
	g := newGen(67)
	aws := "wJalrXUtnFEMI/K7MDENG+bPxRfiCY" + g.str(abcB62, 10)
	gh := g.crcTok("ghp_")
	job := jobToken(t)
	slack := "hooks.slack.com/services/T" + g.str(abcAWS, 8) + "/B" + g.str(abcAWS, 10) + "/" + g.str(abcB62, 24)
	tests := []struct {
		name, text   string
		rule, secret string
	}{
		{".NET '+' as \\u002B", `{"AccessKeyId":"AKIA` + g.str(abcAWS, 16) + `","SecretAccessKey":"` +
			strings.ReplaceAll(aws, "+", `\u002B`) + `"}`, "aws-secret-access-key", aws},
		{"PHP '/' as \\/", `{"webhook":"https:\/\/` + strings.ReplaceAll(slack, "/", `\/`) + `"}`, "slack-webhook", slack},
		{"first letter escaped", `{"token":"\u0067hp_` + gh[4:] + `"}`, "github-pat", gh}, // mayfly:allow a generated token, escaped
		{"every letter escaped", `{"t":"` + jsonEscapeAll(gh) + `"}`, "github-pat", gh},
		{"mayfly token, every letter escaped", `{"env":{"MAYFLY_TOKEN":"` + jsonEscapeAll(job) + `"}}`, RuleMayflyJob, job}, // mayfly:allow a generated token, escaped
	}
	s := newScanner(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			found := false
			for _, f := range s.ScanBytes("out.json", []byte(tt.text+"\n")) {
				got = append(got, f.Rule)
				if f.Rule == tt.rule && f.Secret == tt.secret {
					found = true
				}
			}
			if !found {
				t.Fatalf("%s not found (findings: %v)", tt.rule, got)
			}
		})
	}
	// A leak report holding a mayfly token only \u-escaped revokes it, as
	// scan --revoke of the same log does.
	if rep := ParseLeakReport([]byte(`{"log":"` + jsonEscapeAll(job) + `"}`)); !slices.Contains(rep.Tokens, job) {
		t.Errorf("the leak report does not name the escaped token")
	}
}
