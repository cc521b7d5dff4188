package scan

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// An admin session value (mfys_ and 43 base64url characters, as `mayfly
// auth login` keeps it) is found by the scanner and taken by a leak
// report, which revokes the session; it carries no checksum, so it is
// found by its exact shape only.
func TestAdminSessionValues(t *testing.T) {
	v := "mfys_" + "q7Z2xK9mP4r8T1vW3yB6nC0dF5gH2j-_aB3cD4eF5gH" // mayfly:allow test session value
	if len(v) != 48 {
		t.Fatalf("test value of %d characters", len(v))
	}
	b64 := base64.StdEncoding.EncodeToString([]byte("Authorization: Bearer " + v))
	s := newScanner(t, Options{})
	tests := []struct {
		name, text string
		want       bool
	}{
		{"sessions.json", `{"https://mayfly.example:8443":{"token":"` + v + `","expires_at":"2026-12-06T18:00:00Z"}}`, true},
		{"bearer header", "Authorization: Bearer " + v + "\r\n", true},
		{"base64 of a header", "log: " + b64 + "\n", true},
		{"after JSON \\n", `{"log":"x\n` + v + `"}`, true},
		{"glued to a word", "xyz" + v, false},
		{"one character longer", v + "A", false},
		{"one character shorter", v[:len(v)-1] + " ", false},
		{"not base64url", strings.Replace(v, "q7", "q+", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found := false
			for _, f := range s.ScanBytes("ci.log", []byte(tt.text)) {
				if f.Rule == RuleMayflySession && f.Secret == v {
					found = true
					if strings.Contains(f.Hint, v[10:]) {
						t.Errorf("hint %q holds the value", f.Hint)
					}
				}
			}
			if found != tt.want {
				t.Errorf("the scanner finds it: %v, want %v", found, tt.want)
			}
			if got := slices.Contains(ParseLeakReport([]byte(tt.text)).Sessions, v); got != tt.want {
				t.Errorf("a leak report takes it: %v, want %v", got, tt.want)
			}
		})
	}
}
