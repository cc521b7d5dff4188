package sso

import (
	"context"
	"net/url"
	"strings"
	"testing"
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
		Claim: "email", Roles: map[string][]string{"admin": {"alice@example.com"}}}, "", nil)
	for _, c := range []struct {
		claims map[string]any
		want   string
	}{
		{map[string]any{"email": "Alice@Example.com", "email_verified": true}, "admin"},
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
		"state=abc_DEF-123&code=xyz":                    true,
		"state=abc&error=access_denied":                 true,
		"state=abc":                                     false, // neither code nor error
		"code=xyz":                                      false,
		"state=a&state=b&code=x":                        false,
		"state=abc&code=x&code=y":                       false,
		"state=ab%3Cc&code=x":                           false,
		"state=" + strings.Repeat("a", 257) + "&code=x": false,
		"state=abc&code=" + strings.Repeat("c", 4097):   false,
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
