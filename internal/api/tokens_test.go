package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/identity"
)

// unverifiedIssuer finds iss in a JWT payload without verifying it (for
// the per-issuer rate limit only): the top-level iss the verifier routes
// the token by, cut to 512 bytes, or "" when there is none.
func TestUnverifiedIssuer(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	tests := []struct {
		name, token, want string
	}{
		{"plain", jwt(`{"sub":"x","iss":"https://ci.example"}`), "https://ci.example"},
		{"spaces before the value", jwt(`{"iss" :  "https://a.example","sub":"x"}`), "https://a.example"},
		{"not a string", jwt(`{"iss":42}`), ""},
		{"no iss", jwt(`{"sub":"x"}`), ""},
		{"unterminated", jwt(`{"iss":"https://a.example`), ""},
		{"too long a value is cut", jwt(`{"iss":"` + strings.Repeat("a", 513) + `"}`), strings.Repeat("a", 512)},
		{"longest value", jwt(`{"iss":"` + strings.Repeat("a", 512) + `"}`), strings.Repeat("a", 512)},
		{"two parts", "a.b", ""},
		{"payload not base64", "a.!!!.c", ""},
		{"too large a token", jwt(`{"iss":"https://a.example","pad":"` + strings.Repeat("p", 16<<10) + `"}`), ""},
		{"empty", "", ""},
		// The verifier routes by the top-level iss as JSON reads it: a
		// token it would check against an issuer's keys is counted under
		// that issuer, whatever comes before its iss or how it is written.
		{"a nested iss first", jwt(`{"act":{"iss":"https://other.example"},"iss":"https://ci.example"}`), "https://ci.example"},
		{"iss as a value first", jwt(`{"sub":"iss","iss":"https://ci.example"}`), "https://ci.example"},
		{"escaped slashes", jwt(`{"iss":"https:\/\/ci.example"}`), "https://ci.example"},
		{"escaped name", jwt(`{"i\u0073s":"https://ci.example"}`), "https://ci.example"},
		{"repeated: the last is read", jwt(`{"iss":"https://other.example","iss":"https://ci.example"}`), "https://ci.example"},
		{"an iss only inside a string", jwt(`{"sub":"a\"iss\":\"https://other.example","iss":"https://ci.example"}`), "https://ci.example"},
		{"too long a value, read as JSON, is cut", jwt(`{"x":"iss","iss":"` + strings.Repeat("b", 600) + `"}`), strings.Repeat("b", 512)},
	}
	for _, tt := range tests {
		if got := unverifiedIssuer(tt.token); got != tt.want {
			t.Errorf("%s: unverifiedIssuer = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// Every exchange the verifier would check against an issuer's keys counts
// against that issuer's limit, however its payload is written: a token
// naming another iss first (nested, or as a value), or spelling its iss
// with escapes, found a bucket of its own, or none, and a flood of them
// from many addresses was never capped (README: issuer_rate "caps one
// issuer however many addresses it comes from").
func TestIssuerLimitCountsTheIssuerVerifyRoutesBy(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	tests := []struct{ name, token string }{
		{"plain again", jwt(`{"iss":"https://ci.example","sub":"b"}`)},
		{"a nested iss first", jwt(`{"act":{"iss":"https://other.example"},"iss":"https://ci.example"}`)},
		{"iss as a value first", jwt(`{"sub":"iss","iss":"https://ci.example"}`)},
		{"escaped slashes", jwt(`{"iss":"https:\/\/ci.example"}`)},
		{"escaped name", jwt(`{"i\u0073s":"https://ci.example"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{Authority: authority.New(authority.Config{Audit: &entries{}}),
				Limits: Limits{IssuerRate: 0.001, IssuerBurst: 1}})
			if err != nil {
				t.Fatal(err)
			}
			send := func(i int, tok string) int {
				// No scope: the authority refuses at once, after the limits.
				body := "grant_type=" + grantTokenExchange + "&subject_token_type=" + typeIDToken + "&subject_token=" + tok
				r := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = fmt.Sprintf("192.0.2.%d:40000", i) // another address each time
				w := httptest.NewRecorder()
				a.ServeHTTP(w, r)
				return w.Code
			}
			if got := send(1, jwt(`{"iss":"https://ci.example","sub":"a"}`)); got != 400 {
				t.Fatalf("first exchange for the issuer: status %d, want 400 (refused by the authority)", got)
			}
			if got := send(2, tt.token); got != http.StatusTooManyRequests {
				t.Fatalf("second exchange for the issuer, with burst 1: status %d, want 429", got)
			}
		})
	}
}

// unverifiedIssuer names the issuer identity reads from any token it
// would route (the iss DecodeUnverified finds), cut to 512 bytes.
func FuzzUnverifiedIssuer(f *testing.F) {
	for _, s := range []string{
		`{"iss":"https://ci.example"}`,
		`{"act":{"iss":"https://other.example"},"iss":"https://ci.example"}`,
		`{"sub":"iss","iss":"https://ci.example"}`,
		`{"iss":"https:\/\/ci.example"}`,
		`{"i\u0073s":"https://ci.example"}`,
		`{"iss":"a","iss":"b"}`,
		`{"sub":"a\"iss\":\"x","iss":"y"}`,
		"{\"iss\":\"\xff\"}",
		`{"x":"iss","iss":"a"}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
		u, err := identity.DecodeUnverified(tok)
		if err != nil || u.Issuer == "" {
			return // refused, or no iss to route by: nothing to count
		}
		want := u.Issuer
		if len(want) > 512 {
			want = want[:512]
		}
		if got := unverifiedIssuer(tok); got != want {
			t.Fatalf("unverifiedIssuer = %q, identity reads iss %q", got, u.Issuer)
		}
	})
}

// An exchange too large to read holds too large an ID token: it is refused
// 400 invalid_grant naming the size check (SPEC section 4), not 413, and
// recorded as every refused exchange is, whether its length was declared
// or found while reading; a refusal that cannot be recorded is a 503.
func TestExchangeTooLarge(t *testing.T) {
	body := "grant_type=" + grantTokenExchange + "&subject_token_type=" + typeIDToken + "&scope=deploy&subject_token=" + strings.Repeat("a", 70<<10)
	tests := []struct {
		name    string
		chunked bool // the length is not declared
		failLog bool
		status  int
		code    string
	}{
		{"declared length", false, false, 400, "invalid_grant"},
		{"chunked", true, false, 400, "invalid_grant"},
		{"refusal not recordable", false, true, 503, "temporarily_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &entries{fail: map[string]bool{audit.TypeExchange: tt.failLog}}
			a, err := New(Config{Authority: authority.New(authority.Config{Audit: log})})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.RemoteAddr = "192.0.2.7:40000"
			if tt.chunked {
				r.ContentLength = -1
			}
			w := httptest.NewRecorder()
			a.ServeHTTP(w, r)
			var out apitype.Error
			json.Unmarshal(w.Body.Bytes(), &out)
			if w.Code != tt.status || out.Error != tt.code {
				t.Fatalf("answer %d %s, want %d %s", w.Code, w.Body, tt.status, tt.code)
			}
			if tt.failLog {
				return
			}
			if !strings.HasPrefix(out.Description, identity.CheckSize+":") {
				t.Errorf("description %q does not name the size check", out.Description)
			}
			evs := log.all()
			if len(evs) != 1 {
				t.Fatalf("%d entries, want 1", len(evs))
			}
			if ev := evs[0]; ev.Type != audit.TypeExchange || ev.Status != 400 || ev.Check != identity.CheckSize || ev.Source != "192.0.2.7" {
				t.Errorf("entry %+v, want a refused exchange from 192.0.2.7, check size", ev)
			}
		})
	}
}

// countingReplay is a shared replay store that only counts what it is
// asked to record.
type countingReplay struct{ uses atomic.Int64 }

func (c *countingReplay) UseJTI(context.Context, string, string, time.Time) (bool, error) {
	c.uses.Add(1)
	return true, nil
}

// TestDoSDPoPReplayCacheFilledByRefusedExchanges: an exchange's DPoP proof
// is spent only once its ID token has verified. When POST /v1/token
// recorded the jti first, exchanges carrying no valid ID token at all
// (here: garbage) each took a place in the node's replay cache, shared
// with the gateway: full, it refused every proof on the node (a real
// job's exchange, renewal or key-bound gateway call) with
// replay_cache_full; with a shared store (as the server wires it), each
// cost a durable write. Nobody needs an ID token for that.
func TestDoSDPoPReplayCacheFilledByRefusedExchanges(t *testing.T) {
	const cache = 64 // a small cache, filled many times over below
	tests := []struct {
		name   string
		shared *countingReplay
	}{
		{"memory only", nil},
		{"shared store", &countingReplay{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := dpop.Options{ReplayCacheSize: cache}
			if tt.shared != nil {
				opts.Shared = tt.shared
			}
			a, err := New(Config{Authority: authority.New(authority.Config{Audit: &entries{fail: map[string]bool{}}, Verifier: identity.NewVerifier(identity.Options{})}),
				DPoP: dpop.NewVerifier(opts), PublicURL: func(*http.Request) string { return "http://mayfly.test" }})
			if err != nil {
				t.Fatal(err)
			}
			body := "grant_type=" + grantTokenExchange + "&subject_token_type=" + typeIDToken + "&scope=deploy&subject_token=not.a.jwt"
			exchange := func(key ed25519.PrivateKey, from string) (int, apitype.Error) {
				proof, err := dpop.NewProof(key, "POST", "http://mayfly.test/v1/token", "", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				r := httptest.NewRequest("POST", "http://mayfly.test/v1/token", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.Header.Set("DPoP", proof)
				r.RemoteAddr = from
				w := httptest.NewRecorder()
				a.ServeHTTP(w, r)
				var e apitype.Error
				json.Unmarshal(w.Body.Bytes(), &e)
				return w.Code, e
			}
			_, attacker, _ := ed25519.GenerateKey(rand.Reader)
			for i := range 20 * cache { // within each address's token_burst
				if code, e := exchange(attacker, fmt.Sprintf("198.51.100.%d:4000", i/500)); e.Error != "invalid_grant" {
					t.Fatalf("exchange %d with a garbage ID token: %d %s: %s, want invalid_grant", i, code, e.Error, e.Description)
				}
			}
			if tt.shared != nil && tt.shared.uses.Load() != 0 {
				t.Errorf("%d proofs sent with a garbage ID token were recorded in the shared store", tt.shared.uses.Load())
			}
			// A real job now presents its own fresh proof: it is not
			// refused for the proof.
			_, victim, _ := ed25519.GenerateKey(rand.Reader)
			if code, e := exchange(victim, "203.0.113.9:4000"); e.Error == "invalid_dpop_proof" {
				t.Errorf("a fresh DPoP proof is refused (%d %s: %s) after exchanges with no valid ID token", code, e.Error, e.Description)
			}
		})
	}
}

// BenchmarkUnverifiedIssuer: a GitHub-shaped payload takes the scan; one
// naming "iss" twice is read as JSON.
func BenchmarkUnverifiedIssuer(b *testing.B) {
	claims := `"sub":"repo:octo-org/octo-repo:environment:prod","aud":"https://mayfly.example","ref":"refs/heads/main",` +
		`"sha":"example-sha","repository":"octo-org/octo-repo","repository_owner":"octo-org","repository_id":"74",` +
		`"repository_owner_id":"65","run_id":"example-run-id","run_number":"10","run_attempt":"2","actor":"octocat",` +
		`"workflow":"example-workflow","event_name":"workflow_dispatch","ref_type":"branch","job_workflow_ref":"octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",` +
		`"iss":"https://token.actions.githubusercontent.com","nbf":1632492967,"exp":1632493867,"iat":1632493567,"jti":"example-id"`
	for _, bb := range []struct{ name, payload string }{
		{"scan", `{` + claims + `}`},
		{"json", `{"x":"iss",` + claims + `}`},
	} {
		tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(bb.payload)) + ".c2ln"
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if unverifiedIssuer(tok) != "https://token.actions.githubusercontent.com" {
					b.Fatal("wrong issuer")
				}
			}
		})
	}
}
