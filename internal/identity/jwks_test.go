package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func TestUnknownKIDFlood(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
	if got := ti.jwksHits.Load(); got != 1 {
		t.Fatalf("warm-up fetches = %d", got)
	}
	// Pre-sign a flood of tokens with random kids.
	claims := ti.claims(clk)
	toks := make([]string, 200)
	for i := range toks {
		toks[i] = sign(t, rsaEvil(), jose.RS256, randomString(), claims)
	}
	flood := func() {
		var wg sync.WaitGroup
		for _, tok := range toks {
			wg.Go(func() {
				if _, err := v.Verify(ctx, tok); CheckOf(err) != CheckSignature {
					t.Errorf("flood token: %v", err)
				}
			})
		}
		wg.Wait()
	}
	// Within the cooldown of the warm-up fetch: no fetch at all.
	flood()
	if got := ti.jwksHits.Load(); got != 1 {
		t.Fatalf("fetches within cooldown = %d, want 1", got)
	}
	// Each following cooldown period allows exactly one more.
	for period := 1; period <= 3; period++ {
		clk.Add(31 * time.Second)
		flood()
		if got := ti.jwksHits.Load(); got != int64(1+period) {
			t.Fatalf("period %d: fetches = %d, want %d", period, got, 1+period)
		}
	}
	// The real key still works throughout.
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
}

func TestIssuerDownCachedKeysKeepWorking(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"503", "closed"} {
		if how == "503" {
			ti.down.Store(true)
		} else {
			ti.srv.Close()
		}
		// Past the refresh interval: keys are stale, the refresh fails,
		// cached keys still verify.
		clk.Add(2 * time.Hour)
		for range 3 {
			if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
				t.Fatalf("%s: cached key refused: %v", how, err)
			}
		}
		// An unknown kid cannot be fetched: a signature error, not a hang.
		clk.Add(time.Minute)
		if _, err := v.Verify(ctx, sign(t, rsaKey2(), jose.RS256, "k2", ti.claims(clk))); CheckOf(err) != CheckSignature {
			t.Fatalf("%s: unknown kid: %v", how, err)
		}
	}
}

func TestKeysUnavailable(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	ti.down.Store(true)
	v := newTestVerifier(t, clk, ti.config())
	ctx := context.Background()
	tok := func() string { return sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk)) }
	for range 5 {
		if _, err := v.Verify(ctx, tok()); CheckOf(err) != CheckKeysUnavailable {
			t.Fatalf("err = %v", err)
		}
	}
	if got := ti.discHits.Load(); got != 1 {
		t.Fatalf("discovery fetches while down = %d, want 1 per cooldown", got)
	}
	ti.down.Store(false)
	clk.Add(31 * time.Second)
	if _, err := v.Verify(ctx, tok()); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
	ti.setKeys(pubJWK(&rsaKey2().PublicKey, "k2", ""))
	clk.Add(31 * time.Second)
	if _, err := v.Verify(ctx, sign(t, rsaKey2(), jose.RS256, "k2", ti.claims(clk))); err != nil {
		t.Fatalf("new kid not picked up: %v", err)
	}
	// The retired key is gone from the cache.
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); CheckOf(err) != CheckSignature {
		t.Fatalf("retired key: %v", err)
	}
	if got := ti.jwksHits.Load(); got != 2 {
		t.Fatalf("fetches = %d", got)
	}
}

func TestPeriodicRefresh(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	ctx := context.Background()
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
	clk.Add(61 * time.Minute)
	if _, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
	// The refresh runs in the background; wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for ti.jwksHits.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no background refresh")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	ti.discIss = ti.srv.URL + "/"
	v := newTestVerifier(t, clk, ti.config())
	_, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk)))
	if CheckOf(err) != CheckKeysUnavailable || !strings.Contains(err.Error(), "discovery") {
		t.Fatalf("err = %v", err)
	}
	if ti.jwksHits.Load() != 0 {
		t.Fatal("JWKS fetched despite a mismatched discovery document")
	}
}

func TestJWKSTooLarge(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t)
	ti.jwksExtra = append([]byte(`{"keys":[],"pad":"`), bytes.Repeat([]byte("x"), MaxJWKSSize)...)
	ti.jwksExtra = append(ti.jwksExtra, `"}`...)
	v := newTestVerifier(t, clk, ti.config())
	_, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk)))
	if CheckOf(err) != CheckKeysUnavailable || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("err = %v", err)
	}
}

func TestJWKSOddKeysSkipped(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t)
	pub, _ := pubJWK(&rsaKey1().PublicKey, "k1", "").MarshalJSON()
	ti.jwksExtra = []byte(`{"keys":[{"kty":"weird","kid":"x"},{"kty":"RSA","kid":"k1","use":"enc","n":"AQAB","e":"AQAB"},` + string(pub) + `]}`)
	v := newTestVerifier(t, clk, ti.config())
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
}

func TestSetIssuersKeepsCaches(t *testing.T) {
	clk := newClock()
	a := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	b := newTestIssuer(t, pubJWK(&rsaKey2().PublicKey, "k2", ""))
	v := newTestVerifier(t, clk, a.config())
	ctx := context.Background()
	tokA := sign(t, rsaKey1(), jose.RS256, "k1", a.claims(clk))
	if _, err := v.Verify(ctx, tokA); err != nil {
		t.Fatal(err)
	}
	cb := b.config()
	cb.Name = "other"
	renamed := a.config()
	renamed.Name = "renamed"
	v.SetIssuers([]IssuerConfig{renamed, cb})
	id, err := v.Verify(ctx, tokA)
	if err != nil || id.Issuer != "renamed" {
		t.Fatalf("id=%+v err=%v", id, err)
	}
	if a.jwksHits.Load() != 1 {
		t.Fatalf("cache dropped on reload: %d fetches", a.jwksHits.Load())
	}
	if _, err := v.Verify(ctx, sign(t, rsaKey2(), jose.RS256, "k2", b.claims(clk))); err != nil {
		t.Fatal(err)
	}
	// Removing an issuer takes effect at once.
	v.SetIssuers([]IssuerConfig{cb})
	if _, err := v.Verify(ctx, tokA); CheckOf(err) != CheckIssuer {
		t.Fatalf("removed issuer: %v", err)
	}
}

func TestVerifyContextCancelledWhileFetching(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk)))
	if err != nil && CheckOf(err) != CheckKeysUnavailable {
		t.Fatalf("err = %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	clk := newClock()
	ti := newTestIssuer(f, pubJWK(&rsaKey1().PublicKey, "k1", ""), pubJWK(&ecKey1().PublicKey, "e1", ""))
	cfg := ti.config()
	cfg.Algorithms = []string{"RS256", "ES256"}
	v := newTestVerifier(f, clk, cfg)
	f.Add(sign(f, rsaKey1(), jose.RS256, "k1", ti.claims(clk)))
	f.Add(sign(f, ecKey1(), jose.ES256, "e1", ti.claims(clk)))
	f.Add(sign(f, rsaKey1(), jose.RS256, "k1", map[string]any{"iss": ti.srv.URL, "aud": 5, "exp": "x"}))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(context.Background(), tok)
		if err == nil && (id == nil || id.Subject == "" || id.IssuerURL != ti.srv.URL) {
			t.Fatalf("accepted without a full identity: %+v", id)
		}
		if err != nil && CheckOf(err) == "" {
			t.Fatalf("error without a check: %v", err)
		}
	})
}

func BenchmarkVerifyRS256(b *testing.B) {
	clk := newClock()
	ti := newTestIssuer(b, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(b, clk, ti.config())
	tok := sign(b, rsaKey1(), jose.RS256, "k1", ti.claims(clk))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// A key the issuer published with its private half is refused, not used
// by its public half: anyone who fetched the document can sign with it.
func TestPrivateKeyInJWKSRefused(t *testing.T) {
	clk := newClock()
	leaked := jose.JSONWebKey{Key: rsaKey2(), KeyID: "k2", Algorithm: "RS256", Use: "sig"} // with "d"
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""), leaked)
	v := newTestVerifier(t, clk, ti.config())
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatalf("the published public key: %v", err)
	}
	forged := ti.claims(clk)
	forged["repository"] = "victim/prod"
	if id, err := v.Verify(context.Background(), sign(t, rsaKey2(), jose.RS256, "k2", forged)); err == nil {
		t.Fatalf("an ID token signed with a key the issuer published whole was accepted (repository %s)", id.Claims["repository"])
	}
}

// A JWKS URL may carry a credential in its query (a storage SAS, a signed
// URL): a refusal goes to whoever presented the token, unauthenticated, and
// into the audit log, so it names the URL without its query.
func TestFetchErrorHidesURLQuery(t *testing.T) {
	const secret = "sig=s3cr3tSAS" // mayfly:allow: a planted test value
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	closed := newTestIssuer(t)
	closed.srv.Close()
	for _, tc := range []struct {
		name    string
		jwksURL string
		down    bool
	}{
		{"status", ti.srv.URL + "/jwks?" + secret, true},
		{"connection refused", closed.srv.URL + "/jwks?" + secret + "#frag", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ti.down.Store(tc.down)
			clk := newClock()
			cfg := ti.config()
			cfg.JWKSURL = tc.jwksURL
			v := newTestVerifier(t, clk, cfg)
			_, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk)))
			if CheckOf(err) != CheckKeysUnavailable {
				t.Fatalf("err = %v", err)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "frag") {
				t.Fatalf("refusal quotes the JWKS URL's query: %v", err)
			}
			if !strings.Contains(err.Error(), "/jwks") {
				t.Fatalf("refusal no longer names the JWKS URL: %v", err)
			}
		})
	}
}

// An https issuer's discovery document naming a plain-http jwks_uri on a
// loopback address (allowed only for a local test issuer, itself on http)
// would have mayfly fetch, in the clear, from services on its own host.
func TestHTTPSIssuerNeedsHTTPSJWKS(t *testing.T) {
	local := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	var iss *httptest.Server
	iss = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss.URL, "jwks_uri": local.srv.URL + "/jwks"})
		case "/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(&rsaKey1().PublicKey, "k1", "")}})
		}
	}))
	t.Cleanup(iss.Close)
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now, HTTPClient: iss.Client()})
	v.SetIssuers([]IssuerConfig{{Name: "ci", URL: iss.URL, Audience: testAudience}})
	claims := local.claims(clk)
	claims["iss"] = iss.URL
	_, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", claims))
	if CheckOf(err) != CheckKeysUnavailable || !strings.Contains(err.Error(), "jwks_uri") {
		t.Fatalf("err = %v", err)
	}
	if local.jwksHits.Load() != 0 {
		t.Fatal("fetched an http jwks_uri named by an https issuer")
	}
	// The https jwks_uri of the same issuer is fetched (the test is sound).
	v2 := NewVerifier(Options{Now: clk.Now, HTTPClient: iss.Client()})
	v2.SetIssuers([]IssuerConfig{{Name: "ci", URL: iss.URL, Audience: testAudience, JWKSURL: iss.URL + "/jwks"}})
	if _, err := v2.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", claims)); err != nil {
		t.Fatal(err)
	}
}
