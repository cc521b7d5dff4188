package devissuer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func pkce(v string) string {
	s := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// The authorization endpoint gives a code only for PKCE S256 and a
// loopback redirect; the token endpoint takes it once, with its verifier,
// from its client and redirect, and answers an ID token with the nonce and
// the user's claims.
func TestAuthorizationCode(t *testing.T) {
	iss, srv := start(t, "ES256")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	const verifier = "0123456789012345678901234567890123456789abc"
	authorize := func(q url.Values) (int, *url.URL) {
		t.Helper()
		resp, err := noFollow.Get(srv.URL + AuthorizePath + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Location()
		return resp.StatusCode, loc
	}
	good := url.Values{"response_type": {"code"}, "client_id": {"mayfly"}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "state": {"s1"},
		"nonce": {"n1"}, "code_challenge": {pkce(verifier)}, "code_challenge_method": {"S256"}}
	with := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = vv
		}
		q.Set(k, v)
		return q
	}
	if st, _ := authorize(with("redirect_uri", "https://evil.example/cb")); st != 400 {
		t.Fatalf("a non-loopback redirect: %d", st)
	}
	if _, loc := authorize(with("code_challenge_method", "plain")); loc.Query().Get("error") != "invalid_request" {
		t.Fatalf("plain PKCE: %v", loc)
	}
	iss.SetUser(User{"sub": "u1", "email": "a@example.com", "groups": []any{"g1"}})
	token := func(code, v, client, redirect string) (int, map[string]any) {
		t.Helper()
		resp, err := http.PostForm(srv.URL+OAuthTokenPath, url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"code_verifier": {v}, "client_id": {client}, "redirect_uri": {redirect}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	st, loc := authorize(good)
	code := loc.Query().Get("code")
	if st != 303 || code == "" || loc.Query().Get("state") != "s1" {
		t.Fatalf("authorize: %d %v", st, loc)
	}
	if st, out := token(code, "x"+verifier[1:], "mayfly", "http://127.0.0.1:9/cb"); st != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("a wrong verifier: %d %v", st, out)
	}
	// The failed try used the code up.
	if st, _ := token(code, verifier, "mayfly", "http://127.0.0.1:9/cb"); st != 400 {
		t.Fatalf("a code used twice: %d", st)
	}
	_, loc = authorize(good)
	if st, _ := token(loc.Query().Get("code"), verifier, "other", "http://127.0.0.1:9/cb"); st != 400 {
		t.Fatalf("another client: %d", st)
	}
	_, loc = authorize(good)
	st, out := token(loc.Query().Get("code"), verifier, "mayfly", "http://127.0.0.1:9/cb")
	idt, _ := out["id_token"].(string)
	if st != 200 || idt == "" {
		t.Fatalf("token: %d %v", st, out)
	}
	parts := strings.Split(idt, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	if claims["nonce"] != "n1" || claims["aud"] != "mayfly" || claims["email"] != "a@example.com" || claims["iss"] != iss.URL() {
		t.Fatalf("claims %v", claims)
	}
}

// The device flow: pending until the user code is approved, then an ID
// token for the current user, once.
func TestDeviceFlow(t *testing.T) {
	_, srv := start(t, "RS256")
	resp, err := http.PostForm(srv.URL+DevicePath, url.Values{"client_id": {"mayfly"}})
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		DeviceCode string `json:"device_code"`
		UserCode   string `json:"user_code"`
		Complete   string `json:"verification_uri_complete"`
	}
	json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	poll := func() (int, string) {
		resp, err := http.PostForm(srv.URL+OAuthTokenPath, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
			"device_code": {d.DeviceCode}, "client_id": {"mayfly"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := poll(); st != 400 || !strings.Contains(body, "authorization_pending") {
		t.Fatalf("before approval: %d %s", st, body)
	}
	if resp, err := http.Get(d.Complete); err != nil || resp.StatusCode != 200 {
		t.Fatalf("approve: %v %v", err, resp)
	}
	if st, body := poll(); st != 200 || !strings.Contains(body, "id_token") {
		t.Fatalf("after approval: %d %s", st, body)
	}
	if st, _ := poll(); st != 400 {
		t.Fatalf("a device code used twice: %d", st)
	}
}

// With the form on, GET shows the form and POST signs in whoever it names.
func TestLoginForm(t *testing.T) {
	iss, err := New(Options{URL: "http://127.0.0.1:1", LoginForm: true})
	if err != nil {
		t.Fatal(err)
	}
	h := iss.Handler()
	q := url.Values{"response_type": {"code"}, "client_id": {"m"}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "state": {"s"},
		"code_challenge": {pkce("v")}, "code_challenge_method": {"S256"}}
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1"+AuthorizePath+"?"+q.Encode(), nil)
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `name="dev_groups"`) {
		t.Fatalf("form: %d %s", rec.Code, rec.Body.String())
	}
	q.Set("dev_email", "b@example.com")
	q.Set("dev_groups", "g1, g2")
	rec = httptest.NewRecorder()
	req, _ = http.NewRequest("POST", "http://127.0.0.1:1"+AuthorizePath, strings.NewReader(q.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	h.ServeHTTP(rec, req)
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if rec.Code != 303 || loc.Query().Get("code") == "" {
		t.Fatalf("form post: %d %v", rec.Code, loc)
	}
	c := iss.human.codes[loc.Query().Get("code")]
	if c.user["email"] != "b@example.com" || len(c.user["groups"].([]any)) != 2 {
		t.Fatalf("user %v", c.user)
	}
}
