package e2e

// The identity side of the attack suite (issue 12, items 5, 9 and 10),
// against the real binary on loopback: a DPoP proof made for another site
// and relayed with that site's Host (exchange and gateway); ID-token claims
// that only a float reading would match; an ID token for several audiences
// whose authorized party is someone else; and leak reports past the token
// cap or in a flood. Every case first proves that its allowed neighbour
// works, then that the attack is refused, that the upstream received
// nothing it should not, and that no credential or token came back.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/token"
)

const aiCred = "upstream-credential-ident-0123456789"

// aiIssuer is an OIDC issuer on loopback that signs whatever claims a case
// needs (the dev issuer fixes aud and writes claims as strings).
type aiIssuer struct {
	srv    *httptest.Server
	signer jose.Signer
	n      atomic.Int64
}

func newAIIssuer(t *testing.T) *aiIssuer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &aiIssuer{}
	is.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: "ai"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "ai", Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// mint signs a token for aud with repository_id "4242"; over replaces
// claims (a nil value removes one). Numbers are written as given.
func (is *aiIssuer) mint(t *testing.T, aud any, over map[string]any) string {
	t.Helper()
	now := time.Now()
	c := map[string]any{"iss": is.srv.URL, "aud": aud, "sub": "repo:acme/app:ref:refs/heads/main",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": fmt.Sprintf("ai-%d-%d", is.n.Add(1), now.UnixNano()),
		"repository": "acme/app", "repository_id": "4242"}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := is.signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// aiUpstream records what reached it.
type aiUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string // method, path and every header, one string a request
}

func newAIUpstream(t *testing.T) *aiUpstream {
	u := &aiUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL.RequestURI())
		r.Header.Write(&b)
		u.mu.Lock()
		u.seen = append(u.seen, b.String())
		u.mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *aiUpstream) count() int { u.mu.Lock(); defer u.mu.Unlock(); return len(u.seen) }

func (u *aiUpstream) last() string { u.mu.Lock(); defer u.mu.Unlock(); return u.seen[len(u.seen)-1] }

// aiWorld is a started node with the policy the cases need.
type aiWorld struct {
	n      *node
	c      *http.Client
	is     *aiIssuer
	up     *aiUpstream
	port   string
	tokens []string // every job token issued, searched for in answers
}

const aiPolicy = `issuers:
  ci:
    url: %[1]s
    audience: %[2]s
  ci-multi:
    url: %[1]s
    audience: https://multi.example
    allow_multiple_audiences: true
upstreams:
  echo:
    url: %[3]s
    credential:
      secret: ai-cred
      prefix: "Bearer "
grants:
  pinned:
    upstream: echo
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/v1/**"]
    who: [{issuer: ci, claims: {repository_id: "4242"}}]
  multi:
    upstream: echo
    ttl: 5m
    allow:
      - methods: [GET]
        paths: ["/v1/**"]
    who: [{issuer: ci-multi, claims: {repository_id: "4242"}}]
`

func newAIWorld(t *testing.T) *aiWorld {
	t.Helper()
	n := initDir(t)
	n.start(t)
	w := &aiWorld{n: n, c: n.client(t), is: newAIIssuer(t), up: newAIUpstream(t)}
	u, _ := url.Parse(n.url)
	w.port = u.Port()
	env := []string{"MAYFLY_ADDR=" + n.url, "MAYFLY_CACERT=" + filepath.Join(n.dir, "ca.pem"), "MAYFLY_TOKEN=" + n.admin}
	if _, e, code := run(t, env, aiCred+"\n", "secret", "put", "ai-cred"); code != 0 {
		t.Fatalf("secret put: %s", e)
	}
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte(fmt.Sprintf(aiPolicy, w.is.srv.URL, n.url, w.up.srv.URL)), 0o600)
	if _, e, code := run(t, env, "", "policy", "apply", pol); code != 0 {
		t.Fatalf("policy apply: %s", e)
	}
	return w
}

// do sends one request to the node; host, when set, replaces the Host
// header. It fails the test when the answer holds the credential or any
// job token issued so far (but the one an exchange hands out).
func (w *aiWorld) do(t *testing.T, method, path, host string, hdr map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, w.n.url+path, strings.NewReader(body))
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var hs strings.Builder
	resp.Header.Write(&hs)
	all := hs.String() + string(b)
	if strings.Contains(all, aiCred) {
		t.Fatalf("%s %s: the credential came back", method, path)
	}
	for _, tok := range w.tokens {
		if strings.Contains(all, tok) {
			t.Fatalf("%s %s: a job token came back", method, path)
		}
	}
	var out map[string]any
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// exchange trades idt for a job token of scope; proof is a DPoP header.
func (w *aiWorld) exchange(t *testing.T, idt, scope, host, proof string) (int, map[string]any) {
	t.Helper()
	v := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {idt},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}, "scope": {scope}}
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if proof != "" {
		hdr["DPoP"] = proof
	}
	code, out := w.do(t, "POST", "/v1/token", host, hdr, v.Encode())
	if tok, ok := out["access_token"].(string); ok {
		w.tokens = append(w.tokens, tok)
	}
	return code, out
}

func (w *aiWorld) mustExchange(t *testing.T, idt, scope string) string {
	t.Helper()
	code, out := w.exchange(t, idt, scope, "", "")
	if code != 200 {
		t.Fatalf("exchange: %d %v", code, out)
	}
	return out["access_token"].(string)
}

// gw calls the gateway and says whether the upstream was reached, checking
// that what reached it carried the credential and no job token.
func (w *aiWorld) gw(t *testing.T, host string, hdr map[string]string) (int, bool) {
	t.Helper()
	before := w.up.count()
	code, _ := w.do(t, "GET", "/gw/echo/v1/items", host, hdr, "")
	reached := w.up.count() != before
	if reached {
		got := w.up.last()
		if !strings.Contains(got, "Bearer "+aiCred) {
			t.Fatalf("upstream request without the credential:\n%s", got)
		}
		for _, tok := range w.tokens {
			if strings.Contains(got, tok) {
				t.Fatalf("a job token reached the upstream:\n%s", got)
			}
		}
	}
	return code, reached
}

func TestAttackIdentity(t *testing.T) {
	w := newAIWorld(t)
	ours := w.n.url
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	proof := func(t *testing.T, method, htu, tok string) string {
		p, err := dpop.NewProof(key, method, htu, tok, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var bound string // a DPoP-bound token, from the exchange case

	// Item 5: the htu a proof must name is this node's own origin.
	t.Run("dpop htu on exchange", func(t *testing.T) {
		for _, tc := range []struct {
			name, host, htu string
			want            int
		}{
			{"allowed: own address", "", ours, 200},
			{"allowed: certificate name", "localhost:" + w.port, "https://localhost:" + w.port, 200},
			{"attack: forged host", "evil.example", "https://evil.example", 400},
			{"attack: forged host, our port", "evil.example:" + w.port, "https://evil.example:" + w.port, 400},
			{"attack: forged host, http", "evil.example", "http://evil.example", 400},
			{"attack: our name, another port", "localhost:1", "https://localhost:1", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out := w.exchange(t, w.is.mint(t, ours, nil), "pinned", tc.host, proof(t, "POST", tc.htu+"/v1/token", ""))
				if code != tc.want {
					t.Fatalf("status %d %v, want %d", code, out, tc.want)
				}
				if code == 200 {
					if out["token_type"] != "DPoP" {
						t.Fatalf("not bound: %v", out)
					}
					bound = out["access_token"].(string)
				} else if out["error"] != "invalid_dpop_proof" {
					t.Fatalf("error %v", out)
				}
			})
		}
	})

	t.Run("dpop htu on gateway", func(t *testing.T) {
		if bound == "" {
			t.Skip("no bound token")
		}
		path := "/gw/echo/v1/items"
		for _, tc := range []struct {
			name, host, htu string
			want            int
		}{
			{"allowed: own address", "", ours, 200},
			{"allowed: certificate name", "localhost:" + w.port, "https://localhost:" + w.port, 200},
			{"attack: forged host", "evil.example", "https://evil.example", 401},
			{"attack: forged host, our port", "evil.example:" + w.port, "https://evil.example:" + w.port, 401},
			{"attack: forged IPv6 host", "[2001:db8::1]:" + w.port, "https://[2001:db8::1]:" + w.port, 401},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, reached := w.gw(t, tc.host, map[string]string{"Authorization": "DPoP " + bound, "DPoP": proof(t, "GET", tc.htu+path, bound)})
				if code != tc.want || reached != (tc.want == 200) {
					t.Fatalf("status %d, upstream reached %v; want %d", code, reached, tc.want)
				}
			})
		}
	})

	// Renewal checks a bound token's proof against the same origin.
	t.Run("dpop htu on renewal", func(t *testing.T) {
		if bound == "" {
			t.Skip("no bound token")
		}
		for _, tc := range []struct {
			name, host, htu string
			want            int
		}{
			{"allowed: own address", "", ours, 200},
			{"allowed: certificate name", "localhost:" + w.port, "https://localhost:" + w.port, 200},
			{"attack: forged host", "evil.example", "https://evil.example", 401},
			{"attack: forged host, our port", "evil.example:" + w.port, "https://evil.example:" + w.port, 401},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hdr := map[string]string{"Authorization": "DPoP " + bound, "DPoP": proof(t, "POST", tc.htu+"/v1/token/renew", bound)}
				code, out := w.do(t, "POST", "/v1/token/renew", tc.host, hdr, "")
				if code != tc.want || (code != 200 && out["error"] != "invalid_dpop_proof") {
					t.Fatalf("status %d %v, want %d", code, out, tc.want)
				}
			})
		}
	})

	// Item 9: numbers match by their exact JSON text.
	t.Run("numeric claims", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			id   any
			want int
		}{
			{"allowed: the string", "4242", 200},
			{"allowed: the number as written", json.Number("4242"), 200},
			{"attack: a float that rounds to it", json.Number("4242.0000000000001"), 400},
			{"attack: a trailing zero", json.Number("4242.0"), 400},
			{"attack: an exponent", json.Number("4.242e3"), 400},
			{"attack: the string of a float", "4242.0000000000001", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out := w.exchange(t, w.is.mint(t, ours, map[string]any{"repository_id": tc.id}), "pinned", "", "")
				if code != tc.want || (code == 400 && out["error"] != "invalid_scope") {
					t.Fatalf("status %d %v, want %d", code, out, tc.want)
				}
			})
		}
	})

	// Item 9: a token for several audiences is ours only when azp is.
	t.Run("multiple audiences", func(t *testing.T) {
		other := "https://other.example"
		for _, tc := range []struct {
			name  string
			aud   any
			azp   any
			scope string
			want  int
		}{
			{"allowed: one audience", ours, nil, "pinned", 200},
			{"allowed: two, azp ours", []string{ours, other}, ours, "pinned", 200},
			{"attack: two, azp another party", []string{ours, other}, other, "pinned", 400},
			{"attack: two, no azp", []string{other, ours}, nil, "pinned", 400},
			{"allowed by policy: allow_multiple_audiences", []string{"https://multi.example", other}, other, "multi", 200},
			{"attack: that token for a grant of the strict issuer", []string{"https://multi.example", ours}, other, "pinned", 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out := w.exchange(t, w.is.mint(t, tc.aud, map[string]any{"azp": tc.azp}), tc.scope, "", "")
				if code != tc.want {
					t.Fatalf("status %d %v, want %d", code, out, tc.want)
				}
				if code == 400 && out["error"] != "invalid_grant" && out["error"] != "invalid_scope" {
					t.Fatalf("error %v", out)
				}
			})
		}
	})

	// Item 10: a report past the cap changes nothing; a flood of reports
	// leaves other clients' exchanges and gateway calls working.
	t.Run("leak reports", func(t *testing.T) {
		report := func(live string, unknown int) string {
			var b strings.Builder
			b.WriteString("log line with " + live + "\n")
			for range unknown {
				tok, _ := token.New(token.Job)
				b.WriteString(tok + "\n")
			}
			return b.String()
		}
		bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

		victim := w.mustExchange(t, w.is.mint(t, ours, nil), "pinned")
		if code, reached := w.gw(t, "", bearer(victim)); code != 200 || !reached {
			t.Fatalf("before the report: %d", code)
		}
		// Allowed: at the cap (1000 distinct tokens) the report is taken.
		code, out := w.do(t, "POST", "/v1/leaks", "", nil, report(victim, 999))
		if code != 200 || len(out["revoked"].([]any)) != 1 || out["unknown"].(float64) != 999 {
			t.Fatalf("report at the cap: %d %v", code, out)
		}
		if code, reached := w.gw(t, "", bearer(victim)); code != 401 || reached {
			t.Fatalf("revoked token at the gateway: %d, reached %v", code, reached)
		}

		// Attack: one past the cap is refused whole.
		survivor := w.mustExchange(t, w.is.mint(t, ours, nil), "pinned")
		code, out = w.do(t, "POST", "/v1/leaks", "", nil, report(survivor, 1000))
		if code != 413 || out["error"] != "invalid_request" {
			t.Fatalf("report past the cap: %d %v", code, out)
		}
		if code, reached := w.gw(t, "", bearer(survivor)); code != 200 || !reached {
			t.Fatalf("a refused report changed something: %d", code)
		}

		// Attack: a flood. Reports are worked on one at a time; the rest
		// wait or are turned away (429), never answered 5xx; meanwhile
		// another client exchanges and calls the gateway as usual.
		flood := report("", 999)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		stop := make(chan struct{})
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := w.c.Post(ours+"/v1/leaks", "text/plain", strings.NewReader(flood))
					if err != nil {
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
				}
			}()
		}
		for i := range 5 {
			tok := w.mustExchange(t, w.is.mint(t, ours, nil), "pinned")
			if code, reached := w.gw(t, "", bearer(tok)); code != 200 || !reached {
				t.Fatalf("gateway call %d during the flood: %d", i, code)
			}
		}
		close(stop)
		wg.Wait()
		for code := range codes {
			if code != 200 && code != 429 {
				t.Fatalf("flood answers %v", codes)
			}
		}
		if codes[429] == 0 {
			t.Fatalf("a flood from one address was never limited: %v", codes)
		}
		if code, reached := w.gw(t, "", bearer(survivor)); code != 200 || !reached {
			t.Fatalf("after the flood: %d", code)
		}
	})
}
