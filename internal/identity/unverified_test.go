package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// DecodeUnverified reads what Verify would, as the same strings, whoever
// signed the token.
func TestDecodeUnverified(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	claims := ti.claims(clk)
	good := sign(t, rsaKey1(), jose.RS256, "k1", claims)
	id, err := v.Verify(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		raw   string
		check string // "" = decodes
	}{
		{"verifiable", good, ""},
		{"signed by anyone", sign(t, rsaEvil(), jose.RS256, "k1", claims), ""},
		{"empty", "", CheckFormat},
		{"not a JWS", "a.b.c", CheckFormat},
		{"alg none", "eyJhbGciOiJub25lIn0.e30.", CheckAlgorithm},
		{"claims not an object", signRaw(t, rsaKey1(), jose.RS256, "k1", []byte(`[1]`)), CheckFormat},
		{"too large", strings.Repeat("a", DefaultMaxTokenSize+1), CheckSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := DecodeUnverified(tt.raw)
			if tt.check != "" {
				if CheckOf(err) != tt.check {
					t.Fatalf("err = %v, want check %s", err, tt.check)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Issuer != ti.srv.URL || u.Subject != id.Subject || u.Algorithm != "RS256" || u.KeyID != "k1" ||
				len(u.Audience) != 1 || u.Audience[0] != testAudience || !u.Expiry.Equal(id.Expiry) {
				t.Errorf("decoded %+v", u)
			}
			for k, want := range id.Claims {
				if u.Claims[k] != want {
					t.Errorf("claim %s = %q, want %q (as Verify reads it)", k, u.Claims[k], want)
				}
			}
		})
	}
}

func FuzzDecodeUnverified(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4IiwiYXVkIjpbImEiXSwiZXhwIjoxfQ.c2ln")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := DecodeUnverified(raw)
		if err != nil {
			if CheckOf(err) == "" {
				t.Fatalf("error without a check: %v", err)
			}
			if len(raw) > 8 && strings.Contains(err.Error(), raw) {
				t.Fatalf("error quotes the token: %v", err)
			}
			return
		}
		if u.Claims == nil {
			t.Fatal("decoded without claims")
		}
		if _, err := json.Marshal(u); err != nil {
			t.Fatal(err)
		}
	})
}

// IssuerOf routes a token as Verify does, so offline answers name the
// issuer the server would check it against.
func TestUnverifiedIssuerOf(t *testing.T) {
	const url = "https://ci.example.com"
	cfgs := []IssuerConfig{
		{Name: "a", URL: url, Audience: "aud-a"},
		{Name: "b", URL: url, Audience: "aud-b", Algorithms: []string{"ES256"}},
		{Name: "c", URL: url, Audience: "aud-c", AllowMultipleAudiences: true},
		{Name: "d", URL: "https://other.example.com", Audience: "aud-a"},
		// SetIssuers drops it: its url has another key source already.
		{Name: "e", URL: url, Audience: "aud-e", JWKSURL: url + "/keys"},
	}
	tests := []struct {
		name  string
		u     Unverified
		want  string
		check string
	}{
		{"by audience", Unverified{Issuer: url, Algorithm: "RS256", Audience: []string{"aud-a"}}, "a", ""},
		{"by algorithm", Unverified{Issuer: url, Algorithm: "ES256", Audience: []string{"aud-b"}}, "b", ""},
		{"algorithm of no config with that audience", Unverified{Issuer: url, Algorithm: "ES256", Audience: []string{"aud-a"}}, "", CheckAudience},
		{"several audiences, azp ours", Unverified{Issuer: url, Algorithm: "RS256", Audience: []string{"aud-a", "x"}, AZP: "aud-a"}, "a", ""},
		{"several audiences, azp theirs", Unverified{Issuer: url, Algorithm: "RS256", Audience: []string{"aud-a", "x"}, AZP: "x"}, "", CheckAudience},
		{"several audiences allowed", Unverified{Issuer: url, Algorithm: "RS256", Audience: []string{"aud-c", "x"}, AZP: "x"}, "c", ""},
		{"untrusted issuer", Unverified{Issuer: "https://evil.example.com", Algorithm: "RS256", Audience: []string{"aud-a"}}, "", CheckIssuer},
		{"algorithm", Unverified{Issuer: url, Algorithm: "PS512", Audience: []string{"aud-a"}}, "", CheckAlgorithm},
		{"url repeated with another jwks_url", Unverified{Issuer: url, Algorithm: "RS256", Audience: []string{"aud-e"}}, "", CheckAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.u.IssuerOf(cfgs)
			if got != tt.want || CheckOf(err) != tt.check {
				t.Fatalf("IssuerOf = %q, %v; want %q, check %q", got, err, tt.want, tt.check)
			}
		})
	}
}

// A token the exchange refuses for its shape whoever signed it (Verify's
// format checks, ConsumeJTI's jti), IssuerOf refuses with the same error,
// where Verify would: `policy test` said such tokens were granted.
func TestIssuerOfRefusesWhatTheExchangeRefuses(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	cfg := ti.config()
	v := newTestVerifier(t, clk, cfg)
	tests := []struct {
		name  string
		edit  func(c map[string]any)
		check string // "" = accepted
	}{
		{"well formed", func(c map[string]any) {}, ""},
		{"no sub", func(c map[string]any) { delete(c, "sub") }, CheckMissingClaim},
		{"sub a number", func(c map[string]any) { c["sub"] = 5 }, CheckFormat},
		{"sub empty", func(c map[string]any) { c["sub"] = "" }, CheckFormat},
		{"azp a number", func(c map[string]any) { c["azp"] = 7 }, CheckFormat},
		{"jti a number", func(c map[string]any) { c["jti"] = 9 }, CheckFormat},
		{"no jti", func(c map[string]any) { delete(c, "jti") }, CheckMissingClaim},
		{"jti empty", func(c map[string]any) { c["jti"] = "" }, CheckMissingClaim},
		{"iat a string", func(c map[string]any) { c["iat"] = "1700000000" }, CheckFormat},
		{"no iat", func(c map[string]any) { delete(c, "iat") }, CheckMissingClaim},
		{"nbf a bool", func(c map[string]any) { c["nbf"] = true }, CheckFormat},
		{"exp a string", func(c map[string]any) { c["exp"] = "soon" }, CheckFormat},
		{"aud holds a number", func(c map[string]any) { c["aud"] = []any{testAudience, 1} }, CheckFormat},
		{"iss a number", func(c map[string]any) { c["iss"] = 1 }, CheckFormat},
		{"no iss", func(c map[string]any) { delete(c, "iss") }, CheckMissingClaim},
		{"NUL in a nested claim", func(c map[string]any) { c["x"] = []any{"a\x00"} }, CheckFormat},
		{"bad sub, other audience", func(c map[string]any) { c["sub"] = 5; c["aud"] = "x" }, CheckFormat},
		{"no jti, other audience", func(c map[string]any) { delete(c, "jti"); c["aud"] = "x" }, CheckAudience},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ti.claims(clk)
			tt.edit(c)
			raw := sign(t, rsaKey1(), jose.RS256, "k1", c)
			id, err := v.Verify(context.Background(), raw)
			if err == nil {
				err = v.ConsumeJTI(context.Background(), &memJTI{}, id)
			}
			if CheckOf(err) != tt.check {
				t.Fatalf("exchange: %v, want check %q", err, tt.check)
			}
			u, derr := DecodeUnverified(raw)
			if derr != nil {
				t.Fatal(derr) // it still shows what the token says
			}
			_, ierr := u.IssuerOf([]IssuerConfig{cfg})
			if fmt.Sprint(ierr) != fmt.Sprint(err) {
				t.Errorf("IssuerOf: %v; the exchange: %v", ierr, err)
			}
		})
	}
}
