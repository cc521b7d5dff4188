package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http/httptest"
	"net/url"
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
