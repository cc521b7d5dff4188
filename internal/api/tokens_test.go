package api

import (
	"encoding/base64"
	"strings"
	"testing"
)

// unverifiedIssuer finds iss in a JWT payload without parsing or
// verifying it (for the per-issuer rate limit only), and gives up on
// anything odd.
func TestUnverifiedIssuer(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	tests := []struct {
		name, token, want string
	}{
		{"plain", jwt(`{"sub":"x","iss":"https://ci.example"}`), "https://ci.example"},
		{"spaces before the value", jwt(`{"iss" :  "https://a.example","sub":"x"}`), "https://a.example"},
		{"not a string", jwt(`{"iss":42}`), ""},
		{"no iss", jwt(`{"sub":"x"}`), ""},
		{"unterminated", jwt(`{"iss":"https://a.example`), ""},
		{"too long a value", jwt(`{"iss":"` + strings.Repeat("a", 513) + `"}`), ""},
		{"longest value", jwt(`{"iss":"` + strings.Repeat("a", 512) + `"}`), strings.Repeat("a", 512)},
		{"two parts", "a.b", ""},
		{"payload not base64", "a.!!!.c", ""},
		{"too large a token", jwt(`{"iss":"https://a.example","pad":"` + strings.Repeat("p", 16<<10) + `"}`), ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		if got := unverifiedIssuer(tt.token); got != tt.want {
			t.Errorf("%s: unverifiedIssuer = %q, want %q", tt.name, got, tt.want)
		}
	}
}
