package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const testAudience = "https://mayfly.test"

var (
	rsaKey1  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	rsaKey2  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	rsaEvil  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	ecKey1   = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC() })
	baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.ns.Store(baseTime.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// testIssuer is a local OIDC issuer: discovery document and JWKS over HTTP on
// 127.0.0.1, counting fetches.
type testIssuer struct {
	srv       *httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey
	discIss   string // issuer named by the discovery document ("" = srv.URL)
	jwksHits  atomic.Int64
	discHits  atomic.Int64
	down      atomic.Bool
	jwksExtra []byte // when set, served instead of the key set
}

func newTestIssuer(t testing.TB, keys ...jose.JSONWebKey) *testIssuer {
	t.Helper()
	ti := &testIssuer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.discHits.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		iss := ti.srv.URL
		ti.mu.Lock()
		if ti.discIss != "" {
			iss = ti.discIss
		}
		ti.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": ti.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ti.mu.Lock()
		defer ti.mu.Unlock()
		if ti.jwksExtra != nil {
			_, _ = w.Write(ti.jwksExtra)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: ti.keys})
	})
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

func (ti *testIssuer) setKeys(keys ...jose.JSONWebKey) {
	ti.mu.Lock()
	ti.keys = keys
	ti.mu.Unlock()
}

func pubJWK(key any, kid, alg string) jose.JSONWebKey {
	k := jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
	return k.Public()
}

func (ti *testIssuer) config() IssuerConfig {
	return IssuerConfig{Name: "ci", URL: ti.srv.URL, Audience: testAudience}
}

func newTestVerifier(t testing.TB, clk *clock, cfgs ...IssuerConfig) *Verifier {
	t.Helper()
	v := NewVerifier(Options{Now: clk.Now, RefreshCooldown: 30 * time.Second, FetchTimeout: 5 * time.Second})
	v.SetIssuers(cfgs)
	return v
}

// claims returns a valid claim set for ti at clk's time.
func (ti *testIssuer) claims(clk *clock) map[string]any {
	now := clk.Now().Unix()
	return map[string]any{
		"iss":           ti.srv.URL,
		"sub":           "repo:acme/app:ref:refs/heads/main",
		"aud":           []string{testAudience},
		"exp":           now + 300,
		"iat":           now - 10,
		"nbf":           now - 10,
		"jti":           randomString(),
		"repository":    "acme/app",
		"repository_id": json.RawMessage("1.23456789e+08"),
		"run_id":        json.RawMessage("9876543210"),
		"ref_protected": true,
		"environment":   "production",
		"groups":        []any{"a", json.RawMessage("1e3")},
		"nothing":       nil,
	}
}

func randomString() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func signRaw(t testing.TB, key any, alg jose.SignatureAlgorithm, kid string, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sign(t testing.TB, key any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return signRaw(t, key, alg, kid, b)
}

// memJTI is an in-memory JTIStore test double.
type memJTI struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (m *memJTI) UseJTI(_ context.Context, issuer, jti string, expires time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[string]time.Time{}
	}
	k := issuer + "\x00" + jti
	if _, ok := m.seen[k]; ok {
		return false, nil
	}
	m.seen[k] = expires
	return true, nil
}
