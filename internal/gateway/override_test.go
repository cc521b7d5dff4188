package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

func TestOverrideParsers(t *testing.T) {
	tests := []struct {
		name string
		got  func() ([]string, error)
		want []string
		err  int
	}{
		{"header underscores", func() ([]string, error) {
			return headerOverrides(http.Header{"X_http_method_override": {"DELETE"}})
		}, []string{"DELETE"}, 0},
		{"header mixed", func() ([]string, error) {
			return headerOverrides(http.Header{"X-Http_Method": {"put"}, "X-Forwarded-Method": {"PATCH"}})
		}, []string{"PUT", "PATCH"}, 0},
		{"header list (Express takes the first)", func() ([]string, error) {
			return headerOverrides(http.Header{"X-Method-Override": {"DELETE, POST"}})
		}, []string{"DELETE", "POST"}, 0},
		{"header not a method", func() ([]string, error) {
			return headerOverrides(http.Header{"X-Http-Method-Override": {"DEL ETE"}})
		}, nil, 400},
		{"header non-ASCII", func() ([]string, error) {
			return headerOverrides(http.Header{"X-Http-Method-Override": {"optıons"}})
		}, []string{"OPTIONS"}, 0},
		{"unrelated header", func() ([]string, error) {
			return headerOverrides(http.Header{"X-Payment-Method": {"card"}})
		}, nil, 0},
		{"form semicolon", func() ([]string, error) { return formOverrides("item=x;_method=DELETE", nil) }, []string{"DELETE"}, 0},
		{"form encoded key", func() ([]string, error) { return formOverrides("%5Fmethod=put", nil) }, []string{"PUT"}, 0},
		{"form PHP dot", func() ([]string, error) { return formOverrides(".method=PATCH", nil) }, []string{"PATCH"}, 0},
		{"form PHP space", func() ([]string, error) { return formOverrides("+_method=PATCH", nil) }, []string{"PATCH"}, 0},
		{"form array", func() ([]string, error) { return formOverrides("_method[]=DELETE", nil) }, []string{"DELETE"}, 0},
		{"form NUL", func() ([]string, error) { return formOverrides("_method%00x=DELETE", nil) }, []string{"DELETE"}, 0},
		{"form ASP.NET field", func() ([]string, error) { return formOverrides("X-HTTP-Method-Override=DELETE", nil) }, []string{"DELETE"}, 0},
		{"form ASP.NET %u escapes", func() ([]string, error) {
			return formOverrides("X-HTTP-Method-Overrid%u0065=%u0044ELETE", nil)
		}, []string{"DELETE"}, 0},
		{"form upper key", func() ([]string, error) { return formOverrides("_METHOD=DELETE", nil) }, []string{"DELETE"}, 0},
		{"form empty", func() ([]string, error) { return formOverrides("_method=&a=b", nil) }, nil, 0},
		{"form bad escape kept", func() ([]string, error) { return formOverrides("_method=%zzDELETE", nil) }, []string{"%ZZDELETE"}, 0},
		{"json", func() ([]string, error) { return jsonOverrides([]byte(`{"a":{"_method":"GET"},"_method":"DELETE"}`)) }, []string{"DELETE"}, 0},
		{"json escaped key", func() ([]string, error) { return jsonOverrides([]byte(`{"\u005fmethod":"delete"}`)) }, []string{"DELETE"}, 0},
		{"json duplicate", func() ([]string, error) { return jsonOverrides([]byte(`{"_method":"POST","_Method":"PUT"}`)) }, []string{"POST", "PUT"}, 0},
		{"json array value", func() ([]string, error) { return jsonOverrides([]byte(`{"_method":["PATCH",[1],{"a":2}],"b":1}`)) }, []string{"PATCH"}, 0},
		{"json number value", func() ([]string, error) { return jsonOverrides([]byte(`{"_method":1,"x":[1,{"y":[]}]}`)) }, nil, 0},
		{"json BOM", func() ([]string, error) { return jsonOverrides([]byte("\xef\xbb\xbf{\"_method\":\"PUT\"}")) }, []string{"PUT"}, 0},
		{"json trailing value", func() ([]string, error) { return jsonOverrides([]byte(`{"a":1}{"_method":"DELETE"}`)) }, nil, 400},
		{"json broken", func() ([]string, error) { return jsonOverrides([]byte(`{"_method":"DELETE"`)) }, nil, 400},
		{"json array top", func() ([]string, error) { return jsonOverrides([]byte(`[{"_method":"DELETE"}]`)) }, nil, 0},
		{"json utf-16", func() ([]string, error) { return jsonOverrides([]byte("{\x00\"\x00_\x00")) }, nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.got()
			if tt.err != 0 {
				if err == nil {
					t.Fatalf("got %v; want status %d", got, tt.err)
				}
				if st, _ := asOverrideError(err); st != tt.err {
					t.Fatalf("got %v, %v; want status %d", got, err, tt.err)
				}
				return
			}
			slices.Sort(got)
			slices.Sort(tt.want)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func multipartBody(t testing.TB, fields ...string) (string, string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	mw.Close()
	return b.String(), mw.FormDataContentType()
}

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.String()
}

// Every place a framework reads a method override from is checked: a grant
// that allows only POST on a path lets no request through that names
// another method, in any header spelling, query or body; bodies are
// forwarded byte for byte; a body that cannot be checked is refused.
func TestMethodOverrideEverywhere(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments"
	form := "application/x-www-form-urlencoded"
	mp, mpType := multipartBody(t, "ref", "main", "_method", "DELETE")
	mpOK, mpOKType := multipartBody(t, "ref", "main", "_method", "POST")
	// A part hidden where Go's reader does not look: after the closing
	// boundary (the epilogue), which a lenient parser may still read.
	hidden := strings.Replace(mpOK, "--\r\n", "--\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n", 1)
	tests := []struct {
		name   string
		hdr    map[string]string
		query  string
		ctype  string
		enc    string
		body   string
		want   int
		reason string
	}{
		{name: "plain POST", ctype: form, body: "ref=main", want: 200},
		{name: "header underscores", hdr: map[string]string{"X_HTTP_METHOD_OVERRIDE": "DELETE"}, want: 403},
		{name: "header mixed separators", hdr: map[string]string{"X-HTTP_Method-Override": "PUT"}, want: 403},
		{name: "header lower case", hdr: map[string]string{"x-http-method": "delete"}, want: 403},
		{name: "header list", hdr: map[string]string{"X-HTTP-Method-Override": "DELETE, POST"}, want: 403},
		{name: "header allowed", hdr: map[string]string{"X_HTTP_METHOD_OVERRIDE": "POST"}, want: 200},
		{name: "header not a method", hdr: map[string]string{"X-HTTP-Method-Override": "DEL/ETE"}, want: 400, reason: "not an HTTP method"},
		{name: "query semicolon", query: "a=1;_method=DELETE", want: 403},
		{name: "query ASP.NET name", query: "X-HTTP-Method-Override=DELETE", want: 403},
		{name: "form semicolon", ctype: form, body: "item=x;_method=DELETE", want: 403},
		{name: "form PHP dot", ctype: form, body: "item=x&.method=DELETE", want: 403},
		{name: "form no content type (Rack)", body: "item=x&_method=DELETE", want: 403},
		{name: "form odd type spelling", ctype: "Application/X-WWW-Form-Urlencoded, text/plain", body: "_method=DELETE", want: 403},
		{name: "form type, json in a parameter", ctype: form + "; x=json", body: "ref=main", want: 200},
		{name: "form type, /json in a parameter (Laravel reads JSON)", ctype: form + "; x=/json", body: "ref=main", want: 400},
		{name: "multipart", ctype: mpType, body: mp, want: 403},
		{name: "multipart allowed", ctype: mpOKType, body: mpOK, want: 200},
		{name: "multipart hidden part", ctype: mpOKType, body: hidden, want: 400},
		{name: "multipart no boundary", ctype: "multipart/form-data", body: mp, want: 400},
		{name: "json", ctype: "application/json", body: `{"_method":"DELETE"}`, want: 403},
		{name: "json vendor type", ctype: "application/vnd.api+json", body: `{"item":1,"_METHOD":"PATCH"}`, want: 403},
		{name: "json allowed", ctype: "application/json", body: `{"item":"x","_method":"POST"}`, want: 200},
		{name: "json plain", ctype: "application/json", body: `{"item":"x","nested":{"_method":"DELETE"}}`, want: 200},
		{name: "json broken", ctype: "application/json", body: `{"_method":"DELETE"`, want: 400},
		{name: "json utf-16", ctype: "application/json; charset=utf-16le", body: "{\x00}\x00", want: 415},
		{name: "json gzip", ctype: "application/json", enc: "gzip", body: gzipped(`{"_method":"DELETE"}`), want: 403},
		{name: "json gzip allowed", ctype: "application/json", enc: "gzip", body: gzipped(`{"item":1}`), want: 200},
		{name: "json brotli", ctype: "application/json", enc: "br", body: "xxxx", want: 415},
		{name: "two content types", hdr: map[string]string{"Content-Type": "text/plain"}, ctype: form, body: "_method=DELETE", want: 400},
		{name: "opaque body", ctype: "application/octet-stream", body: "_method=DELETE", want: 200},
		{name: "form too large", ctype: form, body: "a=" + strings.Repeat("x", 1<<20), want: 413, reason: "over 1048576 bytes"},
		{name: "gzip bomb", ctype: form, enc: "gzip", body: gzipped("a=" + strings.Repeat("x", 2<<20)), want: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.count()
			target := path
			if tt.query != "" {
				target += "?" + tt.query
			}
			var b strings.Builder
			fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n", target, tok, len(tt.body))
			for k, v := range tt.hdr {
				fmt.Fprintf(&b, "%s: %s\r\n", k, v)
			}
			if tt.ctype != "" {
				fmt.Fprintf(&b, "Content-Type: %s\r\n", tt.ctype)
			}
			if tt.enc != "" {
				fmt.Fprintf(&b, "Content-Encoding: %s\r\n", tt.enc)
			}
			b.WriteString("\r\n" + tt.body)
			status, body := rawExchange(t, h.srv.Listener.Addr().String(), b.String())
			if status != tt.want || !strings.Contains(body, tt.reason) {
				t.Fatalf("status %d, want %d (%q): %s", status, tt.want, tt.reason, body)
			}
			if tt.want != 200 {
				if h.up.count() != before {
					t.Fatalf("upstream reached: %+v", h.up.last())
				}
				return
			}
			if got := h.up.last(); got.Method != "POST" || got.BodyLen != int64(len(tt.body)) {
				t.Fatalf("upstream got %s with %d body bytes, want POST with %d", got.Method, got.BodyLen, len(tt.body))
			}
		})
	}
}

// Rack, PHP and Express read the media type of Content-Type up to the
// first ";" or "," and parse a body as a form when that is
// application/x-www-form-urlencoded, whatever the parameters say. A form
// type with "json" (or "multipart/") in a parameter or after a comma must
// be checked as a form, not only as JSON (or multipart): these bodies are
// valid JSON (or multipart) naming no override, but a form parser reads
// _method=DELETE, which the grant (POST only) does not allow.
func TestProtoFormTypeReadAsJSON(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	mpBody := "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx&_method=DELETE&y\r\n--b--\r\n"
	tests := []struct {
		name, ctype, body string
	}{
		{"json in a parameter", "application/x-www-form-urlencoded; x=json", `{"a":"&_method=DELETE&"}`},
		{"json after a comma", "application/x-www-form-urlencoded, application/json", `{"a":"&_method=DELETE&"}`},
		{"multipart in a parameter", `application/x-www-form-urlencoded; x="multipart/"; boundary=b`, mpBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// What a form parser (Rack, PHP, Express urlencoded) reads.
			if m, _ := formOverrides(tt.body, nil); len(m) != 1 || m[0] != "DELETE" {
				t.Fatalf("test body is not a form naming DELETE: %v", m)
			}
			before := h.up.count()
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
				path, tok, tt.ctype, len(tt.body), tt.body)
			status, body := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if h.up.count() != before {
				t.Fatalf("status %d: a POST whose form body names _method=DELETE (Content-Type %q) reached the upstream; the grant allows only POST: %s", status, tt.ctype, strings.TrimSpace(body))
			}
		})
	}
}

// PHP (and so Symfony/Laravel's _method) takes a multipart boundary from
// the first "boundary" substring of Content-Type ("xboundary=AAA"), not the
// boundary parameter Go's mime parser returns ("BBB"); and it joins a part
// header line that has no ":" to the previous header with nothing between
// (rfc1867.c multipart_buffer_headers). So PHP reads this body as one field
// _method=DELETE (checked with php 8.2's built-in server: $_POST is
// {"_method":"DELETE"}), while Go reads one field "x". The request must be
// refused: a Content-Type where "boundary" is anything but one plain
// boundary parameter is, and a Content-Disposition line continued by a
// colon-less line is read joined, as PHP reads it, so the "_me"/"thod"
// field outside the parts Go reads is seen even with one boundary.
func TestProtoMultipartBoundaryReadTwoWays(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	body := "--BBB\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n" +
		"--AAA\r\nContent-Disposition: form-data; name=\"_me\r\nthod\"\r\n\r\nDELETE\r\n--AAA--\r\n" +
		"\r\n--BBB--\r\n"
	plain := "--BBB\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ny\r\n--BBB--\r\n"
	for _, tt := range []struct {
		ctype, body string
		want        int
	}{
		{"multipart/form-data; xboundary=AAA; boundary=BBB", body, 400},
		{"multipart/form-data; charset=utf-8; xboundary=AAA; boundary=BBB", body, 400},
		{"multipart/form-data; boundary=BBB", body, 400},
		{"multipart/form-data; boundary=BBB; xboundary=AAA", plain, 400}, // Rack takes the last "boundary="
		{"multipart/form-data; Boundary=BBB; boundary=BBB", plain, 400},
		{"multipart/form-data; boundary*=utf-8''BBB", plain, 400},
		{"multipart/form-data; boundary = BBB", plain, 400},
		{"multipart/form-data; boundary=BBB ; charset=utf-8", plain, 400},
		{"multipart/form-data; boundary=BBB", plain, 200},
		{`multipart/form-data; BOUNDARY="BBB"; charset=utf-8`, plain, 200},
	} {
		t.Run(tt.ctype, func(t *testing.T) {
			before := h.up.count()
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
				path, tok, tt.ctype, len(tt.body), tt.body)
			status, resp := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, strings.TrimSpace(resp))
			}
			if tt.want != 200 && h.up.count() != before {
				t.Fatalf("status %d: a multipart body another parser reads differently reached the upstream (grant allows only POST): %s", status, strings.TrimSpace(resp))
			}
		})
	}
}

// Rack's multipart parser names a part without Content-Disposition (or
// whose Content-Disposition has no name it reads) by its Content-ID header
// (parser.rb: name = head[MULTIPART_CONTENT_ID, 1], in Rack 2.2 and 3.x):
// with rack 2.2.22, Rack::MethodOverride turns these POSTs into DELETE.
// Content-ID names are checked like field names, wherever "Content-ID"
// appears; parts named otherwise (multipart/related uploads, batch
// requests) pass.
func TestProtoMultipartContentIDNamesField(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	for _, tt := range []struct {
		name, ctype, body string
		want              int
	}{
		{"Content-ID only", "", "--b\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"after a form field", "", "--b\r\nContent-Disposition: form-data; name=\"ref\"\r\n\r\nmain\r\n--b\r\nContent-Id: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"disposition without a name", "", "--b\r\nContent-Disposition: form-data\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"name Rack does not read", "", "--b\r\nContent-Disposition: form-data; name = \"x\"\r\nContent-ID: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"X-Content-ID (Rack's pattern is unanchored)", "", "--b\r\nX-Content-ID: _method\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"X-Content-Disposition before the real one (Rack's pattern is unanchored)", "", "--b\r\nX-Content-Disposition: form-data; name=\"_method\"\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nDELETE\r\n--b--\r\n", 403},
		{"in the epilogue", "", "--b\r\nContent-ID: <a>\r\n\r\nx\r\n--b--\r\nContent-ID: _method\r\n\r\nDELETE\r\n", 400},
		{"Content-ID naming POST", "", "--b\r\nContent-ID: _method\r\n\r\nPOST\r\n--b--\r\n", 200},
		{"multipart/related upload", "multipart/related; boundary=b", "--b\r\nContent-Type: application/json\r\n\r\n{\"name\":\"a\"}\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n", 200},
		{"batch parts named by Content-ID", "multipart/mixed; boundary=b", "--b\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\nGET /x HTTP/1.1\r\n\r\n--b--\r\n", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctype := tt.ctype
			if ctype == "" {
				ctype = "multipart/form-data; boundary=b"
			}
			before := h.up.count()
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
				path, tok, ctype, len(tt.body), tt.body)
			status, resp := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, strings.TrimSpace(resp))
			}
			if tt.want != 200 && h.up.count() != before {
				t.Fatalf("status %d: a multipart part named _method by its Content-ID (Rack) reached the upstream; the grant allows only POST: %s", status, strings.TrimSpace(resp))
			}
		})
	}
}

// rawExchange writes a request exactly as given and reads the answer.
func rawExchange(t testing.TB, addr, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(req))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// An upstream that says method_override: ignore gets the request with its
// override untouched: the opt-out for APIs known not to honour them.
func TestMethodOverrideIgnore(t *testing.T) {
	h := newHarness(t)
	y := `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  api:
    url: ` + h.up.srv.URL + `/base
    method_override: ignore
    credential: {secret: api-token}
grants:
  read:
    upstream: api
    ttl: 10m
    allow: [{methods: [POST], paths: ["/items"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	body := `{"_method":"DELETE"}`
	req := fmt.Sprintf("POST /gw/api/items?_method=DELETE HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nX-HTTP-Method-Override: DELETE\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", tok, len(body), body)
	if status, b := rawExchange(t, h.srv.Listener.Addr().String(), req); status != 200 {
		t.Fatalf("status %d: %s", status, b)
	}
	if got := h.up.last(); got.Header.Get("X-Http-Method-Override") != "DELETE" || got.BodyLen != int64(len(body)) {
		t.Fatalf("upstream got %+v", got)
	}
}

func FuzzOverrideParsers(f *testing.F) {
	mp, mpType := multipartBody(f, "_method", "DELETE")
	f.Add("application/x-www-form-urlencoded", "a=1;_method=DELETE&%5Fmethod=put")
	f.Add("application/json", `{"a":[1,{"b":2}],"_method":["DELETE"]}`)
	f.Add(mpType, mp)
	f.Add("", "_method[]=x")
	f.Fuzz(func(t *testing.T, ctype, body string) {
		kind, boundary, err := classifyBody(http.MethodPost, []string{ctype})
		if err != nil {
			return
		}
		got, err := bodyOverrides(kind, boundary, []byte(body))
		if err != nil {
			if st, _ := asOverrideError(err); st != 400 {
				t.Fatalf("status %d for a parse error", st)
			}
			return
		}
		for _, m := range got {
			if !isMethodToken(m) || m != strings.ToUpper(m) {
				t.Fatalf("override %q is not an uppercase method", m)
			}
		}
		// What a standard parser sees must be among what was found.
		if kind&bodyJSON != 0 {
			var obj map[string]any
			if json.Unmarshal([]byte(body), &obj) == nil {
				if s, ok := obj["_method"].(string); ok && strings.TrimSpace(s) != "" && !strings.Contains(s, ",") && isMethodToken(strings.ToUpper(strings.TrimSpace(s))) &&
					!slices.Contains(got, strings.ToUpper(strings.TrimSpace(s))) {
					t.Fatalf("missed _method %q in %q: %v", s, body, got)
				}
			}
		}
		if kind&bodyForm != 0 {
			more, err := formOverrides(body+"&_method=DELETE", nil)
			if err == nil && !slices.Contains(more, "DELETE") {
				t.Fatalf("missed an appended _method in %q", body)
			}
		}
	})
}

// A Connection header listing an end-to-end header is refused (400,
// audited): the proxy drops what Connection lists after the checks, so
// with Content-Type listed the upstream would get a POST without one (a
// form to Rack and PHP: its _method runs), and with Content-Encoding
// listed a gzip body would be parsed raw only by the frameworks that
// decode it (Express; the others parse it raw anyway, and it is checked
// both ways: TestCodedFormReadRawToo). Hop-by-hop names pass.
func TestConnectionListsOnlyHopByHop(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}}) // POST only on /repos/acme/app/deployments
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Comment = "&_method=DELETE&"
	zw.Write([]byte("item=x"))
	zw.Close()
	const form = "application/x-www-form-urlencoded"
	tests := []struct {
		name, conn, extra, body string
		want                    int
	}{
		{"Content-Type listed, text/plain", "close, Content-Type", "Content-Type: text/plain\r\n", "item=x&_method=DELETE", 400},
		{"Content-Type listed, octet-stream", "content-type, close", "Content-Type: application/octet-stream\r\n", "item=x&_method=DELETE", 400},
		{"Content-Encoding listed, gzip comment", "close, Content-Encoding", "Content-Type: " + form + "\r\nContent-Encoding: gzip\r\n", zb.String(), 400},
		{"override header listed", "close, X-HTTP-Method-Override", "Content-Type: " + form + "\r\nX-HTTP-Method-Override: POST\r\n", "item=x", 400},
		{"a name not sent", "close,\tX-Nothing ", "Content-Type: " + form + "\r\n", "item=x", 400},
		// Most frameworks parse the raw bytes anyway (TestCodedFormReadRawToo).
		{"gzip comment, Content-Encoding not listed", "close", "Content-Type: " + form + "\r\nContent-Encoding: gzip\r\n", zb.String(), 403},
		{"close", "close", "Content-Type: " + form + "\r\n", "item=x", 200},
		{"hop-by-hop names, any case, empty elements", "Keep-Alive, , TE,close", "Content-Type: " + form + "\r\nTE: trailers\r\n", "item=x", 200},
		{"gzip, Content-Encoding not listed", "close", "Content-Type: " + form + "\r\nContent-Encoding: gzip\r\n", gzipped("item=x"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, refusals := h.up.count(), len(h.entries())
			req := fmt.Sprintf("POST /gw/api/repos/acme/app/deployments HTTP/1.1\r\nHost: x\r\nConnection: %s\r\nAuthorization: Bearer %s\r\n%sContent-Length: %d\r\n\r\n%s",
				tt.conn, tok, tt.extra, len(tt.body), tt.body)
			status, body := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, body)
			}
			if tt.want == 200 {
				if got := h.up.last(); got.Method != "POST" || got.BodyLen != int64(len(tt.body)) {
					t.Fatalf("upstream got %s with %d body bytes", got.Method, got.BodyLen)
				}
				return
			}
			if h.up.count() != before {
				t.Fatalf("forwarded: %+v", h.up.last())
			}
			es := h.entries()
			if len(es) != refusals+1 || es[len(es)-1].Status != tt.want || es[len(es)-1].Check != CheckScope || es[len(es)-1].Reason == "" {
				t.Fatalf("want one audited refusal, got %d entries, last %+v", len(es)-refusals, es[len(es)-1])
			}
		})
	}
}

// The proxy drops every request header holding the job token, after the
// checks have read the headers: as with a Connection-listed header, the
// upstream would get a request other than the one checked. A POST whose
// Content-Type carries the token is opaque to the override check; the
// upstream would get it without Content-Type, which Rack reads as a form,
// so _method=DELETE would run where the grant allows only POST. A token in
// any header but Authorization, Proxy-Authorization and DPoP is refused
// (400, audited) before the checks.
func TestProtoTokenInContentTypeDropsIt(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	body := "ref=main&_method=DELETE"
	for _, tt := range []struct {
		name, extra string
		want        int
	}{
		{"Content-Type text/plain", "Content-Type: text/plain; x=" + tok + "\r\n", 400},
		{"Content-Type octet-stream", "Content-Type: application/octet-stream; note=\"" + tok + "\"\r\n", 400},
		{"another header", "Content-Type: application/octet-stream\r\nX-Note: " + tok + "\r\n", 400},
		{"Proxy-Authorization too", "Content-Type: application/octet-stream\r\nProxy-Authorization: Bearer " + tok + "\r\n", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, refusals := h.up.count(), len(h.entries())
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n%sContent-Length: %d\r\n\r\n%s",
				path, tok, tt.extra, len(body), body)
			status, resp := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, strings.TrimSpace(resp))
			}
			if tt.want == 200 {
				if got := h.up.last(); got.Header.Get("Content-Type") == "" {
					t.Fatalf("the upstream got POST %s with no Content-Type (Rack reads the body %q as a form: _method=DELETE)", got.Path, body)
				}
				return
			}
			if h.up.count() != before {
				t.Fatalf("forwarded: %+v", h.up.last())
			}
			if strings.Contains(resp, tok) {
				t.Fatalf("the answer quotes the token: %s", resp)
			}
			es := h.entries()
			if len(es) != refusals+1 || es[len(es)-1].Status != 400 || es[len(es)-1].Check != CheckToken || strings.Contains(es[len(es)-1].Reason, tok) {
				t.Fatalf("want one audited refusal without the token, got %d entries, last %+v", len(es)-refusals, es[len(es)-1])
			}
		})
	}
}

// perGrant mints one credential per grant, as the GitHub App source does:
// each grant's installation token has that grant's permissions.
type perGrant struct{}

func (perGrant) SharedCredential(_ context.Context, _ *policy.Upstream, g *policy.Grant) (string, string, error) {
	return "ghs_" + g.Name + "_0123456789abcdefghij", g.Name, nil
}

const perGrantPolicy = `
issuers:
  ci: {url: https://ci.example.com, audience: https://mayfly.test}
upstreams:
  gh:
    url: {{UP}}/base
    credential:
      github_app: {app_id: "1", private_key_secret: gh-key, installation_id: "2"}
grants:
  publish:
    upstream: gh
    ttl: 10m
    github: {permissions: {contents: write}}
    allow: [{methods: [PUT, MOVE], paths: ["/repos/acme/app/contents/dist/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  triage:
    upstream: gh
    ttl: 10m
    github: {permissions: {issues: write}}
    allow: [{methods: [DELETE], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  archive:
    upstream: gh
    ttl: 10m
    github: {permissions: {contents: write}}
    allow: [{methods: [MOVE], paths: ["/repos/acme/app/contents/archive/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
  maintain:
    upstream: gh
    ttl: 10m
    github: {permissions: {contents: write, issues: write}}
    allow: [{methods: [PUT, DELETE, MOVE], paths: ["/repos/acme/app/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`

// The request goes upstream with one grant's credential, so one grant must
// allow its method, every method an override names and its Destination:
// two grants that each allow a part do not together allow the whole.
func TestOneGrantAllowsTheWholeRequest(t *testing.T) {
	h := newHarness(t)
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(perGrantPolicy, "{{UP}}", h.up.srv.URL))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	h.gw.cfg.Minted = perGrant{}
	const dist, archive = "/gw/gh/repos/acme/app/contents/dist/app.js", "/gw/gh/repos/acme/app/contents/archive/app.js"
	tests := []struct {
		name   string
		grants []string
		method string
		hdr    map[string]string
		status int
		cred   string // the grant whose credential the upstream gets
	}{
		{"the request line alone", []string{"publish", "maintain"}, "PUT", nil, 200, "publish"},
		{"override allowed by another grant only", []string{"publish", "triage"}, "PUT", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 403, ""},
		{"override allowed with the method by a later grant", []string{"publish", "maintain"}, "PUT", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 200, "maintain"},
		{"destination allowed by another grant only", []string{"publish", "archive"}, "MOVE", map[string]string{"Destination": archive}, 403, ""},
		{"destination allowed with the source by a later grant", []string{"publish", "maintain"}, "MOVE", map[string]string{"Destination": archive}, 200, "maintain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := h.issue(lease.Request{Grants: tt.grants})
			hdr := bearer(tok)
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			before := h.up.count()
			resp, body := h.raw(tt.method, dist, hdr)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 {
				if h.up.count() != before {
					t.Fatal("a refused request reached the upstream")
				}
				// Each part is some grant's: the refusal says none has all.
				if !strings.Contains(body, policy.RequestNotAllowed.String()) || !strings.Contains(body, "no one grant allows") {
					t.Fatalf("refusal %s does not say no one grant allows it all", body)
				}
				return
			}
			if got := h.up.last().Header.Get("Authorization"); !strings.Contains(got, "ghs_"+tt.cred+"_") {
				t.Fatalf("upstream got %.18s…, want grant %s's credential", got, tt.cred)
			}
		})
	}
}

// Rack 2 (Rails before Rack 3) reads a parameter name with its leading "["
// and "]" and its trailing "]" stripped ("[_method]", "]_method",
// "_method]" are _method, and Rack::MethodOverride runs it); so does qs,
// the parser of Express's extended forms and queries, for "[_method]".
// Each names a method, in a query, a form or a multipart field.
func TestBracketedOverrideNames(t *testing.T) {
	for _, k := range []string{"[_method]", "]_method", "[[_method]]", "_method]", "][_method]]", "%5B_method%5D", "[X-HTTP-Method-Override]"} {
		got, err := formOverrides(k+"=DELETE", nil)
		if err != nil || !slices.Equal(got, []string{"DELETE"}) {
			t.Errorf("%s=DELETE: %v, %v; want DELETE", k, got, err)
		}
	}
	for _, k := range []string{"a[_method]", "_methods", "[]", "[", "]"} {
		if got, err := formOverrides(k+"=DELETE", nil); err != nil || len(got) != 0 {
			t.Errorf("%s=DELETE: %v, %v; want none", k, got, err)
		}
	}

	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}}) // POST only on /repos/acme/app/deployments
	mp, mpType := multipartBody(t, "[_method]", "DELETE")
	for _, tc := range []struct{ name, query, ctype, body string }{
		{"query", "?%5B_method%5D=DELETE", "", ""},
		{"form", "", "application/x-www-form-urlencoded", "a=1&%5B_method%5D=DELETE"},
		{"form, closing bracket", "", "application/x-www-form-urlencoded", "_method%5D=DELETE"},
		{"multipart", "", mpType, mp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.up.count()
			req, _ := http.NewRequest("POST", h.srv.URL+"/gw/api/repos/acme/app/deployments"+tc.query, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || h.up.count() != before {
				t.Fatalf("status %d, forwarded %d: a POST naming DELETE as a bracketed _method got through", resp.StatusCode, h.up.count()-before)
			}
		})
	}
}

// Rack reads a part's name from its Content-Disposition with a regular
// expression, not by its parameters: the last "; name=" of the line in
// Rack 2.2 and 3.0 (a greedy /Content-Disposition:.*;\s*name=(VALUE)/),
// the first in Rack 3.1, and in older Rack any "name=" after white space,
// inside another parameter's quoted value too. Go reads the name
// parameter; a second "name=" hidden in another parameter's value named
// the field _method for Rack while the gateway saw "x", and
// Rack::MethodOverride ran a DELETE the grant does not allow. Every name a
// parser could read counts; a file name does not.
func TestMultipartNameAsRackReadsIt(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	for _, tt := range []struct {
		name, disposition string
		want              int
	}{
		{"last name= (Rack 2.2, 3.0)", `form-data; name="x"; foo="; name=_method"`, 403},
		{"first name= (Rack 3.1)", `form-data; foo="; name=_method"; name="x"`, 403},
		{"name= after a space (older Rack)", `form-data; name="x"; foo="a name=_method"`, 403},
		{"a file", `form-data; name="file"; filename="a.txt"`, 200},
		{"a field", `form-data; name="title"`, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := "--b\r\nContent-Disposition: " + tt.disposition + "\r\n\r\nDELETE\r\n--b--\r\n"
			before := h.up.count()
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n%s",
				path, tok, len(body), body)
			status, resp := rawExchange(t, h.srv.Listener.Addr().String(), req)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, strings.TrimSpace(resp))
			}
			if tt.want != 200 && h.up.count() != before {
				t.Fatalf("status %d: a part Rack names _method reached the upstream; the grant allows only POST", status)
			}
		})
	}
}

// PHP reads a quoted Content-Disposition parameter in single quotes as
// well as double (rfc1867.c: php_ap_getword_conf): name='_method' is
// _method to Laravel and Symfony, while Go's parameter is the token
// '_method', quotes and all.
func TestMultipartSingleQuotedNameAsPHPReadsIt(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const path = "/gw/api/repos/acme/app/deployments" // POST only
	for _, disposition := range []string{`form-data; name='_method'`, `form-data;name='_method' `, `form-data; NAME='X-HTTP-Method-Override'`} {
		body := "--b\r\nContent-Disposition: " + disposition + "\r\n\r\nDELETE\r\n--b--\r\n"
		before := h.up.count()
		req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n%s",
			path, tok, len(body), body)
		status, resp := rawExchange(t, h.srv.Listener.Addr().String(), req)
		if status != http.StatusForbidden || h.up.count() != before {
			t.Errorf("%s: status %d, forwarded %d, want 403: %s", disposition, status, h.up.count()-before, strings.TrimSpace(resp))
		}
	}
}

// Rack, PHP, Tomcat (Spring) and Go read a form body as it comes: they do
// not undo its Content-Encoding (Express's body-parser does). A gzip body
// whose header carries "&_method=DELETE&" in its comment (or file name)
// field, and "a=1" as its content, named DELETE to them while the gateway
// looked only at the decoded "a=1". A coded body is read both ways.
func TestCodedFormReadRawToo(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}}) // POST only on /repos/acme/app/deployments
	coded := func(comment, name, content string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Comment, zw.Name = comment, name
		zw.Write([]byte(content))
		zw.Close()
		return b.String()
	}
	mp, mpType := multipartBody(t, "a", "1")
	boundary := strings.TrimPrefix(mpType, "multipart/form-data; boundary=")
	for _, tc := range []struct {
		name, ctype, body string
		want              int
	}{
		{"comment", "application/x-www-form-urlencoded", coded("&_method=DELETE&", "", "a=1"), 403},
		{"file name", "application/x-www-form-urlencoded", coded("", "x&_method=DELETE&y", "a=1"), 403},
		{"multipart in the comment", mpType, coded("\r\n--"+boundary+"\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--"+boundary+"--\r\n", "", mp), 403},
		{"plain gzip form", "application/x-www-form-urlencoded", coded("", "", "a=1&b=2"), 200},
		{"plain gzip multipart", mpType, coded("", "", mp), 200},
		{"plain gzip JSON", "application/json", coded("", "", `{"a":1}`), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.up.count()
			req, _ := http.NewRequest("POST", h.srv.URL+"/gw/api/repos/acme/app/deployments", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", tc.ctype)
			req.Header.Set("Content-Encoding", "gzip")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, msg)
			}
			if tc.want != 200 && h.up.count() != before {
				t.Fatal("a body naming DELETE in its raw bytes reached the upstream; the grant allows only POST")
			}
		})
	}
}

func TestIsMethodToken(t *testing.T) {
	tests := []struct {
		m    string
		want bool
	}{
		{"GET", true},
		{"M-SEARCH", true},
		{"x!#$%&'*+-.^_`|~9", true},
		{strings.Repeat("A", 32), true},
		{strings.Repeat("A", 33), false},
		{"", false},
		{"GE T", false},
		{"GET:", false},
		{"P\u00dcT", false},
		{"GET\x00", false},
		{"(GET)", false},
	}
	for _, tt := range tests {
		if got := isMethodToken(tt.m); got != tt.want {
			t.Errorf("isMethodToken(%q) = %v, want %v", tt.m, got, tt.want)
		}
	}
}

// A Content-Disposition naming a field many times ("name=" over and over
// inside a quoted value) is refused, in work and memory in proportion to
// the body: every "name=" was read on to the value's end and folded
// (~3 s and hundreds of MB for 64 KiB, quadratic, by any job token's
// holder), and the gateway inspects bodies of up to 1 MiB.
func TestMultipartManyNamesBounded(t *testing.T) {
	for _, tt := range []struct {
		name    string
		names   int // "name=" inside the quoted value
		refused bool
	}{
		{"a few", 15, false},
		{"many", (64 << 10) / 6, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := `form-data; name="x` + strings.Repeat(" name=", tt.names) + `"`
			body := []byte("--B\r\nContent-Disposition: " + v + "\r\n\r\nv\r\n--B--\r\n")
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := multipartOverrides(body, "B")
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(len(body))+64<<10 {
				t.Fatalf("a body of %d bytes allocated %d bytes while its names were read", len(body), alloc)
			}
			if (err != nil) != tt.refused {
				t.Fatalf("err %v, want refused %v", err, tt.refused)
			}
		})
	}
}

// Salesforce's REST API runs the method a POST names in its _HttpMethod
// query parameter (?_HttpMethod=PATCH, ?_HttpMethod=DELETE: its documented
// way for clients that cannot send PATCH). A grant that allows POST on a
// record's path must not let a job delete or update the record that way.
func TestHttpMethodOverrideParam(t *testing.T) {
	for _, k := range []string{"_HttpMethod", "_httpmethod", "_HTTPMETHOD", "%5FHttpMethod", "_HttpMethod[]"} {
		got, err := formOverrides(k+"=DELETE", nil)
		if err != nil || !slices.Equal(got, []string{"DELETE"}) {
			t.Errorf("%s=DELETE: %v, %v; want DELETE", k, got, err)
		}
	}

	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}}) // POST only on /repos/acme/app/deployments
	for _, tc := range []struct{ name, query, ctype, body string }{
		{"query", "?_HttpMethod=DELETE", "", ""},
		{"query PATCH", "?a=1&_HttpMethod=PATCH", "application/json", `{"a":1}`},
		{"form", "", "application/x-www-form-urlencoded", "a=1&_HttpMethod=DELETE"},
		{"json", "", "application/json", `{"_HttpMethod":"DELETE"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.up.count()
			req, _ := http.NewRequest("POST", h.srv.URL+"/gw/api/repos/acme/app/deployments"+tc.query, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+tok)
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || h.up.count() != before {
				t.Fatalf("status %d, forwarded %d: a POST naming another method in _HttpMethod got through", resp.StatusCode, h.up.count()-before)
			}
		})
	}
}
