package sso

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// idTokenProvider is a provider (discovery and JWKS) whose key signs the
// ID tokens a test makes with sign.
type idTokenProvider struct {
	url string
	key *rsa.PrivateKey
}

func newIDTokenProvider(t *testing.T) *idTokenProvider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &idTokenProvider{key: key}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/auth","token_endpoint":"%[1]s/token","jwks_uri":"%[1]s/jwks",`+
				`"id_token_signing_alg_values_supported":["RS256","HS256","none"]}`, p.url)
		case "/jwks":
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// sign makes a compact JWS of claims with alg: RS256 with the provider's
// key, HS256 with the provider's public key (PEM) as the HMAC secret (the
// alg confusion attack), or none.
func (p *idTokenProvider) sign(t *testing.T, alg string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	switch alg {
	case "none":
		return enc([]byte(`{"alg":"none","kid":"k1"}`)) + "." + enc(payload) + "."
	case "HS256":
		der, _ := x509.MarshalPKIXPublicKey(&p.key.PublicKey)
		secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		jws, err := s.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestVerifyIDToken: an ID token is accepted only when it is signed by the
// provider's key with an asymmetric algorithm, names the provider as its
// issuer and this client as its audience (and, with several audiences or
// an azp, as its authorized party), is current, and carries the sign-in's
// nonce.
func TestVerifyIDToken(t *testing.T) {
	p := newIDTokenProvider(t)
	rp, err := New(Config{Issuer: p.url, ClientID: "mayfly", RedirectURL: "http://127.0.0.1:1/ui/callback",
		Roles: map[string][]string{"admin": {"sec"}}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prov, err := rp.discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	base := func(over map[string]any) map[string]any {
		c := map[string]any{"iss": p.url, "aud": "mayfly", "sub": "u1", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
			"nonce": "n1", "groups": []any{"sec"}}
		for k, v := range over {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		alg    string
		claims map[string]any
		nonce  string
		want   error // nil: accepted as admin
	}{
		{"sound", "RS256", base(nil), "n1", nil},
		{"azp is this client", "RS256", base(map[string]any{"azp": "mayfly"}), "n1", nil},
		{"several audiences, azp this client", "RS256", base(map[string]any{"aud": []any{"mayfly", "other"}, "azp": "mayfly"}), "n1", nil},
		{"alg none", "none", base(nil), "n1", ErrIDToken},
		{"HS256 with the public key as secret", "HS256", base(nil), "n1", ErrIDToken},
		{"another issuer", "RS256", base(map[string]any{"iss": "https://evil.example"}), "n1", ErrIDToken},
		{"another audience", "RS256", base(map[string]any{"aud": "other"}), "n1", ErrIDToken},
		{"expired", "RS256", base(map[string]any{"exp": now.Add(-time.Minute).Unix()}), "n1", ErrIDToken},
		{"not yet valid", "RS256", base(map[string]any{"nbf": now.Add(time.Hour).Unix()}), "n1", ErrIDToken},
		{"another nonce", "RS256", base(map[string]any{"nonce": "n2"}), "n1", ErrNonce},
		{"no nonce", "RS256", base(map[string]any{"nonce": nil}), "n1", ErrNonce},
		{"a nonce where none was sent", "RS256", base(nil), "", ErrNonce},
		// OIDC Core §3.1.3.7: a token issued to another client that also
		// lists this one is not this client's sign-in.
		{"several audiences, no azp", "RS256", base(map[string]any{"aud": []any{"mayfly", "other"}}), "n1", ErrIDToken},
		{"several audiences, azp another client", "RS256", base(map[string]any{"aud": []any{"mayfly", "other"}, "azp": "other"}), "n1", ErrIDToken},
		{"azp another client", "RS256", base(map[string]any{"azp": "other"}), "n1", ErrIDToken},
		{"azp not a string", "RS256", base(map[string]any{"azp": []any{"mayfly"}}), "n1", ErrIDToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := rp.verify(ctx, prov, p.sign(t, tc.alg, tc.claims), tc.nonce)
			if tc.want == nil {
				if err != nil || id.Role != "admin" {
					t.Fatalf("refused: %+v %v", id, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %+v %v, want %v", id, err, tc.want)
			}
		})
	}
}

// CheckIssuer (RFC 9207): a callback's iss must be the configured issuer
// exactly, and must be there when the provider says it sends it.
func TestCheckIssuer(t *testing.T) {
	for _, sends := range []bool{false, true} {
		var srv *httptest.Server
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/auth","token_endpoint":"%[1]s/token","jwks_uri":"%[1]s/jwks",`+
				`"authorization_response_iss_parameter_supported":%v}`, srv.URL, sends)
		}))
		rp := testRP(t, srv.URL, 5*time.Second)
		for _, tc := range []struct {
			iss string
			ok  bool
		}{
			{srv.URL, true},
			{"", !sends},
			{srv.URL + "/", false},
			{"https://attacker.example", false},
		} {
			err := rp.CheckIssuer(context.Background(), tc.iss)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrIssuer) {
				t.Errorf("provider sends iss %v, callback iss %q: %v", sends, tc.iss, err)
			}
		}
		srv.Close()
	}
}

// Origin is redirect_url's origin as a browser sends it in Origin (host in
// lower case, no default port), and Secure follows its scheme however
// written: a redirect_url spelled otherwise must not make every console
// form "cross-site", nor the cookie lose Secure and __Host-.
func TestOriginAndSecure(t *testing.T) {
	for _, tc := range []struct {
		redirect, origin string
		secure           bool
	}{
		{"https://mayfly.example.com/ui/callback", "https://mayfly.example.com", true},
		{"https://Mayfly.Example.COM/ui/callback", "https://mayfly.example.com", true},
		{"https://mayfly.example.com:443/ui/callback", "https://mayfly.example.com", true},
		{"HTTPS://mayfly.example.com/ui/callback", "https://mayfly.example.com", true},
		{"https://mayfly.example.com:8443/ui/callback", "https://mayfly.example.com:8443", true},
		{"http://127.0.0.1:80/ui/callback", "http://127.0.0.1", false},
		{"http://127.0.0.1:8443/ui/callback", "http://127.0.0.1:8443", false},
		{"http://[::1]:8443/ui/callback", "http://[::1]:8443", false},
		{"HTTP://LOCALHOST:8443/ui/callback", "http://localhost:8443", false},
	} {
		rp, err := New(Config{Issuer: "https://idp.example.com", ClientID: "m", RedirectURL: tc.redirect,
			Roles: map[string][]string{"admin": {"a"}}}, "", nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.redirect, err)
		}
		if got := rp.Origin(); got != tc.origin {
			t.Errorf("%s: origin %q, want %q", tc.redirect, got, tc.origin)
		}
		if got := rp.Secure(); got != tc.secure {
			t.Errorf("%s: secure %v, want %v", tc.redirect, got, tc.secure)
		}
	}
}
