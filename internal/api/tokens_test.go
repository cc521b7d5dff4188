package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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
