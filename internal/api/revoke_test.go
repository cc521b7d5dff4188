package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// revokeAPI serves an API over a fresh SQLite store, with its lease
// manager to issue tokens and check them.
func revokeAPI(t *testing.T, lim Limits) (*API, *lease.Manager) {
	t.Helper()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	leases := lease.New(db, h, lease.Options{})
	a, err := New(Config{Authority: authority.New(authority.Config{Audit: &entries{fail: map[string]bool{}}, Leases: leases}),
		Leases: leases, Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	return a, leases
}

// RFC 7009 section 2.1: the token parameter is required, in the form
// body. A request that carries none the server can read (a JSON body, the
// token in the URL, a compressed form, an empty value) answered 200 as a
// revocation does, so a holder revoking a leaked token that way, or a
// script whose variable was empty, took a token that still works for
// dead. It is 400 invalid_request, nothing revoked. A token sent as the
// SPEC says is revoked with 200, and so is one the server does not know
// (always 200: the answer never says whether a token existed).
func TestRevokeWithoutAReadableTokenSaysSo(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	gz := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.Bytes()
	}
	unknown, _ := token.New(token.Job)
	tests := []struct {
		name     string
		query    bool // the token in the URL's query instead
		ctype    string
		encoding string
		body     func(tok string) []byte
		want     int
		revoked  bool
	}{
		{"form", false, form, "", func(tok string) []byte { return []byte(url.Values{"token": {tok}}.Encode()) }, 200, true},
		{"form with a type hint", false, form, "", func(tok string) []byte {
			return []byte(url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode())
		}, 200, true},
		{"unknown token", false, form, "", func(string) []byte { return []byte("token=" + unknown) }, 200, false},
		{"not a token", false, form, "", func(string) []byte { return []byte("token=x") }, 200, false},
		{"JSON body", false, "application/json", "", func(tok string) []byte { return []byte(`{"token":"` + tok + `"}`) }, 400, false},
		{"token in the URL", true, form, "", func(string) []byte { return nil }, 400, false},
		{"gzip form", false, form, "gzip", func(tok string) []byte { return gz("token=" + tok) }, 400, false},
		{"empty token", false, form, "", func(string) []byte { return []byte("token=") }, 400, false},
		{"no body", false, form, "", func(string) []byte { return nil }, 400, false},
		{"no content type", false, "", "", func(tok string) []byte { return []byte("token=" + tok) }, 400, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, leases := revokeAPI(t, Limits{})
			tok, _, err := leases.Issue(context.Background(), lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"g"}, TTL: time.Minute, MaxTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			target := "/v1/revoke"
			if tt.query {
				target += "?" + url.Values{"token": {tok}}.Encode()
			}
			r := httptest.NewRequest("POST", target, bytes.NewReader(tt.body(tok)))
			r.RemoteAddr = "192.0.2.1:40000"
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			if tt.encoding != "" {
				r.Header.Set("Content-Encoding", tt.encoding)
			}
			w := httptest.NewRecorder()
			a.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d %s, want %d", w.Code, w.Body, tt.want)
			}
			if tt.want == 400 && !bytes.Contains(w.Body.Bytes(), []byte(`"invalid_request"`)) {
				t.Fatalf("400 body %s, want invalid_request", w.Body)
			}
			if bytes.Contains(w.Body.Bytes(), []byte(tok)) {
				t.Fatalf("the answer quotes the token: %s", w.Body)
			}
			_, err = leases.Lookup(context.Background(), tok)
			if revoked := err != nil; revoked != tt.revoked {
				t.Fatalf("token revoked = %v (%v) after a %d answer, want %v", revoked, err, w.Code, tt.revoked)
			}
		})
	}
}

// Each revocation reads a form body (for up to the API's 30 s read
// deadline) and looks its token up, in the store when this node's view
// does not hold it. Unlimited, one address held as many revocations open
// at once as its connections carry (HTTP/2: 250 streams each) and made the
// store read at will with made-up tokens. Revocations are limited per
// address as exchanges are (token_rate, token_burst, counted apart),
// refused before the body is read, 429 with Retry-After; another address
// is not held back.
func TestRevokeIsRateLimitedPerAddress(t *testing.T) {
	const burst = 3
	a, leases := revokeAPI(t, Limits{TokenRate: 0.001, TokenBurst: burst})
	tok, _, err := leases.Issue(context.Background(), lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"g"}, TTL: time.Minute, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	revoke := func(from string, body io.Reader) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/v1/revoke", body)
		r.RemoteAddr = from + ":40000"
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		a.ServeHTTP(w, r)
		return w
	}
	for i := range burst {
		junk, _ := token.New(token.Job)
		if w := revoke("192.0.2.1", strings.NewReader("token="+junk)); w.Code != 200 {
			t.Fatalf("revocation %d of %d from one address: %d %s, want 200", i+1, burst, w.Code, w.Body)
		}
	}
	body := &watchedBody{Reader: strings.NewReader("token=" + tok)}
	w := revoke("192.0.2.1", body)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("revocation past the burst: %d %s (Retry-After %q), want 429 with Retry-After", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
	if body.read {
		t.Fatal("the refused revocation's body was read")
	}
	if _, err := leases.Lookup(context.Background(), tok); err != nil {
		t.Fatalf("a refused revocation revoked the token: %v", err)
	}
	if w := revoke("198.51.100.9", strings.NewReader("token="+tok)); w.Code != 200 {
		t.Fatalf("another address's revocation: %d %s, want 200", w.Code, w.Body)
	}
	if _, err := leases.Lookup(context.Background(), tok); err == nil {
		t.Fatal("another address's revocation left the token live")
	}
}

// watchedBody says whether anything read it.
type watchedBody struct {
	io.Reader
	read bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.read = true
	return b.Reader.Read(p)
}
