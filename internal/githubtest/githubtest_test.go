package githubtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mayfly-sh/mayfly/internal/token"
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
		// GitHub's documented window: iat 60 s in the past against clock
		// drift, exp no more than 10 minutes ahead.
		{"iat 60 s past, exp 10 min ahead", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(10 * time.Minute))}), 200, ""},
		{"exp 10 min and 5 s ahead", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: good.IssuedAt, Expiry: jwt.NewNumericDate(now.Add(10*time.Minute + 5*time.Second))}), 401, "more than 10 minutes"},
		{"no iat", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, Expiry: good.Expiry}), 401, "iat missing"},
		{"no exp", sign(key, jose.RS256, jwt.Claims{Issuer: s.AppID, IssuedAt: good.IssuedAt}), 401, "exp missing"},
		{"no iss", sign(key, jose.RS256, jwt.Claims{IssuedAt: good.IssuedAt, Expiry: good.Expiry}), 401, "is not the App"},
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
	s.LimitSecondary(1, -1)
	resp, _ = http.Get(s.URL + "/repos/acme/app")
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-Ratelimit-Remaining") == "0" {
		t.Fatalf("secondary without retry-after: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = http.Get(s.URL + "/repos/acme/app")
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("after the limits, no token: %d", resp.StatusCode)
	}
}

// appJWT signs a good App JWT for s.
func appJWT(t *testing.T, s *Server) string {
	t.Helper()
	blk, _ := pem.Decode(s.PrivateKey)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	out, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: s.AppID, IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(9 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// accessTokens asks s for an installation token as mayfly does.
func accessTokens(t *testing.T, s *Server, inst, body string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/app/installations/"+inst+"/access_tokens", bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+appJWT(t, s))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// The token request is checked as GitHub documents it: permission names
// and levels (422 for one GitHub does not have), within what the
// installation was granted (422), repositories within it (422), an
// installation that exists (404); the token gets exactly what was asked,
// with metadata: read.
func TestAccessTokenChecks(t *testing.T) {
	s, err := Start(Options{Installations: []Installation{{ID: 7, Owner: "acme", Repositories: []string{"app", "lib"},
		Permissions: map[string]string{"contents": "write", "issues": "read", "metadata": "read"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		name, inst, body string
		status           int
		why              string
	}{
		{"unknown permission", "7", `{"permissions":{"contentz":"read"}}`, 422, "unknown permission contentz"},
		{"unknown level", "7", `{"permissions":{"contents":"admin"}}`, 422, "unknown permission contents: admin"},
		{"write-only permission read", "7", `{"permissions":{"workflows":"read"}}`, 422, "unknown permission workflows: read"},
		{"not granted", "7", `{"permissions":{"issues":"write"}}`, 422, "permission not granted: issues: write"},
		{"not in the installation", "7", `{"permissions":{"actions":"read"}}`, 422, "permission not granted: actions: read"},
		{"repository outside", "7", `{"repositories":["other"],"permissions":{"contents":"read"}}`, 422, "repository not in the installation: other"},
		{"unknown field", "7", `{"permission":{"contents":"read"}}`, 422, "body"},
		{"no installation", "8", `{}`, 404, "unknown installation 8"},
		{"not a number", "x", `{}`, 404, "unknown installation x"},
		{"granted", "7", `{"repositories":["app"],"permissions":{"contents":"write","issues":"read"}}`, 201, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, out := accessTokens(t, s, tt.inst, tt.body, nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d (%v)", status, tt.status, s.Refused())
			}
			if tt.why != "" {
				r := s.Refused()
				if len(r) == 0 || !strings.Contains(r[len(r)-1], tt.why) {
					t.Fatalf("refused for %v, want %q", r, tt.why)
				}
				return
			}
			tok, _ := out["token"].(string)
			got := s.Tokens()[tok]
			want := map[string]string{"contents": "write", "issues": "read", "metadata": "read"}
			if !s.Live(tok) || len(got.Permissions) != len(want) || got.Permissions["contents"] != "write" || got.Permissions["issues"] != "read" ||
				len(got.Repositories) != 1 || got.Repositories[0] != "app" {
				t.Fatalf("token %+v", got)
			}
		})
	}
	if n := s.LiveCount(); n != 1 {
		t.Fatalf("%d live tokens; only the granted request makes one", n)
	}
}

// Tokens come in the form GitHub mints: stateless by default (since its
// 2026 rollout), classic on request, and the per-request header overrides
// either way, as GitHub's does; both forms work and can be deleted.
func TestTokenForms(t *testing.T) {
	inst := []Installation{{ID: 7, Owner: "acme", Repositories: []string{"app"}, Permissions: map[string]string{"contents": "read"}}}
	stateless, err := Start(Options{Installations: inst})
	if err != nil {
		t.Fatal(err)
	}
	defer stateless.Close()
	classic, err := Start(Options{Installations: inst, Classic: true})
	if err != nil {
		t.Fatal(err)
	}
	defer classic.Close()
	isClassic := func(tok string) bool {
		return len(tok) == 40 && strings.HasPrefix(tok, "ghs_") && token.Checksum(tok[4:34]) == tok[34:]
	}
	isStateless := func(tok string, s *Server) bool {
		rest, ok := strings.CutPrefix(tok, "ghs_"+s.AppID+"_")
		if !ok || strings.Count(rest, ".") != 2 {
			return false
		}
		_, err := jwt.ParseSigned(rest, []jose.SignatureAlgorithm{jose.ES256})
		return err == nil
	}
	for _, tt := range []struct {
		name    string
		s       *Server
		header  string
		classic bool
	}{
		{"default", stateless, "", false},
		{"default, header disabled", stateless, "disabled", true},
		{"default, other header value ignored", stateless, "true", false},
		{"classic", classic, "", true},
		{"classic, header enabled", classic, "enabled", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tt.header != "" {
				hdr["X-GitHub-Stateless-S2S-Token"] = tt.header
			}
			status, out := accessTokens(t, tt.s, "7", `{"permissions":{"contents":"read"}}`, hdr)
			tok, _ := out["token"].(string)
			if status != 201 || (tt.classic && !isClassic(tok)) || (!tt.classic && !isStateless(tok, tt.s)) {
				t.Fatalf("status %d, token of %d characters, want classic %v", status, len(tok), tt.classic)
			}
			req, _ := http.NewRequest(http.MethodDelete, tt.s.URL+"/installation/token", nil)
			req.Header.Set("Authorization", "token "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 204 || tt.s.Live(tok) {
				t.Fatalf("delete: %d, live %v", resp.StatusCode, tt.s.Live(tok))
			}
		})
	}
}
