package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"br, gzip"}, true},
		{[]string{"br", " gzip ;q=0.5"}, true},
		{[]string{"gzip;q=1"}, true},
		{[]string{"gzip;q=1.000"}, true},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip;Q=0."}, false},
		{[]string{"gzip;q=1.5"}, false}, // malformed: no
		{[]string{"gzip;q=2"}, false},   // malformed: no
		{[]string{"gzip;q=0.0001"}, false},
		{[]string{"gzip;q="}, false},
		{[]string{"gzip;level=1"}, false}, // not a qvalue
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"*, gzip;q=0"}, false}, // named wins over *
		{[]string{"*;q=0, gzip"}, true},
		{[]string{"gzip, gzip;q=0"}, false}, // refused once: no
		{[]string{"identity"}, false},
		{[]string{"gzipx, xgzip"}, false},
		{[]string{"deflate, br, zstd"}, false},
	} {
		h := http.Header{"Accept-Encoding": tc.lines}
		if got := acceptsGzip(h); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.lines, got, tc.want)
		}
	}
}

// Whatever the client sends, gzip is chosen only when an element names it
// (or "*").
func FuzzAcceptsGzip(f *testing.F) {
	f.Add("gzip;q=0.5", "br")
	f.Add("*;q=0", "x-gzip")
	f.Add(",,;=", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		if !acceptsGzip(http.Header{"Accept-Encoding": {a, b}}) {
			return
		}
		named := false
		for _, line := range []string{a, b} {
			for el := range strings.SplitSeq(line, ",") {
				name, _, _ := strings.Cut(el, ";")
				switch strings.ToLower(strings.Trim(name, " \t")) {
				case "gzip", "x-gzip", "*":
					named = true
				}
			}
		}
		if !named {
			t.Fatalf("gzip accepted from %q, %q", a, b)
		}
	})
}

func TestAddVary(t *testing.T) {
	for _, tc := range []struct {
		vary []string
		want []string
	}{
		{nil, []string{"Accept-Encoding"}},
		{[]string{"Origin"}, []string{"Origin", "Accept-Encoding"}},
		{[]string{"origin, accept-encoding"}, []string{"origin, accept-encoding"}},
		{[]string{"*"}, []string{"*"}},
	} {
		h := http.Header{}
		if tc.vary != nil {
			h["Vary"] = tc.vary
		}
		addVary(h)
		if fmt.Sprint(h["Vary"]) != fmt.Sprint(tc.want) {
			t.Errorf("addVary(%q) = %q, want %q", tc.vary, h["Vary"], tc.want)
		}
	}
}

// A gzip body is masked, then encoded again for a client that takes gzip;
// other clients get it decoded. Bodies the upstream did not encode are not
// encoded.
func TestGzipReencodedAfterMasking(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	release := make(chan struct{})
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		kind := strings.TrimPrefix(r.URL.Path, "/base/repos/acme/app/hostile/")
		if kind == "plain" {
			fmt.Fprintf(w, `{"token":"%s"}`, hostileCred)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Vary", "Origin")
		zw := gzip.NewWriter(w)
		switch kind {
		case "whole":
			fmt.Fprintf(zw, `{"token":"%s","n":1}`, hostileCred)
			zw.Close()
		case "stream":
			// The first event must reach the client before the upstream
			// sends the second; the client releases it.
			fmt.Fprintf(zw, "data: first %s\n\n", hostileCred)
			zw.Flush()
			w.(http.Flusher).Flush()
			<-release
			fmt.Fprint(zw, "data: second\n\n")
			zw.Close()
		case "corrupt":
			fmt.Fprintf(zw, "good start %s ", hostileCred)
			zw.Flush()
			w.Write([]byte("\xff\xff\xff\xff not deflate at all"))
		}
	})
	for _, tc := range []struct {
		path, accept string
		wantCE       string
		wantBody     string
	}{
		{"whole", "gzip", "gzip", `{"token":"***","n":1}`},
		{"whole", "br, gzip;q=0.5", "gzip", `{"token":"***","n":1}`},
		{"whole", "*", "gzip", `{"token":"***","n":1}`},
		{"whole", "gzip;q=0", "", `{"token":"***","n":1}`},
		{"whole", "identity", "", `{"token":"***","n":1}`},
		// The declared length is kept: padded with the spaces masking saved.
		{"plain", "gzip", "", `{"token":"***"}` + strings.Repeat(" ", len(hostileCred)-3)},
	} {
		resp, body, all := rawGetAccepting(t, addr, "/gw/api/repos/acme/app/hostile/"+tc.path, tok, tc.accept)
		if resp.StatusCode != 200 || string(body) != tc.wantBody || resp.Header.Get("Content-Encoding") != tc.wantCE {
			t.Fatalf("%s, Accept-Encoding %q: %d %q %q", tc.path, tc.accept, resp.StatusCode, resp.Header.Get("Content-Encoding"), body)
		}
		if tc.wantCE == "gzip" && !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Accept-Encoding") {
			t.Fatalf("%s, Accept-Encoding %q: Vary %q", tc.path, tc.accept, resp.Header.Values("Vary"))
		}
		if tc.path == "whole" && resp.ContentLength != -1 {
			t.Fatalf("%s: a declared length %d", tc.path, resp.ContentLength)
		}
		if bytes.Contains(all, []byte(hostileCred)) {
			t.Fatalf("%s, Accept-Encoding %q: the credential came back: %q", tc.path, tc.accept, all)
		}
	}

	// A stream: what the upstream flushed is decodable by the client before
	// the upstream goes on.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second)) // a failure, not a measure
	fmt.Fprintf(conn, "GET /gw/api/repos/acme/app/hostile/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept-Encoding: gzip\r\n\r\n", tok)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("stream: %v %v", err, resp)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	br := bufio.NewReader(zr)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first ***\n" {
		t.Fatalf("stream: first event %q, %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: second\n\n" {
		t.Fatalf("stream: rest %q, %v", rest, err)
	}

	// A corrupt upstream body never reaches the client as a complete gzip
	// stream: decoding what came fails.
	resp, raw, _ := rawGetRaw(t, addr, "/gw/api/repos/acme/app/hostile/corrupt", tok)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("corrupt: %d %v", resp.StatusCode, resp.Header)
	}
	if bytes.Contains(raw, []byte(hostileCred)) {
		t.Fatalf("corrupt: the credential came back")
	}
	if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
		if got, err := io.ReadAll(zr); err == nil {
			t.Fatalf("corrupt: decoded cleanly to %q", got)
		} else if bytes.Contains(got, []byte(hostileCred)) {
			t.Fatalf("corrupt: the credential came back decoded")
		}
	}
}

// rawGetRaw is rawGet accepting gzip, returning the body undecoded (what
// arrived before the connection ended, framing removed as far as it goes).
func rawGetRaw(t *testing.T, addr, target, tok string) (*http.Response, []byte, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n", target, tok)
	all, _ := io.ReadAll(conn)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
	if err != nil {
		t.Fatalf("%s: %v in %q", target, err, all)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body, all
}
