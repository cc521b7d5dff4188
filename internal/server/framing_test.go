package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// framingServer serves a recording handler behind the framing listener.
type framingServer struct {
	addr string
	mu   sync.Mutex
	seen []string // "METHOD path body"
	errs []error  // body read errors
	tls  *tls.Config
}

func (f *framingServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func startFraming(t *testing.T, withTLS bool, opts framingOptions) *framingServer {
	t.Helper()
	f := &framingServer{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			buf := make([]byte, 64)
			n, _ := brw.Read(buf)
			conn.Write(buf[:n])
			return
		}
		if r.URL.Path == "/refuse" {
			// Refused on its headers: the body is never read.
			http.Error(w, "refused", http.StatusForbidden)
			return
		}
		b, err := io.ReadAll(r.Body)
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path+" "+string(b))
		if err != nil {
			f.errs = append(f.errs, err)
		}
		f.mu.Unlock()
		fmt.Fprintf(w, "ok %s tls=%v proto=%d", r.URL.Path, r.TLS != nil, r.ProtoMajor)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.maxHead == 0 {
		opts.maxHead = 64 << 10
	}
	if opts.handshake == 0 {
		opts.handshake = 5 * time.Second
	}
	opts.log = slog.New(slog.DiscardHandler)
	srv := &http.Server{Handler: guard(h, opts.minRate, opts.grace), ConnContext: framingConnContext, ReadHeaderTimeout: 10 * time.Second}
	if withTLS {
		ts := httptest.NewUnstartedServer(nil)
		ts.EnableHTTP2 = true
		ts.StartTLS()
		f.tls = &tls.Config{Certificates: ts.TLS.Certificates, NextProtos: []string{"h2", "http/1.1"}}
		ts.Close()
		srv.TLSConfig = f.tls
	}
	f.addr = ln.Addr().String()
	go srv.Serve(newFramingListener(ln, srv.TLSConfig, opts))
	t.Cleanup(func() { srv.Close() })
	return f
}

// exchange sends raw bytes on a new connection and reads every response
// until the server closes it (or until the wait runs out, which the
// caller sees as closed == false).
func exchange(t *testing.T, f *framingServer, raw string, withTLS bool) (statuses []int, bodies []string, closed bool) {
	t.Helper()
	var c net.Conn
	var err error
	if withTLS {
		c, err = tls.Dial("tcp", f.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	} else {
		c, err = net.Dial("tcp", f.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	// A bound on waiting for the close, not a measurement.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			ne, ok := err.(net.Error)
			return statuses, bodies, !(ok && ne.Timeout())
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		statuses, bodies = append(statuses, resp.StatusCode), append(bodies, string(b))
	}
}

const okGet = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"

func TestFramingRefusesAmbiguousRequests(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		f := startFraming(t, withTLS, framingOptions{})
		tests := []struct {
			name, raw string
			want      []int
			reason    string
		}{
			{"content-length, then keep-alive", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + okGet + "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", []int{200, 200, 200}, ""},
			{"chunked, then keep-alive", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", []int{200, 200}, ""},
			{"CL and TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "both Content-Length and Transfer-Encoding"},
			{"TE then CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "both"},
			{"TE tab", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \tchunked\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "exactly"},
			{"TE upper case", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "exactly"},
			{"TE list", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "exactly"},
			{"TE twice", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + okGet, []int{400}, "more than one Transfer-Encoding"},
			{"TE in HTTP/1.0", "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}, "HTTP/1.0"},
			{"CL twice, equal", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + okGet, []int{400}, "more than one Content-Length"},
			{"CL list", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello" + okGet, []int{400}, "not a number"},
			{"CL signed", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello" + okGet, []int{400}, "not a number"},
			{"CL underscore", "POST /a HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\nhello" + okGet, []int{400}, "spelled with '_'"},
			{"TE underscore", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello" + okGet, []int{400}, "spelled with '_'"},
			{"bare LF", "POST /a HTTP/1.1\nHost: x\nContent-Length: 5\n\nhello" + okGet, []int{400}, "bare CR or LF"},
			{"bare LF inside", "POST /a HTTP/1.1\r\nHost: x\r\nX: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", []int{400}, "bare CR or LF"},
			{"obs-fold", "POST /a HTTP/1.1\r\nHost: x\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello", []int{400}, "folded"},
			{"space before colon", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello", []int{400}, "malformed header"},
			{"pipelined smuggle", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", []int{200, 400}, "both"},
			{"bad chunk size", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" + okGet, nil, ""},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("tls=%v/%s", withTLS, tt.name), func(t *testing.T) {
				before := len(f.requests())
				statuses, bodies, closed := exchange(t, f, tt.raw, withTLS)
				if !closed {
					t.Fatalf("connection left open after %v", statuses)
				}
				if len(statuses) < len(tt.want) || fmt.Sprint(statuses[:len(tt.want)]) != fmt.Sprint(tt.want) || len(statuses) > len(tt.want) && tt.want != nil {
					t.Fatalf("statuses %v %q, want %v", statuses, bodies, tt.want)
				}
				if tt.reason != "" && !strings.Contains(bodies[len(bodies)-1], tt.reason) {
					t.Fatalf("answer %q does not say %q", bodies[len(bodies)-1], tt.reason)
				}
				for _, r := range f.requests()[before:] {
					if strings.Contains(r, "smuggled") || strings.Contains(r, "/next") && tt.want[len(tt.want)-1] != 200 {
						t.Fatalf("a request after the refused one was served: %q", r)
					}
				}
				if tt.want != nil && tt.want[0] == 200 {
					if got := f.requests()[before]; got != "POST /a hello" {
						t.Fatalf("first request seen as %q", got)
					}
					if want := fmt.Sprintf("tls=%v", withTLS); !strings.Contains(bodies[0], want) {
						t.Fatalf("answer %q, want %s", bodies[0], want)
					}
				}
			})
		}
	}
}

// A body that trickles in ends its connection once the grace is spent;
// the handler's read fails rather than waiting for it.
func TestFramingMinimumBodyRate(t *testing.T) {
	f := startFraming(t, false, framingOptions{minRate: 1000, grace: 200 * time.Millisecond})
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\nx")
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a bound, not a measurement
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open: %q", b)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) != 1 || !strings.Contains(f.errs[0].Error(), "minimum data rate") {
		t.Fatalf("handler body errors: %v", f.errs)
	}
}

// A request its handler refuses without reading the body is answered at
// once and its connection closed when the body is not there (the grace
// here would hold it for minutes otherwise); one whose body has arrived
// keeps its connection.
func TestFramingRefusedBodyNotAwaited(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		f := startFraming(t, withTLS, framingOptions{minRate: 1000, grace: 5 * time.Minute})
		statuses, _, closed := exchange(t, f, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\nabc", withTLS)
		if fmt.Sprint(statuses) != "[403]" || !closed {
			t.Fatalf("tls=%v: slow body: %v closed=%v", withTLS, statuses, closed)
		}
		statuses, _, _ = exchange(t, f, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
			"POST /refuse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"+okGet+
			strings.Replace(okGet, "Host: x", "Host: x\r\nConnection: close", 1), withTLS)
		if fmt.Sprint(statuses) != "[403 403 200 200]" {
			t.Fatalf("tls=%v: bodies that arrived: %v", withTLS, statuses)
		}
	}
}

// HTTP/2 streams bypass framingConn; the gateway's bodies get the same
// minimum rate through the stream's read deadline.
func TestFramingHTTP2MinimumBodyRate(t *testing.T) {
	f := startFraming(t, true, framingOptions{minRate: 1000, grace: 200 * time.Millisecond})
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("x"))
	req, _ := http.NewRequest("POST", "https://"+f.addr+"/gw/slow", pr)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err == nil {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) != 1 || !strings.Contains(f.errs[0].Error(), "minimum data rate") {
		t.Fatalf("handler body errors: %v (response %v, %v)", f.errs, resp, err)
	}
}

// After a protocol switch the connection's bytes are the handler's: the
// framing checks stop.
func TestFramingHijackIsOpaque(t *testing.T) {
	f := startFraming(t, false, framingOptions{})
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprint(c, "\x81\x05hello\n\nTransfer-Encoding: x\r\n")
	got := make([]byte, 64)
	n, _ := io.ReadAtLeast(br, got, 5)
	if !strings.HasPrefix(string(got[:n]), "\x81\x05hello") {
		t.Fatalf("echo %q", got[:n])
	}
}

// HTTP/2 still works through the listener, with its TLS state.
func TestFramingHTTP2(t *testing.T) {
	f := startFraming(t, true, framingOptions{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("https://"+f.addr+"/h2", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || !strings.Contains(string(b), "tls=true proto=2") {
		t.Fatalf("%s: %s", resp.Proto, b)
	}
}

func FuzzCheckHead(f *testing.F) {
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"))
	f.Add([]byte("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
	f.Add([]byte("POST /a HTTP/1.1\r\ncontent_LENGTH: 5\r\nTRANSFER-encoding: chunked\r\n\r\n"))
	f.Add([]byte("GET /a HTTP/1.0\r\nX: a\rb\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		if len(head) < 4 || !strings.HasSuffix(string(head), "\r\n\r\n") {
			return
		}
		fr, reason := checkHead(head)
		if reason == "" && (fr.length < 0 || fr.chunked && fr.length != 0) {
			t.Fatalf("framing %+v accepted", fr)
		}
		if wf, wr := checkHeadSplit(head); fr != wf || reason != wr {
			t.Fatalf("checkHead = %+v %q, the line-splitting reference %+v %q", fr, reason, wf, wr)
		}
	})
}

// checkHeadSplit is checkHead as first written (splitting the head into
// lines and lower-casing each name): the reference the allocation-free
// one must agree with.
func checkHeadSplit(head []byte) (headFraming, string) {
	var f headFraming
	lines := bytes.Split(head[:len(head)-4], []byte("\r\n"))
	for _, l := range lines {
		if bytes.IndexByte(l, '\r') >= 0 || bytes.IndexByte(l, '\n') >= 0 {
			return f, "a bare CR or LF in the request head"
		}
	}
	rl := lines[0]
	var http10 bool
	switch {
	case bytes.HasSuffix(rl, []byte(" HTTP/1.1")):
	case bytes.HasSuffix(rl, []byte(" HTTP/1.0")):
		http10 = true
	default:
		return f, "only HTTP/1.0 and HTTP/1.1 requests are served here"
	}
	var cls, tes int
	var te string
	for _, l := range lines[1:] {
		if len(l) == 0 {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			return f, "a folded header line (obs-fold)"
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(name) == 0 || !isToken(name) {
			return f, "a malformed header line"
		}
		n := strings.ToLower(string(name))
		switch n {
		case "content-length":
			cls++
			v := strings.Trim(string(value), " \t")
			if len(v) == 0 || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
				return f, "a Content-Length that is not a number"
			}
			f.length, _ = strconv.ParseInt(v, 10, 64)
		case "transfer-encoding":
			tes++
			te = strings.TrimLeft(string(value), " ")
		default:
			if folded := strings.ReplaceAll(n, "_", "-"); folded == "content-length" || folded == "transfer-encoding" {
				return f, "a framing header spelled with '_' (" + string(name) + ")"
			}
		}
	}
	switch {
	case tes > 0 && cls > 0:
		return f, "both Content-Length and Transfer-Encoding (RFC 9112 section 6.1)"
	case cls > 1:
		return f, "more than one Content-Length"
	case tes > 1:
		return f, "more than one Transfer-Encoding"
	case tes == 1 && http10:
		return f, "Transfer-Encoding in an HTTP/1.0 request"
	case tes == 1 && te != "chunked":
		return f, "a Transfer-Encoding other than exactly \"chunked\""
	}
	f.chunked = tes == 1
	return f, ""
}

// FuzzFramingStream feeds any bytes, split anywhere, through the framing
// parser: it never panics, and what it passes on is always exactly the
// bytes received (but for empty lines before a request), in order, up to a refusal (after which only the
// refusal request follows).
func FuzzFramingStream(f *testing.F) {
	f.Add([]byte("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"), uint8(7))
	f.Add([]byte("POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		c := newFramingConn(a, nil, framingOptions{maxHead: 1 << 10, log: slog.New(slog.DiscardHandler)})
		step := int(split)%16 + 1
		for i := 0; i < len(in) && c.dead == nil; i += step {
			c.in = append(c.in, in[i:min(i+step, len(in))]...)
			c.feed()
		}
		out := string(c.out)
		if i := strings.Index(out, "GET "+refusedPrefix); i >= 0 && c.refusal != "" {
			out = out[:i]
		}
		if strings.HasPrefix(string(in), out) {
			return
		}
		// Empty lines before a request line are dropped: compare without
		// them (what was passed on may end inside a CRLF).
		crlf := strings.NewReplacer("\r\n", "")
		if !strings.HasPrefix(crlf.Replace(string(in)), crlf.Replace(strings.TrimSuffix(out, "\r"))) {
			t.Fatalf("passed on %q, not a prefix of %q", out, in)
		}
	})
}

// Bytes read through the connection as net/http reads them (out drained
// between reads, so in's and out's arrays are reused) are exactly the bytes
// sent, whatever the sizes of the writes and of the reader's buffer.
func TestFramingReadPassesPipelinedRequests(t *testing.T) {
	var stream strings.Builder
	for i := range 40 {
		body := strings.Repeat(string(rune('a'+i%26)), i*37%300)
		switch i % 3 {
		case 0:
			fmt.Fprintf(&stream, "POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case 1:
			fmt.Fprintf(&stream, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body)+1, body+"!")
		default:
			fmt.Fprintf(&stream, "GET /g%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		}
	}
	in := stream.String()
	for _, tc := range []struct{ write, read int }{{1, 7}, {5, 1}, {64, 4096}, {1000, 13}, {len(in), 512}, {333, 333}} {
		t.Run(fmt.Sprintf("write=%d,read=%d", tc.write, tc.read), func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				for i := 0; i < len(in); i += tc.write {
					if _, err := b.Write([]byte(in[i:min(i+tc.write, len(in))])); err != nil {
						return
					}
				}
			}()
			c := newFramingConn(a, nil, framingOptions{maxHead: 1 << 10, log: slog.New(slog.DiscardHandler)})
			c.SetReadDeadline(time.Now().Add(10 * time.Second)) // bytes lost: fail, not hang
			var got []byte
			p := make([]byte, tc.read)
			for len(got) < len(in) {
				n, err := c.Read(p)
				if err != nil {
					t.Fatalf("read after %d bytes: %v", len(got), err)
				}
				got = append(got, p[:n]...)
			}
			if string(got) != in {
				i := 0
				for i < len(got) && got[i] == in[i] {
					i++
				}
				t.Fatalf("passed on bytes that differ from those sent at %d: %q, want %q", i, got[i:min(i+40, len(got))], in[i:min(i+40, len(in))])
			}
		})
	}
}

// BenchmarkCheckHead compares checkHead with its line-splitting reference
// on a typical gateway request head.
func BenchmarkCheckHead(b *testing.B) {
	head := []byte("GET /gw/api/repos/acme/app/issues?state=open HTTP/1.1\r\nHost: mayfly.example:8443\r\n" +
		"User-Agent: git/2.43.0\r\nAccept: application/json\r\nAuthorization: Bearer x\r\nContent-Length: 0\r\n\r\n")
	for _, bc := range []struct {
		name string
		f    func([]byte) (headFraming, string)
	}{{"checkHead", checkHead}, {"split", checkHeadSplit}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, reason := bc.f(head); reason != "" {
					b.Fatal(reason)
				}
			}
		})
	}
}

// TestIsToken: a header name's characters are RFC 9110's tchar, byte by
// byte, and nothing else (no byte of 0x80 and up).
func TestIsToken(t *testing.T) {
	const tchar = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	for c := range 256 {
		if got, want := isToken([]byte{byte(c)}), strings.IndexByte(tchar, byte(c)) >= 0; got != want {
			t.Errorf("isToken(%q) = %v, want %v", byte(c), got, want)
		}
	}
	if !isToken([]byte("X-Forwarded-For")) || isToken([]byte("X Forwarded")) {
		t.Error("isToken reads a name wrongly")
	}
}

// A head that arrives a byte at a time (over TLS, a one-byte record is
// one read, however the records are packed on the wire) costs the server
// work in proportion to its length, not to its square: each read searches
// only the bytes that arrived since the last. Searching the whole head
// again on every read cost ~2 s of CPU for one 64 KiB head, which a
// client sends in a ~1.5 MB burst of records.
func TestFramingTrickledHeadIsLinear(t *testing.T) {
	if raceDetector {
		t.Skip("timings under the race detector measure the detector")
	}
	feedTime := func(head []byte) time.Duration {
		c := newFramingConn(nil, nil, framingOptions{maxHead: (64 << 10) + 4096, log: slog.New(slog.DiscardHandler)})
		start := time.Now()
		for i := range head {
			c.in = append(c.in, head[i])
			c.feed()
		}
		d := time.Since(start)
		if c.refusal != "" || !strings.HasSuffix(string(c.out), "\r\n\r\n") {
			t.Fatalf("head of %d bytes not passed on whole: %q", len(head), c.out[:min(len(c.out), 40)])
		}
		return d
	}
	for _, tc := range []struct {
		name string
		head func(n int) string // a head of about n bytes
	}{
		{"one long header", func(n int) string { return "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", n) + "\r\n\r\n" }},
		{"many headers", func(n int) string {
			return "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-B: bb\r\n", n/9) + "\r\n"
		}},
		{"after empty lines", func(n int) string {
			return "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nX-C: " + strings.Repeat("c", n) + "\r\n\r\n"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := func(n int) []byte { return []byte(tc.head(n)) }
			// Linear work gives a ratio near 8, quadratic near 64. The
			// best of several pairs, each measured back to back, is what
			// the code costs rather than what other processes took.
			ratio, small, large := math.Inf(1), time.Duration(0), time.Duration(0)
			for range 7 {
				s, l := feedTime(head(8<<10)), feedTime(head(64<<10))
				if r := float64(l) / float64(s); r < ratio {
					ratio, small, large = r, s, l
				}
			}
			if ratio > 24 {
				t.Fatalf("a head of 64 KiB fed a byte at a time took %v, one of 8 KiB %v: %.0f times as long (searched again on every read)", large, small, ratio)
			}
		})
	}
}
