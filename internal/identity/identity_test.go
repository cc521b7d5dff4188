package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// hs256 forges an HS256 token whose HMAC secret is the given bytes (the
// classic "RSA public key as HMAC secret" confusion attack).
func hs256(t *testing.T, secret []byte, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT", "kid": kid})
	p, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func unsigned(t *testing.T, alg string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": "k1"})
	p, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

func TestVerify(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t,
		pubJWK(&rsaKey1().PublicKey, "k1", "RS256"),
		pubJWK(&ecKey1().PublicKey, "e1", "ES256"))
	v := newTestVerifier(t, clk, ti.config())
	now := clk.Now().Unix()

	with := func(mod func(c map[string]any)) map[string]any {
		c := ti.claims(clk)
		mod(c)
		return c
	}
	rs := func(c map[string]any) string { return sign(t, rsaKey1(), jose.RS256, "k1", c) }
	trailing := func(after string) string {
		b := must(json.Marshal(ti.claims(clk)))
		return signRaw(t, rsaKey1(), jose.RS256, "k1", append(b, after...))
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&rsaKey1().PublicKey))})
	pubDER := x509.MarshalPKCS1PublicKey(&rsaKey1().PublicKey)

	tests := []struct {
		name  string
		token string
		check string // "" = valid
	}{
		{"valid", rs(ti.claims(clk)), ""},
		{"alg none", unsigned(t, "none", ti.claims(clk)), CheckAlgorithm},
		{"alg None", unsigned(t, "None", ti.claims(clk)), CheckAlgorithm},
		{"HS256 with RSA public key PEM", hs256(t, pubPEM, "k1", ti.claims(clk)), CheckAlgorithm},
		{"HS256 with RSA public key DER", hs256(t, pubDER, "k1", ti.claims(clk)), CheckAlgorithm},
		{"ES256 not on the issuer's list", sign(t, ecKey1(), jose.ES256, "e1", ti.claims(clk)), CheckAlgorithm},
		{"RS512 not on the list", sign(t, rsaKey1(), jose.RS512, "k1", ti.claims(clk)), CheckAlgorithm},
		{"wrong iss", rs(with(func(c map[string]any) { c["iss"] = "https://evil.example" })), CheckIssuer},
		{"trailing slash iss", rs(with(func(c map[string]any) { c["iss"] = ti.srv.URL + "/" })), CheckIssuer},
		{"https instead of http iss", rs(with(func(c map[string]any) {
			c["iss"] = strings.Replace(ti.srv.URL, "http://", "https://", 1)
		})), CheckIssuer},
		{"iss missing", rs(with(func(c map[string]any) { delete(c, "iss") })), CheckMissingClaim},
		{"iss not a string", rs(with(func(c map[string]any) { c["iss"] = 7 })), CheckFormat},
		{"wrong aud", rs(with(func(c map[string]any) { c["aud"] = "https://other" })), CheckAudience},
		{"aud list without ours", rs(with(func(c map[string]any) { c["aud"] = []string{"a", "b"} })), CheckAudience},
		{"aud string ours", rs(with(func(c map[string]any) { c["aud"] = testAudience })), ""},
		{"aud list with ours, azp ours", rs(with(func(c map[string]any) { c["aud"] = []string{"x", testAudience}; c["azp"] = testAudience })), ""},
		{"aud list with ours, no azp", rs(with(func(c map[string]any) { c["aud"] = []string{"x", testAudience} })), CheckAudience},
		{"aud list with ours, azp other", rs(with(func(c map[string]any) { c["aud"] = []string{testAudience, "x"}; c["azp"] = "x" })), CheckAudience},
		{"expired", rs(with(func(c map[string]any) { c["exp"] = now - 120 })), CheckExpired},
		{"expired just past skew", rs(with(func(c map[string]any) { c["exp"] = now - 60 })), CheckExpired},
		{"expired within skew", rs(with(func(c map[string]any) { c["exp"] = now - 30 })), ""},
		{"nbf beyond skew", rs(with(func(c map[string]any) { c["nbf"] = now + 120 })), CheckNotYetValid},
		{"nbf within skew", rs(with(func(c map[string]any) { c["nbf"] = now + 30 })), ""},
		{"iat beyond skew", rs(with(func(c map[string]any) { c["iat"] = now + 120 })), CheckIssuedInFuture},
		{"iat within skew", rs(with(func(c map[string]any) { c["iat"] = now + 30 })), ""},
		{"missing exp", rs(with(func(c map[string]any) { delete(c, "exp") })), CheckMissingClaim},
		{"null exp", rs(with(func(c map[string]any) { c["exp"] = nil })), CheckMissingClaim},
		{"missing iat", rs(with(func(c map[string]any) { delete(c, "iat") })), CheckMissingClaim},
		{"missing sub", rs(with(func(c map[string]any) { delete(c, "sub") })), CheckMissingClaim},
		{"missing aud", rs(with(func(c map[string]any) { delete(c, "aud") })), CheckMissingClaim},
		{"exp as string", rs(with(func(c map[string]any) { c["exp"] = fmt.Sprint(now + 300) })), CheckFormat},
		{"aud with a number", rs(with(func(c map[string]any) { c["aud"] = []any{testAudience, 1} })), CheckFormat},
		{"1 MiB token", strings.Repeat("a", 1<<20), CheckSize},
		{"empty", "", CheckFormat},
		{"garbage", "not.a.jwt", CheckFormat},
		{"JSON serialization", `{"payload":"e30","protected":"eyJhbGciOiJSUzI1NiJ9","signature":"AAAA"}`, CheckFormat},
		{"signed by another key, same kid", sign(t, rsaEvil(), jose.RS256, "k1", ti.claims(clk)), CheckSignature},
		{"tampered payload", tamper(rs(ti.claims(clk))), CheckSignature},
		{"claims not an object", signRaw(t, rsaKey1(), jose.RS256, "k1", []byte(`[1,2]`)), CheckFormat},
		// Whatever follows the claims object but white space is trailing
		// data, a closing bracket or brace included.
		{"a brace after the claims", trailing("}"), CheckFormat},
		{"a bracket after the claims", trailing("]"), CheckFormat},
		{"a value after the claims", trailing(" 1"), CheckFormat},
		{"an object after the claims", trailing("{}"), CheckFormat},
		{"white space after the claims", trailing(" \t\r\n"), ""},
		{"NUL in sub", rs(with(func(c map[string]any) { c["sub"] = "repo:acme/app\x00" })), CheckFormat},
		{"NUL in a claim", rs(with(func(c map[string]any) { c["run_id"] = "42\x00" })), CheckFormat},
		{"NUL in a nested claim", rs(with(func(c map[string]any) { c["x"] = map[string]any{"a": []any{"b\x00"}} })), CheckFormat},
		{"NUL in a claim name", rs(with(func(c map[string]any) { c["a\x00"] = "b" })), CheckFormat},
		{"NUL in a nested key", rs(with(func(c map[string]any) { c["x"] = map[string]any{"a\x00": 1} })), CheckFormat},
		{"nested claims without NUL", rs(with(func(c map[string]any) { c["x"] = map[string]any{"a": []any{"b", 1, nil, true}} })), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tc.token)
			if tc.check == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.Issuer != "ci" || id.IssuerURL != ti.srv.URL || id.Subject == "" || id.JTI == "" {
					t.Fatalf("identity = %+v", id)
				}
				return
			}
			if got := CheckOf(err); got != tc.check {
				t.Fatalf("check = %q (err %v), want %q", got, err, tc.check)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || err.Error() != ve.Check+": "+ve.Reason {
				t.Fatalf("error shape: %v", err)
			}
			assertNoToken(t, err, tc.token)
		})
	}
}

// Decoded JSON never holds invalid UTF-8 (encoding/json replaces it), but
// a claim that did would be refused like one with a NUL, at any depth. The
// claims a lease keeps in indexed columns are at most MaxIndexedClaim bytes
// (PostgreSQL cannot index much more); other claims are not bounded so (the
// token's size is).
func TestReadClaimsRefused(t *testing.T) {
	base := func(k string, v any) map[string]any {
		return map[string]any{"sub": "s", "aud": testAudience, "exp": json.Number("2"), "iat": json.Number("1"), k: v}
	}
	at, over := strings.Repeat("a", MaxIndexedClaim), strings.Repeat("a", MaxIndexedClaim+1)
	tests := []struct {
		name   string
		claims map[string]any
		bad    string // the claim the refusal names; "" = accepted
	}{
		{"plain", base("x", "y"), ""},
		{"invalid UTF-8", base("x", "a\xffb"), `"x"`},
		{"invalid UTF-8 name", base("\xff", "y"), `"\xff"`},
		{"invalid UTF-8 nested", base("x", []any{map[string]any{"a": "\xff"}}), `"x"`},
		{"NUL in sub", base("sub", "s\x00"), `"sub"`},
		{"two bad claims: the first by name", map[string]any{"sub": "s", "aud": testAudience, "exp": json.Number("2"), "iat": json.Number("1"),
			"zz": "\x00", "b\x00": "y", "m": []any{"\x00"}, "x": "ok"}, `"b\x00"`},
		{"sub at the bound", base("sub", at), ""},
		{"sub over", base("sub", over), `"sub"`},
		{"jti over", base("jti", over), `"jti"`},
		{"run_id over", base("run_id", over), `"run_id"`},
		{"job_id a long number", base("job_id", json.Number(strings.Repeat("9", MaxIndexedClaim+1))), `"job_id"`},
		{"pipeline_id over", base("pipeline_id", over), `"pipeline_id"`},
		{"repository over", base("repository", over), `"repository"`},
		{"project_path over", base("project_path", over), `"project_path"`},
		{"another claim long", base("workflow_ref", strings.Repeat("a", 4*MaxIndexedClaim)), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readClaims(tc.claims)
			if tc.bad == "" {
				if err != nil {
					t.Fatalf("readClaims: %v", err)
				}
				return
			}
			if CheckOf(err) != CheckFormat || !strings.Contains(err.Error(), "claim "+tc.bad+" ") {
				t.Fatalf("readClaims: %v, want a format refusal naming %s", err, tc.bad)
			}
		})
	}
}

// tamper changes one claim without re-signing.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), `"acme/app"`, `"acme/evil"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return strings.Join(parts, ".")
}

func assertNoToken(t *testing.T, err error, tok string) {
	t.Helper()
	if err == nil || tok == "" {
		return
	}
	msg := err.Error()
	for _, part := range strings.Split(tok, ".") {
		if len(part) >= 16 && strings.Contains(msg, part) {
			t.Fatalf("error contains part of the token: %q", msg)
		}
	}
	if len(msg) > 400 {
		t.Fatalf("error message suspiciously long (%d bytes)", len(msg))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestVerifyIdentity(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	c := ti.claims(clk)
	id, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", c))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"iss":           ti.srv.URL,
		"sub":           "repo:acme/app:ref:refs/heads/main",
		"aud":           `["` + testAudience + `"]`,
		"repository":    "acme/app",
		"repository_id": "1.23456789e+08", // exact JSON text: a pin of "123456789" does not match it
		"run_id":        "9876543210",
		"ref_protected": "true",
		"environment":   "production",
		"groups":        `["a",1e3]`,
		"jti":           c["jti"].(string),
		"exp":           fmt.Sprint(c["exp"]),
		"iat":           fmt.Sprint(c["iat"]),
		"nbf":           fmt.Sprint(c["nbf"]),
	}
	if !maps.Equal(id.Claims, want) {
		t.Fatalf("claims:\n got %v\nwant %v", id.Claims, want)
	}
	if id.Expiry.Unix() != c["exp"].(int64) || id.IssuedAt.Unix() != c["iat"].(int64) {
		t.Fatalf("times: %v %v", id.Expiry, id.IssuedAt)
	}
	if len(id.Audience) != 1 || id.Audience[0] != testAudience || id.Algorithm != "RS256" || id.KeyID != "k1" {
		t.Fatalf("identity: %+v", id)
	}
	if JobID(id) != "9876543210" {
		t.Fatalf("JobID = %q", JobID(id))
	}
}

// A number claim is its exact JSON text: a float that rounds to a pinned
// integer, or another spelling of it, never passes for it.
func TestClaimNumbersKeepTheirText(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	for _, lit := range []string{"4242", "4242.0000000000001", "4242.0", "4.242e3", "4242E0", "-0", "12345678901234567890123",
		"1e400", "0.1"} {
		t.Run(lit, func(t *testing.T) {
			c := ti.claims(clk)
			c["repository_id"] = json.Number(lit)
			c["nested"] = map[string]any{"n": json.Number(lit), "l": []any{json.Number(lit)}}
			id, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", c))
			if err != nil {
				t.Fatal(err)
			}
			if got := id.Claims["repository_id"]; got != lit {
				t.Fatalf("repository_id = %q, want the literal %q", got, lit)
			}
			if want := `{"l":[` + lit + `],"n":` + lit + `}`; id.Claims["nested"] != want {
				t.Fatalf("nested = %q, want %q", id.Claims["nested"], want)
			}
		})
	}
}

// A token for several audiences is ours only when its azp is our audience
// (OIDC Core §3.1.3.7), unless the issuer allows multi-audience tokens.
func TestMultipleAudiencesNeedAzp(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	strict := newTestVerifier(t, clk, ti.config())
	allowCfg := ti.config()
	allowCfg.AllowMultipleAudiences = true
	lenient := newTestVerifier(t, clk, allowCfg)
	other := "https://other.example"
	tests := []struct {
		name          string
		aud, azp      any // nil: left out
		strict, allow string
	}{
		{"single aud, no azp", testAudience, nil, "", ""},
		{"single aud in a list", []string{testAudience}, nil, "", ""},
		{"single aud, azp of another party", testAudience, other, "", ""},
		{"ours twice", []string{testAudience, testAudience}, nil, "", ""},
		{"two auds, azp ours", []string{testAudience, other}, testAudience, "", ""},
		{"two auds, azp other", []string{testAudience, other}, other, CheckAudience, ""},
		{"two auds, no azp", []string{other, testAudience}, nil, CheckAudience, ""},
		{"two auds, empty azp", []string{other, testAudience}, "", CheckAudience, ""},
		{"two auds, azp not a string", []string{other, testAudience}, 7, CheckFormat, CheckFormat},
		{"two auds none ours, azp ours", []string{other, "x"}, testAudience, CheckAudience, CheckAudience},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ti.claims(clk)
			c["aud"] = tc.aud
			if tc.azp != nil {
				c["azp"] = tc.azp
			}
			tok := sign(t, rsaKey1(), jose.RS256, "k1", c)
			for _, run := range []struct {
				v    *Verifier
				want string
			}{{strict, tc.strict}, {lenient, tc.allow}} {
				_, err := run.v.Verify(context.Background(), tok)
				if got := CheckOf(err); got != run.want {
					t.Fatalf("check = %q (err %v), want %q", got, err, run.want)
				}
			}
		})
	}
}

// Of two configs for one issuer, a multi-audience token goes to the one its
// azp names.
func TestMultipleAudiencesPickTheAzpEntry(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	a := ti.config()
	b := ti.config()
	b.Name, b.Audience = "other", "https://other.example"
	v := newTestVerifier(t, clk, a, b)
	c := ti.claims(clk)
	c["aud"] = []string{testAudience, b.Audience}
	c["azp"] = b.Audience
	id, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", c))
	if err != nil || id.Issuer != "other" {
		t.Fatalf("identity %+v, err %v; want the entry named other", id, err)
	}
}

func TestHSNeverAcceptedEvenIfConfigured(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	cfg := ti.config()
	cfg.Algorithms = []string{"HS256", "none", "RS256"}
	v := newTestVerifier(t, clk, cfg)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&rsaKey1().PublicKey))})
	for _, tok := range []string{hs256(t, pubPEM, "k1", ti.claims(clk)), unsigned(t, "none", ti.claims(clk))} {
		if _, err := v.Verify(context.Background(), tok); CheckOf(err) != CheckAlgorithm {
			t.Fatalf("err = %v, want algorithm", err)
		}
	}
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
}

// A JWKS that publishes a symmetric key must never let it verify anything.
func TestSymmetricKeyInJWKSIgnored(t *testing.T) {
	clk := newClock()
	secret := []byte("0123456789abcdef0123456789abcdef")
	ti := newTestIssuer(t, jose.JSONWebKey{Key: secret, KeyID: "s1", Algorithm: "HS256"}, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	if _, err := v.Verify(context.Background(), hs256(t, secret, "s1", ti.claims(clk))); CheckOf(err) != CheckAlgorithm {
		t.Fatalf("err = %v", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
}

func TestMultipleAlgorithmsAndNoKID(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "", ""), pubJWK(&ecKey1().PublicKey, "", ""))
	cfg := ti.config()
	cfg.Algorithms = []string{"ES256", "PS256"}
	v := newTestVerifier(t, clk, cfg)
	for _, tok := range []string{
		sign(t, ecKey1(), jose.ES256, "", ti.claims(clk)),
		sign(t, rsaKey1(), jose.PS256, "", ti.claims(clk)),
	} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "", ti.claims(clk))); CheckOf(err) != CheckAlgorithm {
		t.Fatalf("RS256: %v", err)
	}
}

func TestSameIssuerTwoAudiences(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	a, b := ti.config(), ti.config()
	a.Name, b.Name, b.Audience = "ci-prod", "ci-staging", "https://staging.test"
	v := newTestVerifier(t, clk, a, b)
	c := ti.claims(clk)
	c["aud"] = "https://staging.test"
	id, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", c))
	if err != nil || id.Issuer != "ci-staging" {
		t.Fatalf("id=%+v err=%v", id, err)
	}
	if ti.jwksHits.Load() != 1 {
		t.Fatalf("jwks hits = %d", ti.jwksHits.Load())
	}
}

func TestPresets(t *testing.T) {
	gh, ok := PresetFor(GitHubActionsURL)
	if !ok || gh.JobIDClaim != "run_id" || len(gh.Claims) != 15 {
		t.Fatalf("github preset: %+v", gh)
	}
	gl, ok := PresetFor(GitLabURL)
	if !ok || gl.JobIDClaim != "job_id" || len(gl.Claims) != 12 {
		t.Fatalf("gitlab preset: %+v", gl)
	}
	if _, ok := PresetFor(GitLabURL + "/"); ok {
		t.Fatal("preset lookup must be exact")
	}
	for _, tc := range []struct {
		id   Identity
		want string
	}{
		{Identity{IssuerURL: GitHubActionsURL, Claims: map[string]string{"run_id": "7", "job_id": "8"}}, "7"},
		{Identity{IssuerURL: GitLabURL, Claims: map[string]string{"run_id": "7", "job_id": "8"}}, "8"},
		{Identity{IssuerURL: "https://other", Claims: map[string]string{"run_id": "7"}}, "7"},
		{Identity{IssuerURL: "https://other", Claims: map[string]string{}}, ""},
	} {
		if got := JobID(&tc.id); got != tc.want {
			t.Errorf("JobID(%s) = %q, want %q", tc.id.IssuerURL, got, tc.want)
		}
	}
}

func TestConsumeJTI(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	tok := sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))
	store := &memJTI{}
	ctx := context.Background()

	id, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.ConsumeJTI(ctx, store, id); err != nil {
		t.Fatalf("first use: %v", err)
	}
	// Verify does not consume: the replayed token still verifies...
	id2, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	// ...but cannot be consumed twice.
	if err := v.ConsumeJTI(ctx, store, id2); CheckOf(err) != CheckReplay {
		t.Fatalf("replay: %v", err)
	}
	if exp := store.seen[id.IssuerURL+"\x00"+id.JTI]; !exp.Equal(id.Expiry.Add(DefaultSkew)) {
		t.Fatalf("remembered until %v", exp)
	}

	// No jti: refused.
	c := ti.claims(clk)
	delete(c, "jti")
	id3, err := v.Verify(ctx, sign(t, rsaKey1(), jose.RS256, "k1", c))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.ConsumeJTI(ctx, store, id3); CheckOf(err) != CheckMissingClaim {
		t.Fatalf("no jti: %v", err)
	}

	// Store failure is wrapped, not a replay.
	if err := v.ConsumeJTI(ctx, failingStore{}, id); err == nil || CheckOf(err) != "" {
		t.Fatalf("store error: %v", err)
	}
}

type failingStore struct{}

func (failingStore) UseJTI(context.Context, string, string, time.Time) (bool, error) {
	return false, errors.New("db down")
}

func TestConsumeJTIConcurrent(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	v := newTestVerifier(t, clk, ti.config())
	tok := sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))
	store := &memJTI{}
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			id, err := v.Verify(context.Background(), tok)
			if err != nil {
				errs <- err
				return
			}
			errs <- v.ConsumeJTI(context.Background(), store, id)
		})
	}
	wg.Wait()
	close(errs)
	wins, replays := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			wins++
		case CheckOf(err) == CheckReplay:
			replays++
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if wins != 1 || replays != n-1 {
		t.Fatalf("wins=%d replays=%d", wins, replays)
	}
}

// ensure the test server's redirect target differs by host (port).
func TestRedirectToOtherHostRefused(t *testing.T) {
	clk := newClock()
	other := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	redir := httptest.NewServer(http.RedirectHandler(other.srv.URL+"/jwks", http.StatusFound))
	t.Cleanup(redir.Close)
	cfg := IssuerConfig{Name: "ci", URL: other.srv.URL, Audience: testAudience, JWKSURL: redir.URL + "/jwks"}
	v := newTestVerifier(t, clk, cfg)
	_, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", other.claims(clk)))
	if CheckOf(err) != CheckKeysUnavailable || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("err = %v", err)
	}
	if other.jwksHits.Load() != 0 {
		t.Fatal("redirect was followed")
	}
}

func TestRedirectSameHostFollowed(t *testing.T) {
	clk := newClock()
	ti := newTestIssuer(t, pubJWK(&rsaKey1().PublicKey, "k1", ""))
	cfg := ti.config()
	cfg.JWKSURL = ti.srv.URL + "/jwks"
	// Same host: a relative redirect from a second path on the same server.
	mux := http.NewServeMux()
	mux.Handle("/old", http.RedirectHandler("/jwks", http.StatusMovedPermanently))
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(&rsaKey1().PublicKey, "k1", "")}})
	})
	same := httptest.NewServer(mux)
	t.Cleanup(same.Close)
	cfg.JWKSURL = same.URL + "/old"
	v := newTestVerifier(t, clk, cfg)
	if _, err := v.Verify(context.Background(), sign(t, rsaKey1(), jose.RS256, "k1", ti.claims(clk))); err != nil {
		t.Fatal(err)
	}
}
