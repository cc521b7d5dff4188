package gateway

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// An upstream's answer names URLs a client follows (Location of a
// redirect or a 201, Content-Location, Refresh). Passed on unchanged, one
// on the upstream's own origin, or a reference a client resolves against
// the gateway's root, takes the client out of the gateway: to the
// upstream directly (with whatever headers it sends along, the mayfly
// token among them, and the upstream's address learnt), or to one of
// mayfly's own endpoints. Each must come back as the gateway's URL of that
// route, or not at all.
func TestUpstreamURLsMappedToRoute(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	up := h.up.srv.URL                          // http://127.0.0.1:port
	upHost := strings.TrimPrefix(up, "http://") // 127.0.0.1:port
	gw := h.srv.URL + "/gw/api"                 // the gateway's own URL of the route
	_, upPort, _ := strings.Cut(upHost, ":")
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for _, v := range q["v"] {
			w.Header().Add(q.Get("h"), v)
		}
		status, _ := strconv.Atoi(q.Get("status"))
		w.WriteHeader(status)
	})
	h.up.mu.Unlock()
	const drop = "\x00dropped"
	for _, tc := range []struct {
		name   string
		header string
		status int
		v      string
		want   string // drop: no such header in the answer
	}{
		{"redirect on the upstream's origin", "Location", 302, up + "/base/repos/acme/app/x?y=1&z=%2F#frag", gw + "/repos/acme/app/x?y=1&z=%2F#frag"},
		{"201 Created", "Location", 201, up + "/base/repos/acme/app/issues/7", gw + "/repos/acme/app/issues/7"},
		{"scheme and host in upper case", "Location", 307, "HTTP://" + strings.ToUpper(upHost) + "/base/a", gw + "/a"},
		{"user info", "Location", 302, "http://someone@" + upHost + "/base/a", gw + "/a"},
		{"the upstream's base itself", "Location", 302, up + "/base", gw + "/"},
		{"escaped path kept", "Location", 302, up + "/base/a%20b/c%3Fd", gw + "/a%20b/c%3Fd"},
		{"path-absolute under the base", "Location", 302, "/base/repos/acme/app/y", gw + "/repos/acme/app/y"},
		{"path-absolute outside the base (the gateway's root)", "Location", 302, "/v1/admin/tokens", drop},
		{"relative path", "Location", 302, "next?p=2", gw + "/repos/acme/app/hostile/next?p=2"},
		{"relative path climbing out of the base", "Location", 302, "../../../../../v1/policy", drop},
		{"network-path reference", "Location", 302, "//" + upHost + "/base/z", gw + "/z"},
		{"backslashes a browser reads as slashes", "Location", 302, `/\` + upHost + `/base/z`, gw + "/z"},
		{"whitespace a browser strips", "Location", 302, " \t//" + upHost + "/base/z", gw + "/z"},
		{"encoded dot segments a browser resolves", "Location", 302, up + "/base/%2e%2e/%2E%2e/v1/admin", drop},
		{"backslash in the query kept", "Location", 302, up + `/base/a?p=c:\x`, gw + `/a?p=c:\x`},
		{"same host, another port", "Location", 302, "http://127.0.0.1:1/x", drop},
		{"same host, another scheme", "Location", 302, "https://" + upHost + "/base/x", drop},
		{"scheme without slashes", "Location", 302, "http:" + upHost + "/base/x", drop},
		{"unparseable", "Location", 302, "http://[::1/x", drop},
		// The upstream's host in the other spellings browsers (and curl)
		// read as the same address: not another origin's.
		{"its IPv4 as one number", "Location", 302, "http://2130706433:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 in hex and short", "Location", 302, "http://0x7f.1:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 in octal", "Location", 302, "http://0177.0.0.01:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 short", "Location", 302, "http://127.1:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 with trailing dots", "Location", 302, "http://127.0.0.1..:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 as IPv4-mapped IPv6", "Location", 302, "http://[::ffff:7f00:1]:" + upPort + "/base/a", gw + "/a"},
		{"its IPv4 as one number, outside the base", "Location", 302, "http://2130706433:" + upPort + "/v1/admin", drop},
		{"its IPv4 in hex, another port", "Location", 302, "http://0x7f000001:1/x", drop},
		// A number-like host that is no IPv4 (browsers refuse it; other
		// clients may read it as one): deny.
		{"an IPv4 part too large", "Location", 302, "http://127.0.0.256:" + upPort + "/base/a", drop},
		{"an IPv4 of five parts", "Location", 302, "http://1.127.0.0.1:" + upPort + "/base/a", drop},
		{"an IPv4 part not a number", "Location", 302, "http://0x7g.0.0.1:" + upPort + "/base/a", drop},
		// Without IDNA mapping the gateway cannot tell which host a
		// non-ASCII name is (full-width digits map to 127.0.0.1): deny.
		{"its IPv4 in full-width digits", "Location", 302, "http://\uff11\uff12\uff17.0.0.1:" + upPort + "/base/a", drop},
		{"its IPv4 in percent-encoded full-width digits", "Location", 302, "http://%EF%BC%91%EF%BC%92%EF%BC%97.0.0.1:" + upPort + "/base/a", drop},
		{"its IPv4 percent-encoded", "Location", 302, "http://%31%32%37.0.0.1:" + upPort + "/base/a", drop},
		{"a non-ASCII name", "Location", 302, "https://b\u00fccher.example/x", drop},
		{"a punycode name kept", "Location", 302, "https://xn--bcher-kva.example/x", "https://xn--bcher-kva.example/x"},
		{"third origin kept", "Location", 302, "https://downloads.example/f?sig=abc", "https://downloads.example/f?sig=abc"},
		{"not a network URL kept", "Location", 302, "mailto:ops@example.com", "mailto:ops@example.com"},
		{"Content-Location", "Content-Location", 200, up + "/base/repos/acme/app/x.json", gw + "/repos/acme/app/x.json"},
		{"Content-Location path-absolute outside", "Content-Location", 200, "/other", drop},
		{"Refresh on the upstream", "Refresh", 200, "0; url=" + up + "/base/a", "0; url=" + gw + "/a"},
		{"Refresh quoted, odd case", "Refresh", 200, "3;URL='//" + upHost + "/base/q'", "3; url=" + gw + "/q"},
		{"Refresh without url=", "Refresh", 200, "1, /base/b", "1; url=" + gw + "/b"},
		{"Refresh outside the base", "Refresh", 200, "0;url=/ui/", drop},
		{"Refresh time only", "Refresh", 200, "5", "5"},
		{"Refresh to a third origin", "Refresh", 200, "0; url=https://example.org/", "0; url=https://example.org/"},
		{"Refresh unreadable", "Refresh", 200, "soon; url=" + up + "/base/a", drop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/gw/api/repos/acme/app/hostile/loc?" + url.Values{"h": {tc.header}, "v": {tc.v}, "status": {strconv.Itoa(tc.status)}}.Encode()
			resp, _, _ := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			got, ok := resp.Header[http.CanonicalHeaderKey(tc.header)]
			switch {
			case tc.want == drop && ok:
				t.Fatalf("%s %q came back as %q: want it dropped", tc.header, tc.v, got)
			case tc.want != drop && (len(got) != 1 || got[0] != tc.want):
				t.Fatalf("%s %q came back as %q, want %q", tc.header, tc.v, got, tc.want)
			}
		})
	}
}

// A Link header names URLs a client follows too: GitHub's and GitLab's APIs
// page with `Link: <https://api.github.com/…?page=2>; rel="next"`, which
// octokit, gh and most API clients follow as they are. Passed on
// unchanged, the second page was asked of the upstream directly, with the
// job's mayfly token as its Authorization. Each link's target is mapped
// as Location is; a link the route cannot reach is dropped, the others
// kept with their parameters.
func TestUpstreamLinksMappedToRoute(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	up := h.up.srv.URL
	gw := h.srv.URL + "/gw/api"
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, v := range r.URL.Query()["v"] {
			w.Header().Add("Link", v)
		}
	})
	h.up.mu.Unlock()
	for _, tc := range []struct {
		name string
		v    []string
		want []string // nil: no Link at all
	}{
		{"GitHub pagination",
			[]string{`<` + up + `/base/repositories/1/issues?page=2>; rel="next", <` + up + `/base/repositories/1/issues?page=5>; rel="last"`},
			[]string{`<` + gw + `/repositories/1/issues?page=2>; rel="next", <` + gw + `/repositories/1/issues?page=5>; rel="last"`}},
		{"path-absolute", []string{`</base/a?page=2>;rel=next`}, []string{`<` + gw + `/a?page=2>;rel=next`}},
		{"outside the route dropped, the rest kept",
			[]string{`</v1/admin/tokens>; rel="next", <https://docs.example/api>; rel="help"`},
			[]string{`<https://docs.example/api>; rel="help"`}},
		{"commas and brackets in quoted parameters", []string{`<` + up + `/base/x>; title="a, <b>"; rel="next"`},
			[]string{`<` + gw + `/x>; title="a, <b>"; rel="next"`}},
		{"several lines", []string{`<` + up + `/base/p1>; rel="prev"`, `</other>; rel="next"`},
			[]string{`<` + gw + `/p1>; rel="prev"`}},
		{"all dropped", []string{`<http://127.0.0.1:1/x>; rel="next"`}, nil},
		{"malformed dropped", []string{`https://` + strings.TrimPrefix(up, "http://") + `/base/x; rel="next"`}, nil},
		{"third origin kept", []string{`<https://cdn.example/style.css>; rel=preload; as=style`}, []string{`<https://cdn.example/style.css>; rel=preload; as=style`}},
		// RFC 8288's anchor names the link's context, a URL too: the
		// upstream's is mapped, one the route cannot reach takes its link
		// with it (without it, the link would say something else).
		{"anchor on the upstream mapped",
			[]string{`<` + up + `/base/x>; rel="next"; anchor="` + up + `/base/y"`},
			[]string{`<` + gw + `/x>; rel="next"; anchor="` + gw + `/y"`}},
		{"anchor path-absolute, odd case and spaces, unquoted",
			[]string{`<https://docs.example/a>; rel=help; ANCHOR = /base/y`},
			[]string{`<https://docs.example/a>; rel=help; ANCHOR="` + gw + `/y"`}},
		{"anchor outside the base drops its link",
			[]string{`<https://docs.example/a>; rel=help; anchor="/v1/admin/tokens", </base/b>; rel=next`},
			[]string{`<` + gw + `/b>; rel=next`}},
		{"anchor on the upstream's host, another port",
			[]string{`</base/a>; anchor="http://127.0.0.1:1/x"`}, nil},
		{"anchor as one number", []string{`</base/a>; anchor="http://2130706433:1/x"`}, nil},
		{"anchor of a third origin kept",
			[]string{`</base/a>; rel=describedby; anchor="https://docs.example/a;b"`},
			[]string{`<` + gw + `/a>; rel=describedby; anchor="https://docs.example/a;b"`}},
		{"anchor unparseable", []string{`</base/a>; anchor="http://[::1/x"`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/gw/api/repos/acme/app/hostile/links?" + url.Values{"v": tc.v}.Encode()
			resp, _, _ := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Values("Link"); !slices.Equal(got, tc.want) {
				t.Fatalf("Link %q came back as %q, want %q", tc.v, got, tc.want)
			}
		})
	}
}

// A URL naming the gateway's own origin absolutely takes the client out of
// the route as a relative one climbing out of it would: to mayfly's API or
// console, or another upstream's route, with its mayfly token (the same
// host as its request: Go and curl keep Authorization), so an upstream
// could steer a job's calls to what the job may do elsewhere. Such a URL
// outside the route is dropped; one inside it, in any spelling a browser
// reads the same, is kept.
func TestUpstreamURLsOnTheGatewaysOrigin(t *testing.T) {
	const public = "https://mayfly.test" // the gateway's origin, not the upstream's host
	h := newHarnessWith(t, func(c *Config) { c.PublicURL = func(*http.Request) string { return public } })
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set(q.Get("h"), q.Get("v"))
		w.WriteHeader(http.StatusFound)
	})
	h.up.mu.Unlock()
	const drop = "\x00dropped"
	for _, tc := range []struct {
		name, header, v, want string
	}{
		{"the admin API", "Location", public + "/v1/admin/tokens", drop},
		{"the console, another spelling", "Location", "HTTPS://MAYFLY.test.:443/ui/", drop},
		{"another upstream's route", "Location", public + "/gw/other/x", drop},
		{"a route whose name starts alike", "Location", public + "/gw/apix/x", drop},
		{"climbing out of the route", "Location", public + "/gw/api/../../v1/policy", drop},
		{"encoded dots climbing out", "Location", public + "/gw/api/%2e%2e/other/x", drop},
		{"Refresh to the console", "Refresh", "0; url=" + public + "/ui/", drop},
		{"Link to the admin API", "Link", "<" + public + "/v1/admin/tokens>; rel=next", drop},
		{"this route kept", "Location", public + "/gw/api/repos/acme/app/y?p=2", public + "/gw/api/repos/acme/app/y?p=2"},
		{"another port of its host (Authorization goes along)", "Location", "http://mayfly.test:8443/v1/x", drop},
		{"a third origin kept", "Location", "https://mayfly.example/v1/x", "https://mayfly.example/v1/x"},
		// A browser reads a backslash as a slash (host other.example); curl
		// and Python's urllib3 read other.example\ as user info and go to
		// mayfly.test, taking the token: it comes back as browsers read it.
		{"a third origin spelt so others read ours", "Location", `https://other.example\@mayfly.test/v1/admin/tokens`,
			"https://other.example/@mayfly.test/v1/admin/tokens"},
		{"tabs a browser strips", "Location", "https://other.example/a\tb", "https://other.example/ab"},
		// Spellings of its host that browsers (curl, Go's client: IDNA)
		// read as mayfly.test, or that the gateway cannot tell from it.
		{"the admin API, trailing dots", "Location", "https://mayfly.test../v1/admin/tokens", drop},
		{"the admin API, full-width letters", "Location", "https://\uff4d\uff41\uff59\uff46\uff4c\uff59.test/v1/admin/tokens", drop},
		{"the admin API, an ideographic full stop", "Location", "https://mayfly\u3002test/v1/admin/tokens", drop},
		{"the admin API, a soft hyphen", "Location", "https://may\u00adfly.test/v1/admin/tokens", drop},
		{"the admin API, percent-encoded full stop", "Location", "https://mayfly%E3%80%82test/v1/admin/tokens", drop},
		{"Link to the admin API, full-width letters", "Link", "<https://\uff4d\uff41\uff59\uff46\uff4c\uff59.test/v1/admin/tokens>; rel=next", drop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/gw/api/repos/acme/app/hostile/loc?" + url.Values{"h": {tc.header}, "v": {tc.v}}.Encode()
			resp, _, _ := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("status %d, want 302", resp.StatusCode)
			}
			got, ok := resp.Header[tc.header]
			switch {
			case tc.want == drop && ok:
				t.Fatalf("%s %q came back as %q: want it dropped", tc.header, tc.v, got)
			case tc.want != drop && (len(got) != 1 || got[0] != tc.want):
				t.Fatalf("%s %q came back as %q, want %q", tc.header, tc.v, got, tc.want)
			}
		})
	}
}

// sameHost is the gateway's one comparison of an upstream URL's host with
// the upstream's and mayfly's: every spelling a client reads as the same
// host must be, and one it cannot place must not count as another's.
func TestSameHost(t *testing.T) {
	for _, tc := range []struct {
		a, b        string
		same, known bool
	}{
		{"api.example.com", "api.example.com", true, true},
		{"API.Example.COM", "api.example.com", true, true},
		{"api.example.com.", "api.example.com", true, true},
		{"api.example.com", "api.example.com..", true, true},
		{"api.example.com", "api.example.org", false, true},
		{"api.example.com", "xapi.example.com", false, true},
		{"xn--bcher-kva.example", "XN--BCHER-KVA.example", true, true},
		{"127.0.0.1", "2130706433", true, true},
		{"127.0.0.1", "0x7F000001", true, true},
		{"127.0.0.1", "0x7f.0.0.1", true, true},
		{"127.0.0.1", "0177.0.0.1", true, true},
		{"127.0.0.1", "127.0.1", true, true},
		{"127.0.0.1", "127.1", true, true},
		{"127.0.0.1", "127.0.0.1.", true, true},
		{"0.0.0.0", "0x", true, true},
		{"10.0.0.1", "127.0.0.1", false, true},
		{"127.0.0.1", "::ffff:127.0.0.1", true, true},
		{"::1", "0:0:0:0:0:0:0:1", true, true},
		{"fe80::1", "fe80::1%eth0", true, true},
		{"::1", "127.0.0.1", false, true},
		{"127.0.0.1", "localhost", false, true}, // names are not resolved
		{"127.0.0.1", "127.0.0.1.example", false, true},
		{"127.0.0.1", "08.0.0.1", false, false},    // not octal: browsers fail
		{"127.0.0.1", "127.0.0.256", false, false}, // past a byte
		{"127.0.0.1", "127.16777216", false, false},
		{"127.0.0.1", "4294967296", false, false}, // past 32 bits
		{"127.0.0.1", "1.2.3.4.5", false, false},
		{"127.0.0.1", "127..0.1", false, false},
		{"127.0.0.1", "1e2.0.0.1", false, false},
		{"::1", "::g", false, false},
		{"mayfly.test", "ｍａｙｆｌｙ.test", false, false},
		{"mayfly.test", "b\u00fccher.example", false, false},
		{"b\u00fccher.example", "b\u00fccher.example", true, true},
	} {
		same, known := sameHost(tc.a, tc.b)
		if same != tc.same || known != tc.known {
			t.Errorf("sameHost(%q, %q) = %v, %v; want %v, %v", tc.a, tc.b, same, known, tc.same, tc.known)
		}
		if same, known = sameHost(tc.b, tc.a); same != tc.same || known != tc.known {
			t.Errorf("sameHost(%q, %q) = %v, %v; want %v, %v", tc.b, tc.a, same, known, tc.same, tc.known)
		}
	}
}

// A client may reach the gateway by a name other than public_url's (an
// internal name beside a proxy's public one, or, without public_url, one
// the server does not know as its own): on that host too Go's client and
// curl keep the mayfly token on a redirect. A URL naming it outside the
// route is dropped as one naming public_url's host is.
func TestUpstreamURLsOnTheHostTheClientUsed(t *testing.T) {
	const public = "https://mayfly.test"
	h := newHarnessWith(t, func(c *Config) { c.PublicURL = func(*http.Request) string { return public } })
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("v"))
		w.WriteHeader(http.StatusFound)
	})
	h.up.mu.Unlock()
	addr := h.srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	client := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	const drop = "\x00dropped"
	for _, tc := range []struct{ name, v, want string }{
		{"the admin API on the client's host", "http://mayfly.internal:" + port + "/v1/admin/tokens", drop},
		{"another upstream's route on the client's host", "http://MAYFLY.internal.:" + port + "/gw/other/x", drop},
		{"the client's host, another port", "https://mayfly.internal/v1/admin/tokens", drop},
		{"the client's host kept on the route", "http://mayfly.internal:" + port + "/gw/api/x", "http://mayfly.internal:" + port + "/gw/api/x"},
		{"public_url's host kept on the route", public + "/gw/api/x", public + "/gw/api/x"},
		{"a third origin kept", "https://mayfly.example/x", "https://mayfly.example/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", "http://mayfly.internal:"+port+"/gw/api/repos/acme/app/hostile/loc?"+url.Values{"v": {tc.v}}.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("status %d, want 302", resp.StatusCode)
			}
			got, ok := resp.Header["Location"]
			switch {
			case tc.want == drop && ok:
				t.Fatalf("Location %q came back as %q: want it dropped", tc.v, got)
			case tc.want != drop && (len(got) != 1 || got[0] != tc.want):
				t.Fatalf("Location %q came back as %q, want %q", tc.v, got, tc.want)
			}
		})
	}
}

// Two upstreams may share a host under different paths. A URL of one's
// answer under the other's url is not mapped onto that other route, but
// dropped like any URL outside the route: a grant is per route, so the
// job may have no scope there, or one the first upstream should not be
// able to steer it to (a 307 keeps the method and body).
func TestUpstreamURLOfAnotherRouteOnItsHost(t *testing.T) {
	h := newHarness(t)
	y := strings.Replace(h.yaml, "upstreams:\n", "upstreams:\n  deploy:\n    url: "+h.up.srv.URL+"/deploy\n    credential: {secret: api-token}\n", 1) + `
  deploy:
    upstream: deploy
    ttl: 10m
    allow: [{methods: [POST], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	p, err := policy.Parse([]policy.File{{Name: "policy.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Upstreams["deploy"] == nil || p.Grants["deploy"] == nil {
		t.Fatal("the policy has no deploy route")
	}
	h.pol.p.Store(p)
	tok := h.issue(lease.Request{Grants: []string{"read", "deploy"}})
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("v"))
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	h.up.mu.Unlock()
	for _, v := range []string{h.up.srv.URL + "/deploy/prod", "/deploy/prod"} {
		target := "/gw/api/repos/acme/app/hostile/loc?" + url.Values{"v": {v}}.Encode()
		resp, _, _ := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("status %d, want 307", resp.StatusCode)
		}
		if got, ok := resp.Header["Location"]; ok {
			t.Errorf("Location %q came back as %q: want it dropped", v, got)
		}
	}
}

// The URLs a client follows are read as a browser reads them (tabs and
// line ends removed, backslashes as slashes) and written out again after
// the headers were masked: a secret an upstream reflects with a tab in it
// passed the masker (no form has one) and came back whole once the tab
// was gone. Each mapped URL is masked as it is written.
func TestMappedURLsMasked(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	up := h.up.srv.URL
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		w.Header().Set(q.Get("h"), q.Get("v"))
		status, _ := strconv.Atoi(q.Get("status"))
		w.WriteHeader(status)
	})
	h.up.mu.Unlock()
	cut := tok[:len(tok)/2] + "\t" + tok[len(tok)/2:]
	for _, tc := range []struct {
		name, header string
		status       int
		v            string
	}{
		{"Location on the upstream", "Location", 302, up + "/base/x?t=" + cut},
		{"Location on a third origin", "Location", 302, "https://downloads.example/f?sig=" + cut},
		{"Location, path", "Location", 302, up + "/base/" + cut},
		{"Content-Location", "Content-Location", 200, up + "/base/x?t=" + cut},
		{"Refresh", "Refresh", 200, "0; url=" + up + "/base/x?t=" + cut},
		{"Link", "Link", 200, "<" + up + "/base/x?t=" + cut + ">; rel=next"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/gw/api/repos/acme/app/hostile/loc?" + url.Values{"h": {tc.header}, "v": {tc.v}, "status": {strconv.Itoa(tc.status)}}.Encode()
			resp, _, all := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if strings.Contains(string(all), tok) {
				t.Fatalf("%s %q came back with the token whole: %q", tc.header, tc.v, resp.Header.Values(tc.header))
			}
		})
	}
}
