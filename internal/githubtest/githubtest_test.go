package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The double refuses App JWTs as GitHub does.
func TestAppJWTChecks(t *testing.T) {
	s, err := Start(Options{Installations: []Installation{{ID: 1, Owner: "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	blk, _ := pem.Decode(s.PrivateKey)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	sign := func(k *rsa.PrivateKey, alg jose.SignatureAlgorithm, c jwt.Claims) string {
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := jwt.Signed(sig).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := jwt.Claims{Issuer: s.AppID, IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(9 * time.Minute))}
	tests := []struct {
		name, jwt string
		status    int
		why       string
	}{
		{"good", sign(key, jose.RS256, good), 200, ""},
		{"other key", sign(other, jose.RS256, good), 401, "JWT signature"},
		{"RS512", sign(key, jose.RS512, good), 401, "JWT does not parse"},
		{"wrong iss", sign(key, jose.RS256, jwt.Claims{Issuer: "999", IssuedAt: good.IssuedAt, Expiry: good.Expiry}), 401, "is not the App"},
		{"iat in the future", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: jwt.NewNumericDate(now.Add(time.Minute)), Expiry: good.Expiry}), 401, "iat"},
		{"exp past", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: good.IssuedAt, Expiry: jwt.NewNumericDate(now.Add(-time.Second))}), 401, "exp missing or past"},
		{"exp too far", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: good.IssuedAt, Expiry: jwt.NewNumericDate(now.Add(11 * time.Minute))}), 401, "more than 10 minutes"},
		{"not a JWT", "x.y.z", 401, "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/app/installations", nil)
			req.Header.Set("Authorization", "Bearer "+tt.jwt)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, tt.status, s.Refused())
			}
			if tt.why != "" {
				r := s.Refused()
				if len(r) == 0 || !strings.Contains(r[len(r)-1], tt.why) {
					t.Fatalf("refused for %v, want %q", r, tt.why)
				}
			}
		})
	}
}

// GitHub's rate-limit answers, exactly.
func TestRateLimits(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reset := time.Now().Add(time.Hour).Truncate(time.Second)
	s.LimitPrimary(reset)
	resp, err := http.Get(s.URL + "/repos/acme/app")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Ratelimit-Remaining") != "0" || resp.Header.Get("X-Ratelimit-Reset") == "" {
		t.Fatalf("primary: %d %v", resp.StatusCode, resp.Header)
	}
	s.LimitPrimary(time.Time{})
	s.LimitSecondary(1, 7)
	resp, _ = http.Get(s.URL + "/repos/acme/app")
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("secondary: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = http.Get(s.URL + "/repos/acme/app")
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("after the limits, no token: %d", resp.StatusCode)
	}
}
