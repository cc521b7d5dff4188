package dpop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

var (
	baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ecKey    = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ecOther  = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	rsaKey   = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(2048) })
	rsaWeak  = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA(1024) })
	edKey    = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

const (
	testURL   = "https://mayfly.test/gw/github-api/repos/acme/app"
	testToken = "mfy_0123456789abcdefghijABCDEFGHIJ0abcde"
)

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func mustRSA(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

type clock struct{ ns atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.ns.Store(baseTime.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwkOf(t testing.TB, key any) map[string]any {
	t.Helper()
	k := jose.JSONWebKey{Key: key}
	b, err := k.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// craft builds a proof with full control of header and claims, signed
// ES256 by key (or with HMAC when hmacKey is set, or unsigned for "none").
func craft(t testing.TB, key *ecdsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	p, _ := json.Marshal(claims)
	return craftRaw(t, key, header, p)
}

// craftRaw is craft with the claims as bytes.
func craftRaw(t testing.TB, key *ecdsa.PrivateKey, header map[string]any, p []byte) string {
	t.Helper()
	h, _ := json.Marshal(header)
	in := b64(h) + "." + b64(p)
	switch header["alg"] {
	case "none":
		return in + "."
	case "HS256":
		m := hmac.New(sha256.New, []byte("0123456789abcdef0123456789abcdef"))
		m.Write([]byte(in))
		return in + "." + b64(m.Sum(nil))
	}
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64(sig)
}

func stdHeader(t testing.TB, key *ecdsa.PrivateKey) map[string]any {
	return map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwkOf(t, &key.PublicKey)}
}

func stdClaims(clk *clock, token string) map[string]any {
	c := map[string]any{
		"jti": randomJTI(),
		"htm": "POST",
		"htu": testURL,
		"iat": clk.Now().Unix(),
	}
	if token != "" {
		c["ath"] = AccessTokenHash(token)
	}
	return c
}

func randomJTI() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return b64(b)
}

func thumb(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	tp, err := Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestVerify(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now})
	key := ecKey()
	tp := thumb(t, &key.PublicKey)
	now := clk.Now().Unix()

	with := func(hmod func(h map[string]any), cmod func(c map[string]any)) string {
		h, c := stdHeader(t, key), stdClaims(clk, testToken)
		if hmod != nil {
			hmod(h)
		}
		if cmod != nil {
			cmod(c)
		}
		return craft(t, key, h, c)
	}
	trailing := func(after string) string {
		p, _ := json.Marshal(stdClaims(clk, testToken))
		return craftRaw(t, key, stdHeader(t, key), append(p, after...))
	}
	privJWK := jwkOf(t, key)
	mustProof := func(k crypto.Signer, tok string) string {
		p, err := NewProof(k, "POST", testURL, tok, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	tests := []struct {
		name       string
		proof      string
		method     string
		url        string
		token      string
		thumbprint string
		check      string // "" = valid
	}{
		{"valid at exchange", with(nil, func(c map[string]any) { delete(c, "ath") }), "POST", testURL, "", "", ""},
		{"valid at gateway", with(nil, nil), "POST", testURL, testToken, tp, ""},
		{"valid NewProof ES256", mustProof(key, testToken), "POST", testURL, testToken, tp, ""},
		{"valid NewProof PS256", mustProof(rsaKey(), testToken), "POST", testURL, testToken, thumb(t, &rsaKey().PublicKey), ""},
		{"valid NewProof EdDSA", mustProof(edKey(), testToken), "POST", testURL, testToken, thumb(t, edKey().Public()), ""},
		{"wrong key (thumbprint mismatch)", mustProof(ecOther(), testToken), "POST", testURL, testToken, tp, CheckThumbprint},
		{"wrong method", with(nil, nil), "GET", testURL, testToken, tp, CheckMethod},
		{"method case differs", with(nil, func(c map[string]any) { c["htm"] = "post" }), "POST", testURL, testToken, tp, CheckMethod},
		{"htm missing", with(nil, func(c map[string]any) { delete(c, "htm") }), "POST", testURL, testToken, tp, CheckMethod},
		{"wrong URL path", with(nil, nil), "POST", testURL + "/other", testToken, tp, CheckURL},
		{"wrong URL host", with(nil, nil), "POST", "https://evil.test/gw/github-api/repos/acme/app", testToken, tp, CheckURL},
		{"http instead of https", with(nil, nil), "POST", strings.Replace(testURL, "https", "http", 1), testToken, tp, CheckURL},
		{"htu missing", with(nil, func(c map[string]any) { delete(c, "htu") }), "POST", testURL, testToken, tp, CheckURL},
		{"htu not a URL", with(nil, func(c map[string]any) { c["htu"] = "/gw/x" }), "POST", testURL, testToken, tp, CheckURL},
		{"query and fragment ignored", with(nil, func(c map[string]any) { c["htu"] = testURL + "?a=1#f" }), "POST", testURL + "?b=2", testToken, tp, ""},
		// A request line may carry a raw "#" (Go's server takes it as
		// part of the path, and the path is forwarded so): it is no
		// fragment there, so a proof for the path before it must not do.
		{"raw # in the request path is path", with(nil, nil), "POST", testURL + "#/../admin", testToken, tp, CheckURL},
		{"raw # in the request path matches %23", with(nil, func(c map[string]any) { c["htu"] = testURL + "%23x" }), "POST", testURL + "#x", testToken, tp, ""},
		{"scheme and host case, default port", with(nil, func(c map[string]any) {
			c["htu"] = "HTTPS://MAYFLY.test:443/gw/github-api/repos/acme/app"
		}), "POST", testURL, testToken, tp, ""},
		{"percent-encoding normalised (RFC 3986)", with(nil, func(c map[string]any) {
			c["htu"] = "https://mayfly.test/gw/github-api/repos/%61cme/app"
		}), "POST", testURL, testToken, tp, ""},
		{"path case matters", with(nil, func(c map[string]any) { c["htu"] = strings.ToUpper(testURL) }), "POST", testURL, testToken, tp, CheckURL},
		{"stale iat", with(nil, func(c map[string]any) { c["iat"] = now - 120 }), "POST", testURL, testToken, tp, CheckIssuedAt},
		{"future iat", with(nil, func(c map[string]any) { c["iat"] = now + 120 }), "POST", testURL, testToken, tp, CheckIssuedAt},
		{"iat within window", with(nil, func(c map[string]any) { c["iat"] = now - 50 }), "POST", testURL, testToken, tp, ""},
		{"iat missing", with(nil, func(c map[string]any) { delete(c, "iat") }), "POST", testURL, testToken, tp, CheckIssuedAt},
		{"iat a string", with(nil, func(c map[string]any) { c["iat"] = "now" }), "POST", testURL, testToken, tp, CheckFormat},
		{"missing ath", with(nil, func(c map[string]any) { delete(c, "ath") }), "POST", testURL, testToken, tp, CheckAccessTokenHash},
		{"wrong ath", with(nil, func(c map[string]any) { c["ath"] = AccessTokenHash("mfy_other") }), "POST", testURL, testToken, tp, CheckAccessTokenHash},
		{"jti missing", with(nil, func(c map[string]any) { delete(c, "jti") }), "POST", testURL, testToken, tp, CheckJTI},
		{"jti too long", with(nil, func(c map[string]any) { c["jti"] = strings.Repeat("j", 300) }), "POST", testURL, testToken, tp, CheckJTI},
		{"private key in header", with(func(h map[string]any) { h["jwk"] = privJWK }, nil), "POST", testURL, testToken, tp, CheckJWK},
		{"symmetric key in header", with(func(h map[string]any) { h["jwk"] = map[string]any{"kty": "oct", "k": "AAAA"} }, nil), "POST", testURL, testToken, tp, CheckJWK},
		{"jwk missing", with(func(h map[string]any) { delete(h, "jwk") }, nil), "POST", testURL, testToken, tp, CheckJWK},
		{"jwk of another key", with(func(h map[string]any) { h["jwk"] = jwkOf(t, &ecOther().PublicKey) }, nil), "POST", testURL, testToken, "", CheckSignature},
		{"jwk RSA with ES256", with(func(h map[string]any) { h["jwk"] = jwkOf(t, &rsaKey().PublicKey) }, nil), "POST", testURL, testToken, "", CheckJWK},
		{"weak RSA key", func() string {
			p, err := NewProof(rsaWeak(), "POST", testURL, testToken, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			return p
		}(), "POST", testURL, testToken, "", CheckJWK},
		{"alg none", with(func(h map[string]any) { h["alg"] = "none" }, nil), "POST", testURL, testToken, tp, CheckAlgorithm},
		{"alg HS256", with(func(h map[string]any) { h["alg"] = "HS256" }, nil), "POST", testURL, testToken, tp, CheckAlgorithm},
		{"alg ES384 not allowed", func() string {
			p, err := NewProof(mustEC(elliptic.P384()), "POST", testURL, testToken, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			return p
		}(), "POST", testURL, testToken, "", CheckAlgorithm},
		{"typ missing", with(func(h map[string]any) { delete(h, "typ") }, nil), "POST", testURL, testToken, tp, CheckType},
		{"typ JWT", with(func(h map[string]any) { h["typ"] = "JWT" }, nil), "POST", testURL, testToken, tp, CheckType},
		{"oversized", with(nil, func(c map[string]any) { c["pad"] = strings.Repeat("x", 9000) }), "POST", testURL, testToken, tp, CheckSize},
		{"empty", "", "POST", testURL, testToken, tp, CheckFormat},
		{"garbage", "a.b.c", "POST", testURL, testToken, tp, CheckFormat},
		{"tampered", tamper(with(nil, nil)), "POST", testURL, testToken, tp, CheckSignature},
		// Only white space may follow the claims object.
		{"a brace after the claims", trailing("}"), "POST", testURL, testToken, tp, CheckFormat},
		{"a bracket after the claims", trailing("]"), "POST", testURL, testToken, tp, CheckFormat},
		{"a value after the claims", trailing(" 1"), "POST", testURL, testToken, tp, CheckFormat},
		{"white space after the claims", trailing(" \r\n"), "POST", testURL, testToken, tp, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(tc.proof, tc.method, tc.url, tc.token, tc.thumbprint)
			if tc.check == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if p.JTI == "" || p.HTM != tc.method || p.Thumbprint == "" || p.IssuedAt.IsZero() {
					t.Fatalf("proof = %+v", p)
				}
				if tc.thumbprint != "" && p.Thumbprint != tc.thumbprint {
					t.Fatalf("thumbprint %s, want %s", p.Thumbprint, tc.thumbprint)
				}
				return
			}
			if got := CheckOf(err); got != tc.check {
				t.Fatalf("check = %q (err %v), want %q", got, err, tc.check)
			}
			assertClean(t, err, tc.proof)
		})
	}
}

func tamper(proof string) string {
	parts := strings.Split(proof, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), `"POST"`, `"GET"`, 1))
	parts[1] = b64(p)
	return strings.Join(parts, ".")
}

func assertClean(t *testing.T, err error, proof string) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(msg, testToken) || strings.Contains(msg, AccessTokenHash(testToken)) {
		t.Fatalf("error contains the token: %q", msg)
	}
	for _, part := range strings.Split(proof, ".") {
		if len(part) >= 16 && strings.Contains(msg, part) {
			t.Fatalf("error contains the proof: %q", msg)
		}
	}
}

func TestThumbprintRFC7638(t *testing.T) {
	// RFC 7638 section 3.1 example key and thumbprint.
	n, _ := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537}
	if got := thumb(t, pub); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint = %s", got)
	}
}

func TestAccessTokenHash(t *testing.T) {
	// RFC 9449 section 7.1 example.
	if got := AccessTokenHash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"); got != "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo" {
		t.Fatalf("ath = %s", got)
	}
}

func TestReplay(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now})
	proof, err := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(proof, "GET", testURL, testToken, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(proof, "GET", testURL, testToken, ""); CheckOf(err) != CheckReplay {
		t.Fatalf("replay: %v", err)
	}
	// Once the window is over the proof is stale, not forgotten-and-fresh.
	clk.Add(61 * time.Second)
	if _, err := v.Verify(proof, "GET", testURL, testToken, ""); CheckOf(err) != CheckIssuedAt {
		t.Fatalf("after window: %v", err)
	}

	// The same jti from two keys are two proofs.
	h1, h2 := stdHeader(t, ecKey()), stdHeader(t, ecOther())
	c := stdClaims(clk, "")
	if _, err := v.Verify(craft(t, ecKey(), h1, c), "POST", testURL, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(craft(t, ecOther(), h2, c), "POST", testURL, "", ""); err != nil {
		t.Fatal(err)
	}
	// A refused proof does not burn its jti.
	c2 := stdClaims(clk, "")
	p2 := craft(t, ecKey(), h1, c2)
	if _, err := v.Verify(p2, "PUT", testURL, "", ""); CheckOf(err) != CheckMethod {
		t.Fatal(err)
	}
	if _, err := v.Verify(p2, "POST", testURL, "", ""); err != nil {
		t.Fatalf("jti burnt by a refused proof: %v", err)
	}
}

func TestReplayConcurrent(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now})
	proof, err := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	const n = 32
	var wins, replays atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := v.Verify(proof, "GET", testURL, testToken, "")
			switch CheckOf(err) {
			case "":
				wins.Add(1)
			case CheckReplay:
				replays.Add(1)
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || replays.Load() != n-1 {
		t.Fatalf("wins=%d replays=%d", wins.Load(), replays.Load())
	}
}

// Check spends nothing; Record spends a checked proof once, atomically,
// and refuses one whose window closed after it was checked (forgotten at
// once, it could be recorded again).
func TestCheckThenRecord(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now, ReplayCacheSize: 16})
	proof, err := NewProof(ecKey(), "POST", testURL, "", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 100 { // more than the cache holds
		if _, err := v.Check(proof, "POST", testURL, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.replay.len(); n != 0 {
		t.Fatalf("Check recorded %d jtis", n)
	}
	p, _ := v.Check(proof, "POST", testURL, "", "")
	const n = 16
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			switch err := v.Record(context.Background(), p); CheckOf(err) {
			case "":
				wins.Add(1)
			case CheckReplay:
			default:
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("one proof recorded %d times", wins.Load())
	}

	late, _ := NewProof(ecKey(), "POST", testURL, "", clk.Now())
	p, err = v.Check(late, "POST", testURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(DefaultWindow + time.Second)
	if err := v.Record(context.Background(), p); CheckOf(err) != CheckIssuedAt {
		t.Fatalf("a proof recorded after its window: %v", err)
	}
	if err := v.Record(context.Background(), &Proof{}); err == nil {
		t.Fatal("a proof Check never saw was recorded")
	}
}

func TestReplayCacheBounded(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now, ReplayCacheSize: 16})
	full := 0
	for range 200 {
		p, err := NewProof(ecKey(), "GET", testURL, "", clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		switch _, err := v.Verify(p, "GET", testURL, "", ""); CheckOf(err) {
		case "":
		case CheckReplayCacheFull:
			full++
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if full == 0 || v.replay.len() > 16 {
		t.Fatalf("full=%d len=%d", full, v.replay.len())
	}
	// Expired entries make room again.
	clk.Add(2 * time.Minute)
	for range 16 {
		p, _ := NewProof(ecKey(), "GET", testURL, "", clk.Now())
		if _, err := v.Verify(p, "GET", testURL, "", ""); err != nil && CheckOf(err) != CheckReplayCacheFull {
			t.Fatal(err)
		}
	}
	if v.replay.len() > 16 {
		t.Fatalf("len=%d", v.replay.len())
	}
	p, _ := NewProof(ecKey(), "GET", testURL, "", clk.Now())
	accepted := false
	for range 50 { // a shard that had expired entries accepts again
		if _, err := v.Verify(p, "GET", testURL, "", ""); err == nil {
			accepted = true
			break
		}
		p, _ = NewProof(ecKey(), "GET", testURL, "", clk.Now())
	}
	if !accepted {
		t.Fatal("expired entries never made room")
	}
}

func TestNormalizeHTU(t *testing.T) {
	for in, want := range map[string]string{
		"https://A.example/x?y#z":   "https://a.example/x",
		"HTTPS://a.example:443/x":   "https://a.example/x",
		"http://a.example:80":       "http://a.example/",
		"http://a.example:8080/a/b": "http://a.example:8080/a/b",
		"https://[::1]:443/p":       "https://[::1]/p",
		// RFC 3986 §6.2.2: percent-encoding in upper case, unreserved
		// characters decoded (a proxy in front may have done either);
		// reserved ones stay encoded.
		"https://a.example/a%7eb%7Ec":     "https://a.example/a~b~c",
		"https://a.example/%41%2d%5F%2E":  "https://a.example/A-_.",
		"https://a.example/a%2fb%2Fc%3a":  "https://a.example/a%2Fb%2Fc%3A",
		"https://a.example/%e2%82%ac%20x": "https://a.example/%E2%82%AC%20x",
	} {
		if got, err := NormalizeHTU(in); err != nil || got != want {
			t.Errorf("NormalizeHTU(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "/x", "ftp://a/x", "https://user:pw@a/x", "mailto:a@b", "https://"} {
		if _, err := NormalizeHTU(bad); err == nil {
			t.Errorf("NormalizeHTU(%q) accepted", bad)
		}
	}
}

func TestAlgorithmsOptionNeverAllowsSymmetric(t *testing.T) {
	v := NewVerifier(Options{Algorithms: []string{"HS256", "none", "ES256"}})
	for _, a := range v.algs {
		if a != jose.ES256 {
			t.Fatalf("algs = %v", v.algs)
		}
	}
}

func FuzzVerify(f *testing.F) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now, ReplayCacheSize: 1024})
	for _, k := range []crypto.Signer{ecKey(), edKey()} {
		p, err := NewProof(k, "POST", testURL, testToken, clk.Now())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p, "POST", testURL, testToken)
	}
	f.Add(craft(f, ecKey(), stdHeader(f, ecKey()), stdClaims(clk, "")), "POST", testURL, "")
	if p, err := NewProof(ecKey(), "POST", testURL+"%23x", testToken, clk.Now()); err == nil {
		f.Add(p, "POST", testURL+"#x", testToken)
	}
	f.Add("eyJhbGciOiJub25lIn0.e30.", "GET", "https://x/", "")
	f.Add("a.b.c", "GET", "::", "t")
	f.Fuzz(func(t *testing.T, proof, method, url, token string) {
		p, err := v.Verify(proof, method, url, token, "")
		if err == nil && (p == nil || p.Thumbprint == "" || p.HTM != method) {
			t.Fatalf("accepted with an incomplete proof: %+v", p)
		}
		// An accepted proof names the whole request path, a "#" in it
		// included (a request line has no fragment).
		if want, nerr := NormalizeHTU(strings.ReplaceAll(url, "#", "%23")); err == nil && (nerr != nil || p.HTU != want) {
			t.Fatalf("accepted for %q with htu %q", url, p.HTU)
		}
		if err != nil && CheckOf(err) == "" {
			t.Fatalf("error without a check: %v", err)
		}
		if err != nil && token != "" && len(token) >= 8 && strings.Contains(err.Error(), token) {
			t.Fatalf("error contains the token")
		}
	})
}

func benchmarkVerify(b *testing.B, key crypto.Signer) {
	v := NewVerifier(Options{ReplayCacheSize: 1 << 22})
	tp := thumb(b, key.Public())
	proofs := make([]string, 0, 1024)
	for range cap(proofs) {
		p, err := NewProof(key, "GET", testURL, testToken, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		proofs = append(proofs, p)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		// Proofs repeat after 1024 iterations: the replay path is then
		// measured too (it runs every check before the cache).
		_, err := v.Verify(proofs[i%len(proofs)], "GET", testURL, testToken, tp)
		if err != nil && CheckOf(err) != CheckReplay {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkVerifyES256(b *testing.B) { benchmarkVerify(b, ecKey()) }
func BenchmarkVerifyEdDSA(b *testing.B) { benchmarkVerify(b, edKey()) }
func BenchmarkVerifyPS256(b *testing.B) { benchmarkVerify(b, rsaKey()) }

// A proof is remembered for as long as it can be accepted: at iat + window
// exactly it is still within the window, so it must still be a replay.
func TestReplayAtWindowEdge(t *testing.T) {
	clk := newClock()
	clk.ns.Store(clk.Now().Truncate(time.Second).UnixNano())
	v := NewVerifier(Options{Now: clk.Now})
	proof, err := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(proof, "GET", testURL, testToken, ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(DefaultWindow)
	if _, err := v.Verify(proof, "GET", testURL, testToken, ""); err == nil {
		t.Fatal("proof accepted twice at the edge of its window")
	}
}
