package sso

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	good := Config{Issuer: "https://idp.example.com", ClientID: "mayfly", RedirectURL: "https://mayfly.example.com/ui/callback",
		Roles: map[string][]string{"admin": {"sec"}}}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"http issuer":          func(c *Config) { c.Issuer = "http://idp.example.com" },
		"no client":            func(c *Config) { c.ClientID = "" },
		"http redirect":        func(c *Config) { c.RedirectURL = "http://mayfly.example.com/ui/callback" },
		"redirect with query":  func(c *Config) { c.RedirectURL = "https://mayfly.example.com/cb?x=1" },
		"redirect on API path": func(c *Config) { c.RedirectURL = "https://mayfly.example.com/v1/cb" },
		"redirect on healthz":  func(c *Config) { c.RedirectURL = "https://mayfly.example.com/healthz" },
		"redirect on login":    func(c *Config) { c.RedirectURL = "https://mayfly.example.com/ui/login" },
		"redirect at root":     func(c *Config) { c.RedirectURL = "https://mayfly.example.com/" },
		"redirect subtree":     func(c *Config) { c.RedirectURL = "https://mayfly.example.com/ui/cb/" },
		"redirect wildcard":    func(c *Config) { c.RedirectURL = "https://mayfly.example.com/ui/%7Bx%7D" },
		"redirect unclean":     func(c *Config) { c.RedirectURL = "https://mayfly.example.com/ui/../cb" },
		"redirect with space":  func(c *Config) { c.RedirectURL = "https://mayfly.example.com/ui/a%20b" },
		"no roles":             func(c *Config) { c.Roles = nil },
		"unknown role":         func(c *Config) { c.Roles = map[string][]string{"root": {"x"}} },
		"empty value":          func(c *Config) { c.Roles = map[string][]string{"admin": {""}} },
	} {
		c := good
		mod(&c)
		if err := c.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	loop := good
	loop.Issuer, loop.RedirectURL = "http://127.0.0.1:5556/dex", "http://127.0.0.1:8443/ui/callback"
	if err := loop.Check(); err != nil {
		t.Errorf("loopback http: %v", err)
	}
}

func TestMap(t *testing.T) {
	rp, err := New(Config{Issuer: "https://idp.example.com", ClientID: "m", RedirectURL: "https://m.example.com/ui/callback",
		Roles: map[string][]string{"admin": {"sec-admins"}, "operator": {"platform"}, "auditor": {"audit", "platform"}}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		claims map[string]any
		want   string
	}{
		{map[string]any{"groups": []any{"audit"}}, "auditor"},
		{map[string]any{"groups": []any{"audit", "platform"}}, "operator"}, // the strongest
		{map[string]any{"groups": []any{"platform", "sec-admins"}}, "admin"},
		{map[string]any{"groups": "sec-admins"}, "admin"},
		{map[string]any{"groups": []any{"Sec-Admins"}}, ""}, // group names are exact
		{map[string]any{"groups": []any{1, true}}, ""},
		{map[string]any{"email": "sec-admins"}, ""}, // another claim
		{map[string]any{}, ""},
	} {
		if got := rp.Map(c.claims); got != c.want {
			t.Errorf("Map(%v) = %q, want %q", c.claims, got, c.want)
		}
	}
	byEmail, _ := New(Config{Issuer: "https://idp.example.com", ClientID: "m", RedirectURL: "https://m.example.com/ui/callback",
		Claim: "email", Roles: map[string][]string{"admin": {"alice@example.com"}, "operator": {"kim@ops.example.com"}}}, "", nil)
	for _, c := range []struct {
		claims map[string]any
		want   string
	}{
		{map[string]any{"email": "Alice@Example.com", "email_verified": true}, "admin"},
		{map[string]any{"email": "KIM@OPS.EXAMPLE.COM", "email_verified": true}, "operator"},
		// Case folds in ASCII only: Unicode folding would take the
		// Kelvin sign for "k" and the long s for "s", addresses a
		// provider may let someone else hold.
		{map[string]any{"email": "\u212aim@ops.example.com", "email_verified": true}, ""},
		{map[string]any{"email": "kim@op\u017f.example.com", "email_verified": true}, ""},
		{map[string]any{"email": "alice@example.com", "email_verified": "true"}, "admin"}, // Cognito's form
		// Unverified, whatever the user typed: nobody's role.
		{map[string]any{"email": "alice@example.com", "email_verified": false}, ""},
		{map[string]any{"email": "alice@example.com"}, ""},
		{map[string]any{"email": "alice@example.com", "email_verified": "yes"}, ""},
	} {
		if got := byEmail.Map(c.claims); got != c.want {
			t.Errorf("email claim Map(%v) = %q, want %q", c.claims, got, c.want)
		}
	}
	for _, c := range []struct {
		claims map[string]any
		want   string
	}{
		{map[string]any{"email": "alice@example.com", "email_verified": true, "preferred_username": "al"}, "alice@example.com"},
		{map[string]any{"email": "alice@example.com", "preferred_username": "alice"}, "u1"},
		{map[string]any{"email": "alice@example.com", "email_verified": false}, "u1"},
	} {
		if got := displayName(c.claims, "u1"); got != c.want {
			t.Errorf("displayName(%v) = %q, want %q", c.claims, got, c.want)
		}
	}
}

func TestASCIIEqualFold(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"Alice@EXAMPLE.com", "alice@example.com", true},
		{"alice@example.com", "alice@example.co", false},
		{"\u212a@x", "k@x", false}, // Kelvin sign
		{"\u212a@x", "K@x", false}, // Kelvin sign
		{"\u017f@x", "s@x", false}, // long s
		{"\u0130@x", "i@x", false}, // dotted capital I
		{"@[", "`{", false},        // the bytes beside A and Z
		{"", "", true},
	} {
		if got := asciiEqualFold(c.a, c.b); got != c.want {
			t.Errorf("asciiEqualFold(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestCallerHas(t *testing.T) {
	c := Caller{Role: "operator"}
	if !c.Has("auditor") || !c.Has("operator") || c.Has("admin") || c.Has("root") || (Caller{}).Has("auditor") {
		t.Error("Has")
	}
	ctx := WithCaller(context.Background(), c)
	if got, ok := CallerFrom(ctx); !ok || got.Role != "operator" {
		t.Error("CallerFrom")
	}
	if _, ok := CallerFrom(context.Background()); ok {
		t.Error("CallerFrom of an empty context")
	}
}

func TestParseCallback(t *testing.T) {
	for q, ok := range map[string]bool{
		"state=abc_DEF-123&code=xyz":                        true,
		"state=abc&error=access_denied":                     true,
		"state=abc":                                         false, // neither code nor error
		"code=xyz":                                          false,
		"state=a&state=b&code=x":                            false,
		"state=abc&code=x&code=y":                           false,
		"state=ab%3Cc&code=x":                               false,
		"state=" + strings.Repeat("a", 257) + "&code=x":     false,
		"state=abc&code=" + strings.Repeat("c", 4097):       false,
		"state=abc&code=x&iss=https%3A%2F%2Fidp":            true,
		"state=abc&code=x&iss=a&iss=b":                      false,
		"state=abc&code=x&iss=" + strings.Repeat("i", 2049): false,
	} {
		v, _ := url.ParseQuery(q)
		_, err := ParseCallback(v)
		if (err == nil) != ok {
			t.Errorf("ParseCallback(%.40s): err %v, want ok=%v", q, err, ok)
		}
	}
	v, _ := url.ParseQuery("state=abc&error=%3Cscript%3E%22")
	c, err := ParseCallback(v)
	if err != nil || strings.ContainsAny(c.Error, `<>"`) {
		t.Errorf("error not made safe: %q %v", c.Error, err)
	}
}

func FuzzParseCallback(f *testing.F) {
	f.Add("state=abc&code=xyz")
	f.Add("state=abc&error=access_denied&error_description=x")
	f.Add("state=%00&code=%ff")
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		c, err := ParseCallback(v)
		if err != nil {
			return
		}
		if c.State == "" || len(c.State) > maxState || len(c.Code) > maxCode || (c.Code == "" && c.Error == "") {
			t.Fatalf("accepted %+v", c)
		}
		if strings.ContainsAny(c.Error, "<>\"\\\x00") || len(c.Error) > 64 {
			t.Fatalf("unsafe error %q", c.Error)
		}
	})
}

// silentProvider is an issuer address that accepts connections and never
// answers (a blackholed provider, a hung proxy); accepted counts them.
func silentProvider(t *testing.T) (issuer string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + ln.Addr().String(), accepted
}

func testRP(t *testing.T, issuer string, timeout time.Duration) *RP {
	t.Helper()
	rp, err := New(Config{Issuer: issuer, ClientID: "m", RedirectURL: "http://127.0.0.1:1/ui/callback",
		Roles: map[string][]string{"admin": {"a"}}}, "", &http.Client{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return rp
}

// TestDiscoverSilentProvider: a provider that does not answer costs each
// sign-in at most one timeout (and no more than its own context allows),
// however many sign-ins come at once, and for a few seconds after a
// failure none waits at all. Discovery used to hold rp.mu across the
// network call, so the n-th concurrent sign-in waited n timeouts.
func TestDiscoverSilentProvider(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, rp *RP, accepted *atomic.Int32)
	}{
		{"concurrent sign-ins share one discovery", func(t *testing.T, rp *RP, accepted *atomic.Int32) {
			const n = 4
			var wg sync.WaitGroup
			took := make([]time.Duration, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					start := time.Now()
					_, errs[i] = rp.AuthURL(context.Background(), "state", "nonce", "verifier")
					took[i] = time.Since(start)
				})
			}
			wg.Wait()
			for i := range n {
				if !errors.Is(errs[i], ErrIdPDown) {
					t.Errorf("sign-in %d: %v, want ErrIdPDown", i, errs[i])
				}
				if took[i] > 1500*time.Millisecond {
					t.Errorf("sign-in %d waited %v with a 500ms client timeout", i, took[i])
				}
			}
			if got := accepted.Load(); got != 1 {
				t.Errorf("%d discoveries, want 1 shared", got)
			}
		}},
		{"a caller stops waiting when its context ends", func(t *testing.T, rp *RP, _ *atomic.Int32) {
			go rp.discover(context.Background()) // in flight for the client timeout
			time.Sleep(50 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := rp.DeviceSupported(ctx)
			if took := time.Since(start); !errors.Is(err, ErrIdPDown) || took > 400*time.Millisecond {
				t.Errorf("%v after %v, want ErrIdPDown once its 100ms context ends", err, took)
			}
		}},
		{"a failure answers at once for a while", func(t *testing.T, rp *RP, accepted *atomic.Int32) {
			if _, err := rp.discover(context.Background()); !errors.Is(err, ErrIdPDown) {
				t.Fatalf("first discovery: %v", err)
			}
			start := time.Now()
			_, err := rp.DeviceAuth(context.Background())
			if took := time.Since(start); !errors.Is(err, ErrIdPDown) || took > 100*time.Millisecond {
				t.Errorf("%v after %v, want the remembered ErrIdPDown at once", err, took)
			}
			if got := accepted.Load(); got != 1 {
				t.Errorf("%d discoveries, want 1", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issuer, accepted := silentProvider(t)
			rp := testRP(t, issuer, 500*time.Millisecond)
			tc.run(t, rp, accepted)
		})
	}
}

// TestDiscoverRetriesAndCaches: a provider that failed is asked again once
// its failure is forgotten, and a provider found is kept (fetched once).
func TestDiscoverRetriesAndCaches(t *testing.T) {
	var up atomic.Bool
	var fetches atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if !up.Load() || r.URL.Path != "/.well-known/openid-configuration" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/auth","token_endpoint":"%[1]s/token","jwks_uri":"%[1]s/jwks"}`, srv.URL)
	}))
	defer srv.Close()
	rp := testRP(t, srv.URL, 2*time.Second)
	if _, err := rp.discover(context.Background()); !errors.Is(err, ErrIdPDown) {
		t.Fatalf("provider down: %v", err)
	}
	up.Store(true)
	if _, err := rp.discover(context.Background()); !errors.Is(err, ErrIdPDown) || fetches.Load() != 1 {
		t.Fatalf("within failMemory: %v after %d fetches, want the remembered failure", err, fetches.Load())
	}
	rp.mu.Lock()
	rp.failedAt = rp.failedAt.Add(-failMemory) // as if failMemory had passed
	rp.mu.Unlock()
	for range 3 {
		if _, err := rp.AuthURL(context.Background(), "s", "n", "v"); err != nil {
			t.Fatalf("provider up: %v", err)
		}
	}
	if got := fetches.Load(); got != 2 {
		t.Errorf("%d fetches, want 2 (one failed, one kept)", got)
	}
}

// echoingProvider is a provider whose discovery is sound and whose token
// and device endpoints answer with a header block that carries the
// request's Authorization and form body on a line without a colon (a
// broken proxy's error page in front of the provider).
func echoingProvider(t *testing.T) string {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"issuer":%q,"authorization_endpoint":"%[1]s/auth","token_endpoint":"%[1]s/token","device_authorization_endpoint":"%[1]s/device","jwks_uri":"%[1]s/jwks"}`, srv.URL)
			return
		}
		r.ParseForm()
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nyou sent " + r.Header.Get("Authorization") + " " + r.PostForm.Encode() + "\r\n\r\n"))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTokenEndpointEchoKeepsClientSecretOutOfErrors: the errors of a
// provider that cannot be understood (logged by the sign-in paths) say
// what went wrong, never Go's text of it, which quotes the malformed line
// and with it the client secret the request carried.
func TestTokenEndpointEchoKeepsClientSecretOutOfErrors(t *testing.T) {
	const secret = "PLANTEDclientSECRET0123456789abcdef" // mayfly:allow
	basic := base64.StdEncoding.EncodeToString([]byte("m:" + secret))
	rp, err := New(Config{Issuer: echoingProvider(t), ClientID: "m", RedirectURL: "http://127.0.0.1:1/ui/callback",
		Roles: map[string][]string{"admin": {"a"}}}, secret, &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"code exchange", func() error {
			_, err := rp.Exchange(context.Background(), "code", "verifier-0123456789012345678901234567890123", "nonce")
			return err
		}},
		{"device start", func() error { _, err := rp.DeviceAuth(context.Background()); return err }},
		{"device poll", func() error { _, err := rp.DevicePoll(context.Background(), "device-code"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, ErrIdPDown) {
				t.Fatalf("%v, want ErrIdPDown", err)
			}
			if s := err.Error(); strings.Contains(s, secret) || strings.Contains(s, basic) || strings.Contains(s, "you sent") {
				t.Errorf("the error quotes the provider's malformed answer: %s", s)
			}
		})
	}
}
