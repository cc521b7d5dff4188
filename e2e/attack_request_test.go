package e2e

// The request side of the attack suite (issue 12, classes 2, 3, 4, 6 and 7):
// requests an attacker holding a job token would craft to make an upstream
// do more than the grant allows, or to slip a second request past the
// gateway, sent over raw sockets so that no client library tidies them
// first. Every case proves the allowed neighbouring request works, then
// that the attack is refused, that the recording upstream received nothing
// it should not, and that no credential or token came back.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Split so that the repository scans clean (scan.TestOwnTreeClean).
const rqCredential = "rq-upstream-credential-" + "7d1f0c2a9b8e"

// rqUpstream records every request that reaches it and echoes the headers
// it got (so a credential that came back would show).
type rqUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []rqSeen
}

type rqSeen struct {
	method, path, query string
	header              http.Header
	trailer             http.Header
	body                string
}

func newRQUpstream(t *testing.T) *rqUpstream {
	u := &rqUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, rqSeen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), r.Trailer.Clone(), string(b)})
		u.mu.Unlock()
		w.Header().Set("X-Seen-Authorization", r.Header.Get("Authorization"))
		fmt.Fprintf(w, "%s %s auth=%s", r.Method, r.URL.Path, r.Header.Get("Authorization"))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *rqUpstream) count() int { u.mu.Lock(); defer u.mu.Unlock(); return len(u.reqs) }

func (u *rqUpstream) since(n int) []rqSeen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]rqSeen(nil), u.reqs[n:]...)
}

// rqTarget is one server under attack: its address, how to dial it, the
// job token, and the upstream behind it.
type rqTarget struct {
	name string
	addr string
	tls  *tls.Config // nil: plain HTTP
	tok  string
	up   *rqUpstream
}

// rqStart starts a server (TLS, or plain HTTP on loopback) with short
// body limits, a grant allowing only POST /v1/items and GET /v1/q on the
// upstream "echo", and a job token for it.
func rqStart(t *testing.T, plain bool) *rqTarget {
	t.Helper()
	up := newRQUpstream(t)
	n := initDir(t)
	cfg := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(cfg, []byte("limits:\n  min_body_rate: 1000\n  body_rate_grace: 1s\n  gateway_max_inspected_body: 4096\n"), 0o600)
	args := []string{"--config", cfg}
	if plain {
		args = append(args, "--insecure-http")
	}
	n.start(t, args...)
	tok, _ := n.gatewayJob(t, "echo", up.srv.URL, rqCredential, "items", `
      - methods: [POST]
        paths: ["/v1/items"]
      - methods: [GET]
        paths: ["/v1/q"]
`)
	tg := &rqTarget{name: "tls", addr: strings.TrimPrefix(strings.TrimPrefix(n.url, "https://"), "http://"), tok: tok, up: up}
	if plain {
		tg.name = "http"
	} else {
		tg.tls = &tls.Config{RootCAs: n.caPool(t), ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	}
	return tg
}

func (n *node) caPool(t *testing.T) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(n.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(b)
	return pool
}

func (tg *rqTarget) dial(t *testing.T) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if tg.tls != nil {
		c, err = tls.Dial("tcp", tg.addr, tg.tls)
	} else {
		c, err = net.Dial("tcp", tg.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rqAnswer is what came back on one connection.
type rqAnswer struct {
	statuses []int
	bodies   []string
	raw      string // every byte received
	closed   bool   // the server closed the connection
}

// send writes raw on a new connection and reads answers until the server
// closes it (the read deadline only bounds a hang; it measures nothing).
func (tg *rqTarget) send(t *testing.T, raw string) rqAnswer {
	t.Helper()
	c := tg.dial(t)
	defer c.Close()
	// A write may fail: the server answers a request refused on its
	// headers and closes without reading the rest.
	io.WriteString(c, raw)
	return readAnswers(c)
}

func readAnswers(c net.Conn) rqAnswer {
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var all bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &all))
	var a rqAnswer
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			ne, ok := err.(net.Error)
			a.closed = !(ok && ne.Timeout())
			a.raw = all.String()
			return a
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.statuses, a.bodies = append(a.statuses, resp.StatusCode), append(a.bodies, string(b))
	}
}

// noSecrets fails when the credential or the job token, raw or base64,
// is in what came back.
func (tg *rqTarget) noSecrets(t *testing.T, got string) {
	t.Helper()
	for _, s := range []string{rqCredential, tg.tok} {
		for _, f := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s))} {
			if strings.Contains(got, f) {
				t.Fatalf("a secret came back: %q", got)
			}
		}
	}
}

// request builds a raw request on the gateway route; extra is header
// lines (each ending in CRLF) and body is sent as is after the head.
func (tg *rqTarget) request(method, target, extra, body string) string {
	return fmt.Sprintf("%s /gw/echo%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n%s\r\n%s",
		method, target, tg.addr, tg.tok, extra, body)
}

func withLength(ctype, body string) string {
	h := fmt.Sprintf("Content-Length: %d\r\n", len(body))
	if ctype != "" {
		h += "Content-Type: " + ctype + "\r\n"
	}
	return h
}

// rqCase is one attack: the allowed neighbour (must be 200 and reach the
// upstream), then the attack (must get exactly the statuses want, the last
// saying reason, and reach the upstream served times: the well-formed
// requests before it on the connection, never a DELETE).
type rqCase struct {
	name      string
	neighbour string
	attack    string
	want      []int
	reason    string
	served    int
	// forwarded: the attack is an allowed request with something to strip;
	// check says what the upstream must not have received.
	forwarded bool
	check     func(t *testing.T, got rqSeen)
}

func (tg *rqTarget) run(t *testing.T, cs []rqCase) {
	for _, c := range cs {
		t.Run(tg.name+"/"+c.name, func(t *testing.T) {
			if c.neighbour != "" {
				before := tg.up.count()
				a := tg.send(t, c.neighbour)
				if len(a.statuses) != 1 || a.statuses[0] != 200 || tg.up.count() != before+1 {
					t.Fatalf("neighbour: %v %q (upstream %d→%d)", a.statuses, a.bodies, before, tg.up.count())
				}
				tg.noSecrets(t, a.raw)
			}
			before := tg.up.count()
			a := tg.send(t, c.attack)
			tg.noSecrets(t, a.raw)
			if c.forwarded {
				got := tg.up.since(before)
				if len(a.statuses) != 1 || a.statuses[0] != 200 || len(got) != 1 {
					t.Fatalf("attack: %v %q, upstream got %d", a.statuses, a.bodies, len(got))
				}
				c.check(t, got[0])
				return
			}
			if fmt.Sprint(a.statuses) != fmt.Sprint(c.want) {
				t.Fatalf("attack: statuses %v %q, want %v", a.statuses, a.bodies, c.want)
			}
			if last := a.bodies[len(a.bodies)-1]; c.reason != "" && !strings.Contains(last, c.reason) {
				t.Fatalf("attack answer %q does not say %q", last, c.reason)
			}
			if !a.closed {
				t.Fatalf("connection left open after %v", a.statuses)
			}
			got := tg.up.since(before)
			if len(got) != c.served {
				t.Fatalf("the upstream received %+v (answers %v %q)", got, a.statuses, a.bodies)
			}
			for _, g := range got {
				if g.method != "POST" && g.method != "GET" {
					t.Fatalf("the upstream received %s %s", g.method, g.path)
				}
			}
		})
	}
}

func rqMultipart(fields ...string) (string, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	mw.Close()
	return b.String(), mw.FormDataContentType()
}

func rqGzip(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.String()
}

// Method overrides (class 2) and path overrides (class 3): the grant allows
// only POST /v1/items.
func (tg *rqTarget) overrideCases() []rqCase {
	form := "application/x-www-form-urlencoded"
	post := func(extra, ctype, body string) string {
		return tg.request("POST", "/v1/items", extra+withLength(ctype, body), body)
	}
	mp, mpType := rqMultipart("item", "x", "_method", "DELETE")
	mpOK, mpOKType := rqMultipart("item", "x")
	mpArr, mpArrType := rqMultipart("item", "x", "_method[]", "DELETE")
	big := "item=" + strings.Repeat("x", 5000)
	cs := []rqCase{
		{name: "X_HTTP_METHOD_OVERRIDE header", neighbour: post("", form, "item=x"), attack: post("X_HTTP_METHOD_OVERRIDE: DELETE\r\n", form, "item=x"), want: []int{403}},
		{name: "x-http-method lower case", neighbour: post("", "", ""), attack: post("x-http-method: delete\r\n", "", ""), want: []int{403}},
		{name: "X-Method-Override list", neighbour: post("X-Method-Override: POST\r\n", "", ""), attack: post("X-Method-Override: DELETE, POST\r\n", "", ""), want: []int{403}},
		{name: "X-HTTP-Method_Override mixed", neighbour: post("", "", ""), attack: post("X-HTTP-Method_Override: PATCH\r\n", "", ""), want: []int{403}},
		{name: "query _method", neighbour: tg.request("POST", "/v1/items?item=x", withLength("", ""), ""), attack: tg.request("POST", "/v1/items?_method=DELETE", withLength("", ""), ""), want: []int{403}},
		{name: "query ;_method", neighbour: tg.request("POST", "/v1/items?item=x", withLength("", ""), ""), attack: tg.request("POST", "/v1/items?item=x;%5Fmethod=DELETE", withLength("", ""), ""), want: []int{403}},
		{name: "form ;_method", neighbour: post("", form, "item=x"), attack: post("", form, "item=x;_method=DELETE"), want: []int{403}},
		{name: "form PHP .method", neighbour: post("", form, "item=x"), attack: post("", form, "item=x&.method=DELETE"), want: []int{403}},
		{name: "form without type (Rack)", neighbour: post("", "", "item=x"), attack: post("", "", "item=x&_method=DELETE"), want: []int{403}},
		{name: "multipart _method", neighbour: post("", mpOKType, mpOK), attack: post("", mpType, mp), want: []int{403}},
		{name: "JSON _method", neighbour: post("", "application/json", `{"item":"x"}`), attack: post("", "application/json", `{"item":"x","_method":"DELETE"}`), want: []int{403}},
		{name: "JSON _METHOD vendor type", neighbour: post("", "application/vnd.x+json", `{"item":"x"}`), attack: post("", "application/vnd.x+json", `{"_METHOD":"delete"}`), want: []int{403}},
		{name: "JSON gzip _method", neighbour: post("Content-Encoding: gzip\r\n", "application/json", rqGzip(`{"item":"x"}`)), attack: post("Content-Encoding: gzip\r\n", "application/json", rqGzip(`{"_method":"DELETE"}`)), want: []int{403}},
		{name: "JSON UTF-16", neighbour: post("", "application/json; charset=utf-8", `{"item":"x"}`), attack: post("", "application/json; charset=utf-16le", "{\x00\"\x00_\x00m\x00}\x00"), want: []int{415}},
		{name: "form over the bound", neighbour: post("", form, big[:4000]), attack: post("", form, big), want: []int{413}, reason: "cannot be checked"},
		{name: "override not a method", neighbour: post("", "", ""), attack: post("X-HTTP-Method-Override: DEL ETE\r\n", "", ""), want: []int{400}},
		// ASP.NET MVC reads X-HTTP-Method-Override from forms and queries
		// too, and classic ASP.NET decodes %uXXXX in them.
		{name: "form ASP.NET field", neighbour: post("", form, "item=x"), attack: post("", form, "item=x&X-HTTP-Method-Override=DELETE"), want: []int{403}},
		{name: "query ASP.NET field", neighbour: tg.request("POST", "/v1/items?item=x", withLength("", ""), ""), attack: tg.request("POST", "/v1/items?X-HTTP-Method-Override=PUT", withLength("", ""), ""), want: []int{403}},
		{name: "form ASP.NET %u escapes", neighbour: post("", form, "item=%u0078"), attack: post("", form, "item=x&X-HTTP-Method-Overrid%u0065=%u0044ELETE"), want: []int{403}},
		{name: "JSON escaped key", neighbour: post("", "application/json", `{"\u0069tem":"x"}`), attack: post("", "application/json", `{"\u005fmethod":"DELETE"}`), want: []int{403}},
		{name: "JSON duplicate key (PHP takes the last)", neighbour: post("", "application/json", `{"_method":"POST"}`), attack: post("", "application/json", `{"_method":"POST","_method":"DELETE"}`), want: []int{403}},
		{name: "JSON by a /json parameter (Laravel)", neighbour: post("", "text/plain; x=/json", `{"item":"x"}`), attack: post("", "text/plain; x=/json", `{"_method":"DELETE"}`), want: []int{403}},
		{name: "Content-Type twice", neighbour: post("", form, "item=x"), attack: post("Content-Type: text/plain\r\n", form, "item=x&_method=DELETE"), want: []int{400}},
		{name: "form in UTF-16", neighbour: post("", form+"; charset=utf-8", "item=x"), attack: post("", form+"; charset=utf-16", "_\x00m\x00"), want: []int{415}},
		{name: "JSON br-encoded", neighbour: post("Content-Encoding: gzip\r\n", "application/json", rqGzip(`{"item":"x"}`)), attack: post("Content-Encoding: br\r\n", "application/json", "\x0b\x02\x80{}\x03"), want: []int{415}},
		{name: "JSON identity then gzip lines", neighbour: post("Content-Encoding: identity\r\nContent-Encoding: gzip\r\n", "application/json", rqGzip(`{"item":"x"}`)), attack: post("Content-Encoding: identity\r\nContent-Encoding: gzip\r\n", "application/json", rqGzip(`{"_method":"DELETE"}`)), want: []int{403}},
		{name: "JSON gzip twice", neighbour: post("Content-Encoding: gzip\r\n", "application/json", rqGzip(`{"item":"x"}`)), attack: post("Content-Encoding: gzip, gzip\r\n", "application/json", rqGzip(rqGzip(`{"_method":"DELETE"}`))), want: []int{415}},
		{name: "chunked form _method", neighbour: tg.request("POST", "/v1/items", "Content-Type: "+form+"\r\nTransfer-Encoding: chunked\r\n", "6\r\nitem=x\r\n0\r\n\r\n"),
			attack: tg.request("POST", "/v1/items", "Content-Type: "+form+"\r\nTransfer-Encoding: chunked\r\n", "6\r\nitem=x\r\nf\r\n&_method=DELETE\r\n0\r\n\r\n"), want: []int{403}},
		{name: "chunked form over the bound", neighbour: tg.request("POST", "/v1/items", "Content-Type: "+form+"\r\nTransfer-Encoding: chunked\r\n", fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", 4000, big[:4000])),
			attack: tg.request("POST", "/v1/items", "Content-Type: "+form+"\r\nTransfer-Encoding: chunked\r\n", fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)), want: []int{413}, reason: "cannot be checked"},
		{name: "multipart _method[]", neighbour: post("", mpOKType, mpOK), attack: post("", mpArrType, mpArr), want: []int{403}},
	}
	// Trailers come after the body, so after every check: an override, a
	// path or a token in them must not reach the upstream (Apache merges
	// trailers into headers with MergeTrailers on).
	for _, ctype := range []string{form, "application/octet-stream"} {
		trailers := fmt.Sprintf("X-HTTP-Method-Override: DELETE\r\nX-Original-URL: /admin/delete-everything\r\nAuthorization: Bearer %s\r\n", tg.tok)
		cs = append(cs, rqCase{name: "request trailers, " + ctype,
			neighbour: tg.request("POST", "/v1/items", "Content-Type: "+ctype+"\r\nTransfer-Encoding: chunked\r\n", "6\r\nitem=x\r\n0\r\n\r\n"),
			attack: tg.request("POST", "/v1/items", "Content-Type: "+ctype+"\r\nTransfer-Encoding: chunked\r\nTrailer: X-HTTP-Method-Override, X-Original-URL, Authorization\r\n",
				"6\r\nitem=x\r\n0\r\n"+trailers+"\r\n"),
			forwarded: true,
			check: func(t *testing.T, got rqSeen) {
				if len(got.trailer) != 0 || got.method != "POST" || got.path != "/v1/items" || got.body != "item=x" {
					t.Fatalf("upstream got %s %s %q, trailers %v", got.method, got.path, got.body, got.trailer)
				}
				for k, vs := range got.header {
					for _, v := range vs {
						if strings.Contains(v, "DELETE") || strings.Contains(v, "/admin/") || strings.Contains(v, tg.tok) {
							t.Fatalf("upstream got %s: %s", k, v)
						}
					}
				}
			}})
	}
	for _, h := range []string{"X_Original_URL", "X_Rewrite_URL", "X-Original-URI", "x-original-url", "X-Envoy-Original-Path", "X_Forwarded_Prefix",
		"X-Original-Url", "X_ORIGINAL_URI", "X-Rewrite-Url", "x_forwarded_uri", "X-Forwarded-Path", "X-Forwarded-Url", "X-Override-URL", "X-Replaced-Path"} {
		h := h
		cs = append(cs, rqCase{name: "path override " + h, neighbour: post("", "", ""),
			attack:    post(h+": /admin/delete-everything\r\n", "", ""),
			forwarded: true,
			check: func(t *testing.T, got rqSeen) {
				for k, vs := range got.header {
					for _, v := range vs {
						if strings.Contains(v, "/admin/") {
							t.Fatalf("upstream got %s: %s", k, v)
						}
					}
				}
				if got.method != "POST" || got.path != "/v1/items" {
					t.Fatalf("upstream got %s %s", got.method, got.path)
				}
			}})
	}
	return cs
}

// Framing (class 4): requests whose length two parsers could read
// differently, each carrying a smuggled DELETE in its body.
func (tg *rqTarget) framingCases() []rqCase {
	smuggled := fmt.Sprintf("DELETE /gw/echo/v1/items HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", tg.addr, tg.tok)
	chunkedBody := "0\r\n\r\n" + smuggled
	head := func(framing string) string {
		return fmt.Sprintf("POST /gw/echo/v1/items HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n%s\r\n", tg.addr, tg.tok, framing)
	}
	neighbour := head("Transfer-Encoding: chunked\r\nConnection: close\r\n") + "6\r\nitem=x\r\n0\r\n\r\n"
	clNeighbour := head("Content-Length: 6\r\nConnection: close\r\n") + "item=x"
	return []rqCase{
		{name: "CL then TE", neighbour: neighbour, attack: head(fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chunkedBody))) + chunkedBody, want: []int{400}, reason: "both Content-Length and Transfer-Encoding"},
		{name: "TE then CL", neighbour: neighbour, attack: head(fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(chunkedBody))) + chunkedBody, want: []int{400}},
		{name: "TE tab chunked", neighbour: neighbour, attack: head("Transfer-Encoding: \tchunked\r\n") + chunkedBody, want: []int{400}},
		{name: "TE CHUNKED", neighbour: neighbour, attack: head("Transfer-Encoding: CHUNKED\r\n") + chunkedBody, want: []int{400}},
		{name: "TE identity, chunked", neighbour: neighbour, attack: head("Transfer-Encoding: identity, chunked\r\n") + chunkedBody, want: []int{400}},
		{name: "TE twice", neighbour: neighbour, attack: head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + chunkedBody, want: []int{400}},
		{name: "TE in HTTP/1.0", neighbour: neighbour, attack: strings.Replace(head("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n"), "HTTP/1.1", "HTTP/1.0", 1) + chunkedBody, want: []int{400}},
		{name: "CL twice", neighbour: clNeighbour, attack: head("Content-Length: 6\r\nContent-Length: 6\r\n") + "item=x" + smuggled, want: []int{400}},
		{name: "CL underscore alias", neighbour: clNeighbour, attack: head("Content-Length: 6\r\nContent_Length: 200\r\n") + "item=x" + smuggled, want: []int{400}},
		{name: "bare LF before TE", neighbour: clNeighbour, attack: head("X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n") + "item=x" + smuggled, want: []int{400}},
		{name: "obs-fold TE", neighbour: clNeighbour, attack: head("X-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: 6\r\n") + "item=x" + smuggled, want: []int{400}},
		// A well-framed request followed on the same connection by an
		// ambiguous one: the first is served, the second refused, and the
		// DELETE inside it never runs.
		{name: "pipelined CL+TE after a good request", neighbour: clNeighbour,
			attack: head("Content-Length: 6\r\n") + "item=x" + head(fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chunkedBody))) + chunkedBody,
			want:   []int{200, 400}, served: 1},
	}
}

// Tokens in URLs (class 6).
func (tg *rqTarget) urlCases() []rqCase {
	get := func(target string) string { return tg.request("GET", target, "", "") }
	pct := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}
	ok := get("/v1/q?state=open")
	return []rqCase{
		{name: "access_token query", neighbour: ok, attack: get("/v1/q?access_token=" + tg.tok), want: []int{400}, reason: "URL carries a mayfly token"},
		{name: "token percent-encoded", neighbour: ok, attack: get("/v1/q?t=" + pct(tg.tok)), want: []int{400}},
		{name: "token double-encoded", neighbour: ok, attack: get("/v1/q?t=" + url.QueryEscape(pct(tg.tok))), want: []int{400}},
		{name: "token base64", neighbour: ok, attack: get("/v1/q?t=" + base64.URLEncoding.EncodeToString([]byte("u:"+tg.tok))), want: []int{400}},
		{name: "token in path", neighbour: ok, attack: get("/v1/q/" + tg.tok), want: []int{400}},
		{name: "token hex", neighbour: ok, attack: get("/v1/q?t=" + hex.EncodeToString([]byte(tg.tok))), want: []int{400}},
		{name: "token base64 std, percent-encoded", neighbour: ok, attack: get("/v1/q?t=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("ab"+tg.tok)))), want: []int{400}},
		{name: "token percent-encoded four times", neighbour: ok, attack: get("/v1/q?t=" + url.QueryEscape(url.QueryEscape(url.QueryEscape(pct(tg.tok))))), want: []int{400}},
		{name: "token %u-encoded", neighbour: ok, attack: get("/v1/q?t=" + pctU(tg.tok)), want: []int{400}},
		{name: "token UTF-16 percent-encoded", neighbour: ok, attack: get("/v1/q?t=" + pct(utf16LE(tg.tok))), want: []int{400}},
		{name: "token as a query name", neighbour: ok, attack: get("/v1/q?" + tg.tok + "=1"), want: []int{400}},
		{name: "token in an absolute-form target", neighbour: ok,
			attack: fmt.Sprintf("GET http://%s/gw/echo/v1/q?access_token=%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", tg.addr, tg.tok, tg.addr, tg.tok), want: []int{400}},
		{name: "token without Authorization", neighbour: ok, attack: fmt.Sprintf("GET /gw/echo/v1/q?access_token=%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tg.tok, tg.addr), want: []int{400}},
	}
}

// pctU writes s as ASP.NET's %uXXXX escapes.
func pctU(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "%%u%04X", r)
	}
	return b.String()
}

func utf16LE(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		b.WriteByte(0)
	}
	return b.String()
}

func TestAttackRequest(t *testing.T) {
	for _, plain := range []bool{false, true} {
		tg := rqStart(t, plain)
		tg.run(t, tg.overrideCases())
		tg.run(t, tg.framingCases())
		tg.run(t, tg.urlCases())
		tg.slowBodies(t)
	}
}

// Slow bodies (class 7): a request refused on its headers is answered
// before any of its body is sent, and the connection closed; a body that
// trickles in ends its connection once the grace (1s here) is spent.
func (tg *rqTarget) slowBodies(t *testing.T) {
	t.Run(tg.name+"/refused on headers, body never sent", func(t *testing.T) {
		before := tg.up.count()
		c := tg.dial(t)
		defer c.Close()
		fmt.Fprintf(c, "POST /gw/echo/v1/items HTTP/1.1\r\nHost: %s\r\nContent-Length: 200000\r\n\r\n", tg.addr)
		a := readAnswers(c)
		if len(a.statuses) != 1 || a.statuses[0] != 401 || !a.closed {
			t.Fatalf("got %v closed=%v %q", a.statuses, a.closed, a.bodies)
		}
		if tg.up.count() != before {
			t.Fatal("the upstream was reached")
		}
	})
	t.Run(tg.name+"/scope refused, body never sent", func(t *testing.T) {
		c := tg.dial(t)
		defer c.Close()
		fmt.Fprintf(c, "PUT /gw/echo/v1/items HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 200000\r\n\r\n", tg.addr, tg.tok)
		a := readAnswers(c)
		if len(a.statuses) != 1 || a.statuses[0] != 403 || !a.closed {
			t.Fatalf("got %v closed=%v %q", a.statuses, a.closed, a.bodies)
		}
		tg.noSecrets(t, a.raw)
	})
	t.Run(tg.name+"/trickled body on the API", func(t *testing.T) {
		c := tg.dial(t)
		defer c.Close()
		fmt.Fprintf(c, "POST /v1/token HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20000\r\n\r\ng", tg.addr)
		a := readAnswers(c)
		if !a.closed {
			t.Fatalf("connection still open: %v", a.statuses)
		}
	})
	if tg.tls != nil {
		t.Run(tg.name+"/trickled body over HTTP/2", func(t *testing.T) {
			cfg := tg.tls.Clone()
			cfg.NextProtos = []string{"h2"}
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("x")) // then nothing
			req, _ := http.NewRequest("POST", "https://"+tg.addr+"/gw/echo/v1/items", pr)
			req.Header.Set("Authorization", "Bearer "+tg.tok)
			req.Header.Set("Content-Type", "application/octet-stream")
			// The stream must end (an answer or a reset) long before the
			// client's bound on a hang.
			resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(req)
			if err == nil {
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode == 200 && err == nil {
					t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, b)
				}
				tg.noSecrets(t, string(b))
			} else if strings.Contains(err.Error(), "Client.Timeout") {
				t.Fatalf("the stream was held: %v", err)
			}
		})
	}
	t.Run(tg.name+"/trickled body", func(t *testing.T) {
		c := tg.dial(t)
		defer c.Close()
		fmt.Fprintf(c, "POST /gw/echo/v1/items HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 200000\r\n\r\nx", tg.addr, tg.tok)
		a := readAnswers(c)
		if !a.closed {
			t.Fatalf("connection still open: %v", a.statuses)
		}
		tg.noSecrets(t, a.raw)
	})
}
