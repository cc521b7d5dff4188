package authority

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	mrand "math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

type rawIssuer struct {
	srv *httptest.Server
	key *rsa.PrivateKey
}

func startRawIssuer(t *testing.T) *rawIssuer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ri := &rawIssuer{key: k}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": ri.srv.URL, "jwks_uri": ri.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Use: "sig"}}})
	})
	ri.srv = httptest.NewServer(mux)
	t.Cleanup(ri.srv.Close)
	return ri
}

func (ri *rawIssuer) sign(t *testing.T, alg jose.SignatureAlgorithm, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: ri.key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// `mayfly policy test` (cmd/mayfly/policytest.go: DecodeUnverified,
// IssuerOf, Admit) must decide as the exchange does for the same genuine
// token: it said "granted" for tokens the server always refuses for their
// shape (no sub or jti, a sub, azp or jti that is not a string, an nbf or
// iat that is not a number). Random tokens from a fixed seed, so a failure
// repeats.
func TestPolicyTestDifferential(t *testing.T) {
	ctx := context.Background()
	b := newBench(t)
	ri := startRawIssuer(t)
	pol := fmt.Sprintf(`issuers:
  i1:
    url: %[1]s
    audience: aud-1
  i2:
    url: %[1]s
    audience: aud-2
    allow_multiple_audiences: true
    algorithms: [RS256, PS256]
  i3:
    url: %[1]s
    audience: aud-1
    algorithms: [PS256]
upstreams:
  api:
    url: http://127.0.0.1:2
    credential: {secret: gh}
grants:
  g1:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: i1, claims: {repository_id: 42, ref_protected: true}}]
  g2:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: i2, claims: {repository_id: ["42", "43"]}}, {issuer: i1, claims: {sub: x}}]
  g3:
    upstream: api
    ttl: 5m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: i3, claims: {repository_id: "42"}}]
`, ri.srv.URL)
	files := []policy.File{{Name: "p.yaml", Data: []byte(pol)}}
	if _, err := b.a.ApplyPolicy(ctx, files, "alice"); err != nil {
		t.Fatal(err)
	}
	p := b.a.Policy()
	r := mrand.New(mrand.NewSource(7))
	pick := func(vs ...any) any { return vs[r.Intn(len(vs))] }
	const absent = "\x00absent"
	diffs, granted := 0, 0
	for n := 0; n < 400 && diffs < 5; n++ {
		now := time.Now()
		c := map[string]any{"iss": ri.srv.URL, "exp": now.Add(5 * time.Minute).Unix()}
		set := func(k string, v any) {
			if v != absent {
				c[k] = v
			}
		}
		c["jti"] = fmt.Sprintf("%016x", r.Uint64()) // never the same twice: a replay is not what this tests
		c["iat"] = now.Unix()
		set("nbf", pick(absent, now.Unix()))
		if r.Intn(3) == 0 { // one of them malformed
			switch r.Intn(3) {
			case 0:
				delete(c, "jti")
				set("jti", pick(absent, 9, []any{"a"}, ""))
			case 1:
				delete(c, "iat")
				set("iat", pick(absent, fmt.Sprint(now.Unix()), nil))
			case 2:
				c["nbf"] = pick(fmt.Sprint(now.Unix()), true, []any{now.Unix()})
			}
		}
		set("aud", pick("aud-1", "aud-2", []any{"aud-1", "aud-2"}, []any{"aud-2", "aud-1"}, []any{"aud-2", "aud-2"}, "aud-3"))
		set("azp", pick(absent, absent, "aud-1", "aud-2", 7))
		set("sub", pick("x", "x", "y", absent, 5))
		set("repository_id", pick("42", json.Number("42"), json.Number("42.0"), "43", absent, []any{"42"}, nil))
		set("ref_protected", pick(true, "true", absent, "True"))
		alg := pick(jose.RS256, jose.PS256).(jose.SignatureAlgorithm)
		raw := ri.sign(t, alg, c)
		grant := pick("g1", "g2", "g3").(string)

		u, err := identity.DecodeUnverified(raw)
		if err != nil {
			t.Fatal(err)
		}
		name, ierr := u.IssuerOf(IssuerConfigs(p))
		offline := ierr == nil && p.Admit(policy.Identity{Issuer: name, Claims: u.Claims, Source: otherAddr}, grant) == nil
		_, xerr := b.a.Exchange(ctx, ExchangeRequest{SubjectToken: raw, Scope: []string{grant}, Source: otherAddr})
		online := xerr == nil
		// A token the server refuses as an ID token, policy test refuses
		// for the same reason.
		sameWhy := xerr == nil || !strings.Contains(xerr.Error(), "invalid_grant") || ierr != nil && strings.Contains(xerr.Error(), ierr.Error())
		if offline != online || !sameWhy {
			diffs++
			cj, _ := json.Marshal(c)
			t.Errorf("alg %s grant %s claims %s: policy test granted=%v (issuer %q %v), server granted=%v (%v)", alg, grant, cj, offline, name, ierr, online, xerr)
		}
		if online {
			granted++
		}
	}
	if granted == 0 {
		t.Error("no token was granted: the test decides nothing")
	}
}
