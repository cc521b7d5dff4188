package sso

import (
	"strings"
	"testing"
)

// Roles are never taken from an OpenID Connect profile claim: the user
// sets their own name, nickname, preferred_username, website… at many
// providers (OIDC Core 5.1 says so of preferred_username; Entra says it
// must not authorize), so mapping one gave admin to whoever renamed
// themselves to a listed value. groups, email (verified only), sub and a
// provider's own claims are still taken.
func TestConfigRefusesAProfileClaim(t *testing.T) {
	base := Config{Issuer: "https://idp.example.com", ClientID: "mayfly", RedirectURL: "https://mayfly.example.com/ui/callback",
		Roles: map[string][]string{"admin": {"alice"}}}
	tests := []struct {
		claim string
		ok    bool
	}{
		{"", true}, {"groups", true}, {"email", true}, {"sub", true}, {"roles", true}, {"cognito:groups", true},
		{"preferred_username", false}, {"name", false}, {"nickname", false}, {"given_name", false},
		{"family_name", false}, {"middle_name", false}, {"website", false}, {"profile", false}, {"picture", false},
		{"locale", false}, {"zoneinfo", false}, {"gender", false}, {"birthdate", false}, {"address", false},
		{"phone_number", false}, {"updated_at", false}, {"email_verified", false},
		{"Preferred_Username", false},
	}
	for _, tt := range tests {
		t.Run(tt.claim, func(t *testing.T) {
			c := base
			c.Claim = tt.claim
			err := c.Check()
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "admin_oidc.claim")) {
				t.Fatalf("accepted (%v)", err)
			}
		})
	}
}
