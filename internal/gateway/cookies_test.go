package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// mayfly's own cookies never reach an upstream; the upstream's own do,
// unchanged when none of mayfly's was sent.
func TestDropOwnCookies(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no Cookie header
	}{
		{"none", nil, nil},
		{"others untouched", []string{"a=1;b=2", "c=3"}, []string{"a=1;b=2", "c=3"}},
		{"session", []string{"mayfly_session=mfys_x"}, nil},
		{"host session", []string{"a=1; __Host-mayfly_session=mfys_x; b=2"}, []string{"a=1; b=2"}},
		{"login", []string{"mayfly_login=v; __Host-mayfly_login=v"}, nil},
		{"login per sign-in", []string{"mayfly_login_Ab3-_x9Z=v; __Host-mayfly_login_q1w2e3r4=v; x=1"}, []string{"x=1"}},
		{"prefix and case", []string{"__host-MAYFLY_SESSION=v; __Secure-mayfly_session=v; Mayfly_Login=v; x=1"}, []string{"x=1"}},
		{"spaces and tabs", []string{" \tmayfly_session =v;x=1"}, []string{"x=1"}},
		{"no value", []string{"mayfly_session; x"}, []string{"x"}},
		{"several lines (HTTP/2)", []string{"a=1", "mayfly_session=v", "b=2"}, []string{"a=1; b=2"}},
		{"similar names kept", []string{"mayfly_sessions=1; my_mayfly_session=2"}, []string{"mayfly_sessions=1; my_mayfly_session=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.in != nil {
				h["Cookie"] = slices.Clone(tc.in)
			}
			dropOwnCookies(h)
			if got := h["Cookie"]; !slices.Equal(got, tc.want) {
				t.Fatalf("Cookie %q, want %q", got, tc.want)
			}
		})
	}
}

// An upstream sets its own cookies, never one of mayfly's.
func TestDropOwnSetCookies(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no Set-Cookie header
	}{
		{"none", nil, nil},
		{"others kept", []string{"a=1; Path=/", "b=2"}, []string{"a=1; Path=/", "b=2"}},
		{"session", []string{"mayfly_session=mfys_x; Path=/; HttpOnly"}, nil},
		{"host session", []string{"__Host-mayfly_session=v; Secure; Path=/", "a=1"}, []string{"a=1"}},
		{"login", []string{"a=1", "__Host-mayfly_login=v; Secure; Path=/"}, []string{"a=1"}},
		{"login per sign-in", []string{"__Host-mayfly_login_Ab3-_x9Z=v; Secure; Path=/", "MAYFLY_LOGIN_q1w2e3r4=v", "a=1"}, []string{"a=1"}},
		{"case and prefix", []string{"__HOST-Mayfly_Session=v", "__secure-mayfly_login=v", "MAYFLY_SESSION=v"}, nil},
		{"narrower path", []string{"mayfly_session=v; Path=/ui"}, nil},
		{"spaces", []string{" \tmayfly_session = v"}, nil},
		{"nameless", []string{"=mayfly_session=v", "= __Host-mayfly_session=v; Secure; Path=/"}, nil},
		{"no value", []string{"mayfly_session"}, nil},
		{"name in an attribute only", []string{"a=mayfly_session; Path=/mayfly_session"}, []string{"a=mayfly_session; Path=/mayfly_session"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.in != nil {
				h["Set-Cookie"] = slices.Clone(tc.in)
			}
			dropOwnSetCookies(h)
			if got := h["Set-Cookie"]; !slices.Equal(got, tc.want) {
				t.Fatalf("Set-Cookie %q, want %q", got, tc.want)
			}
		})
	}
}

// An upstream's cookie comes on mayfly's origin, and with a Domain
// attribute naming a parent of mayfly's host ("example.com" for
// mayfly.example.com) a browser would keep it for every site under that
// domain: an upstream would set cookies on other origins (a session fixed
// on a sibling application). Its cookies are kept host-only: every Domain
// attribute is removed, whatever its case and spacing; the rest is kept.
func TestUpstreamCookiesHostOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"domain", []string{"sid=1; Domain=example.com; Path=/; Secure"}, []string{"sid=1; Path=/; Secure"}},
		{"case and spaces", []string{"sid=1;  DOMAIN = .example.com ;HttpOnly", "b=2;\tdomain=example.com"}, []string{"sid=1;HttpOnly", "b=2"}},
		{"several", []string{"sid=1; Domain=a.example.com; Domain=example.com"}, []string{"sid=1"}},
		{"empty value", []string{"sid=1; Domain="}, []string{"sid=1"}},
		{"name and value mentioning domain kept", []string{"domain=example.com; Path=/domain"}, []string{"domain=example.com; Path=/domain"}},
		{"no attributes", []string{"a=1"}, []string{"a=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Set-Cookie": slices.Clone(tc.in)}
			dropOwnSetCookies(h)
			if got := h["Set-Cookie"]; !slices.Equal(got, tc.want) {
				t.Fatalf("Set-Cookie %q, want %q", got, tc.want)
			}
		})
	}

	// Through the gateway.
	hr := newHarness(t)
	tok := hr.issue(lease.Request{Grants: []string{"read"}})
	addr := hostileGateway(t, hr, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sid=fixed; Domain=example.com; Secure")
		io.WriteString(w, "ok")
	})
	resp, _, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/x", tok)
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"sid=fixed; Secure"}) {
		t.Fatalf("the gateway's answer sets %q, want host-only sid", got)
	}
}

// Every upstream's answers come on the one origin of mayfly, each under its
// route /gw/{upstream}/. An upstream's cookie for its path "/" (a session)
// would be sent by a browser or a client's cookie jar (requests.Session,
// curl -b) with the requests to every other upstream too: one upstream's
// credential handed to another. A cookie's Path is mapped into the
// upstream's route (the upstream URL's own path taken off first); a
// cookie without one already falls under the path it was set on.
func TestUpstreamCookiesScopedToRoute(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"root", "sid=1; Path=/; HttpOnly", "sid=1; Path=/gw/api/; HttpOnly"},
		{"upstream's own path", "sid=1; path=/base/repos", "sid=1; path=/gw/api/repos"},
		{"upstream's base", "sid=1; Path=/base", "sid=1; Path=/gw/api"},
		{"outside the base", "sid=1; Path=/other", "sid=1; Path=/gw/api/"},
		{"spaces, several", "sid=1;  PATH = /base/a ; Path=/", "sid=1; PATH=/gw/api/a; Path=/gw/api/"},
		{"none", "sid=1; Secure", "sid=1; Secure"},
		{"not a path (the default path applies)", "sid=1; Path=x", "sid=1; Path=x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Set-Cookie": {tc.in}}
			scopeCookies(h, "/gw/api", "/base", false)
			if got := h.Get("Set-Cookie"); got != tc.want {
				t.Fatalf("Set-Cookie %q, want %q", got, tc.want)
			}
		})
	}

	// Through the gateway (the harness's upstream url ends in /base).
	hr := newHarness(t)
	tok := hr.issue(lease.Request{Grants: []string{"read"}})
	addr := hostileGateway(t, hr, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sid=s3ss10n; Path=/")
		io.WriteString(w, "ok")
	})
	resp, _, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/x", tok)
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"sid=s3ss10n; Path=/gw/api/"}) {
		t.Fatalf("the gateway's answer sets %q, want the cookie scoped to /gw/api/", got)
	}

	// A cookie with no Path falls under the path it was set on, up to its
	// last "/": for the route itself ("/gw/api", the upstream's root),
	// that is "/gw", every upstream's. It gets the route as its Path.
	hr.up.mu.Lock()
	hr.up.hostile = nil
	hr.up.mu.Unlock()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "sid=s3ss10n; HttpOnly")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(rootPolicy, "{{UP}}", up.URL))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.pol.p.Store(p)
	for target, want := range map[string]string{
		"/gw/api":   "sid=s3ss10n; HttpOnly; Path=/gw/api",
		"/gw/api/":  "sid=s3ss10n; HttpOnly",
		"/gw/api/x": "sid=s3ss10n; HttpOnly",
	} {
		resp, _ := hr.raw("GET", target, bearer(tok))
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{want}) {
			t.Errorf("%s: the gateway's answer sets %q, want %q", target, got, want)
		}
	}
}

const rootPolicy = `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api:
    url: {{UP}}
    credential: {secret: api-token}
grants:
  read:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// On the route's root ("/gw/api") a cookie's path is the last Path
// attribute's (RFC 6265 section 5.3), and one that is not a path (none, a
// value without "/", no "=") means the default path, "/gw": every
// upstream's. So the route is set last whenever the last Path attribute is
// not a path, also after one that was mapped.
func TestUpstreamCookiesAtRouteRootLastPath(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"none", "sid=1; HttpOnly", "sid=1; HttpOnly; Path=/gw/api"},
		{"not a path", "sid=1; Path=x", "sid=1; Path=x; Path=/gw/api"},
		{"a path", "sid=1; Path=/", "sid=1; Path=/gw/api/"},
		{"a path, then not", "sid=1; Path=/; Path=x", "sid=1; Path=/gw/api/; Path=x; Path=/gw/api"},
		{"a path, then empty", "sid=1; Path=/; Path=", "sid=1; Path=/gw/api/; Path=; Path=/gw/api"},
		{"a path, then a bare name", "sid=1; Path=/; path", "sid=1; Path=/gw/api/; path; Path=/gw/api"},
		{"not, then a path", "sid=1; Path=x; Path=/base/a", "sid=1; Path=x; Path=/gw/api/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Set-Cookie": {tc.in}}
			scopeCookies(h, "/gw/api", "/base", true)
			if got := h.Get("Set-Cookie"); got != tc.want {
				t.Fatalf("Set-Cookie %q, want %q", got, tc.want)
			}
		})
	}
}

// An informational answer (103 Early Hints) is relayed to the client
// before the final one, and a client's cookie jar takes its Set-Cookie as
// it would the final answer's (curl -c stores it; Python's http.client
// even takes a 103 for the final answer). Its cookies and origin-wide
// headers get what the final answer's get: mayfly's own cookie names
// dropped, the others made host-only and scoped to the route, the
// origin's policies and a front proxy's directives removed, and its Link
// targets mapped onto the route (urls.go).
func TestEarlyHintsHeadersFitTheOrigin(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Add("Set-Cookie", "sid=s3ss10n; Path=/; Domain=example.com")
		hd.Add("Set-Cookie", "mayfly_session=fixed; Path=/")
		hd.Set("Clear-Site-Data", `"*"`)
		hd.Set("Alt-Svc", `h3=":443"; ma=86400`)
		hd.Set("X-Accel-Redirect", "/internal/keys")
		hd.Add("Link", "</base/x.css>; rel=preload")
		hd.Add("Link", "</x.css>; rel=preload") // the root of mayfly's origin: not the upstream's
		w.WriteHeader(http.StatusEarlyHints)
		clear(hd)
		io.WriteString(w, "ok")
	})
	_, _, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/x", tok)
	early, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
	if err != nil || early.StatusCode != http.StatusEarlyHints {
		t.Fatalf("first answer: %v %v in %q", early, err, all)
	}
	if got := early.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"sid=s3ss10n; Path=/gw/api/"}) {
		t.Errorf("the 103 sets %q, want only the upstream's cookie, host-only and scoped to /gw/api/", got)
	}
	for _, k := range []string{"Clear-Site-Data", "Alt-Svc", "X-Accel-Redirect"} {
		if v := early.Header.Get(k); v != "" {
			t.Errorf("the 103 carries %s: %q", k, v)
		}
	}
	if got, want := early.Header.Values("Link"), []string{"<http://" + addr + "/gw/api/x.css>; rel=preload"}; !slices.Equal(got, want) {
		t.Errorf("the 103's Link %q, want the upstream's mapped onto the route, %q", got, want)
	}
}
