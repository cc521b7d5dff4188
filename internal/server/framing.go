package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Strict HTTP/1 framing, below net/http.
//
// net/http accepts requests whose length another HTTP parser on the path
// (a front proxy, a load balancer) may read differently: both
// Content-Length and Transfer-Encoding (it drops the length and reads
// chunks, keeping the connection open), a Transfer-Encoding of "CHUNKED",
// repeated equal Content-Lengths, header lines ended by a bare LF. Such a
// request can carry a second request in its body past the front proxy
// (request smuggling): RFC 9112 section 6.1 says answer it and close the
// connection. framingConn reads each request head before net/http sees
// it, refuses any whose framing is not exactly one of "no body", one
// Content-Length of digits, or (HTTP/1.1) one "Transfer-Encoding:
// chunked", and follows the body (counting the length, or walking the
// chunks) to find where the next head starts. A refused head never reaches
// net/http: in its place the server reads a request for refusedPath, which
// guard answers 400 with the reason and Connection: close; nothing after
// it on the connection is read.
//
// It also bounds how slowly a body may arrive (MinBodyRate after
// BodyRateGrace, counting only the time the server is waiting to read), so
// that a client trickling a body cannot hold a connection.
//
// HTTP/2 connections (negotiated by ALPN) go to net/http as *tls.Conn:
// HTTP/2 frames carry their own lengths, and net/http refuses
// Transfer-Encoding there.

// framingOptions are the limits of a framingConn.
type framingOptions struct {
	maxHead   int           // the most bytes a request head may take
	minRate   float64       // body bytes per second, averaged over the time spent waiting
	grace     time.Duration // waiting allowed before the rate applies
	handshake time.Duration // TLS handshake timeout
	log       *slog.Logger
	// maxConns bounds the connections one address holds open (0: none);
	// peers in exempt (trusted proxies) are not counted (capListener).
	maxConns int
	exempt   []netip.Prefix
}

const refusedPrefix = "/.mayfly/refused/"

// framingListener wraps a TCP listener: it completes TLS handshakes itself
// (so that it can hand HTTP/2 connections to net/http as *tls.Conn) and
// wraps every HTTP/1 connection in a framingConn.
type framingListener struct {
	inner net.Listener
	tls   *tls.Config
	opts  framingOptions

	ready     chan net.Conn
	errc      chan error
	done      chan struct{}
	closeOnce sync.Once
}

func newFramingListener(inner net.Listener, tlsCfg *tls.Config, opts framingOptions) *framingListener {
	inner = newCapListener(inner, opts.maxConns, opts.exempt)
	l := &framingListener{inner: inner, tls: tlsCfg, opts: opts, done: make(chan struct{})}
	if tlsCfg != nil {
		l.ready, l.errc = make(chan net.Conn), make(chan error)
		go l.acceptTLS()
	}
	return l
}

func (l *framingListener) Addr() net.Addr { return l.inner.Addr() }

func (l *framingListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.inner.Close()
	})
	return err
}

func (l *framingListener) Accept() (net.Conn, error) {
	if l.tls == nil {
		c, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		return newFramingConn(c, nil, l.opts), nil
	}
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errc:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// acceptTLS accepts connections and shakes hands with each on its own
// goroutine, as net/http would, within opts.handshake.
func (l *framingListener) acceptTLS() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errc <- err:
			case <-l.done:
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // e.g. too many open files: do not spin
			continue
		}
		go l.handshake(c)
	}
}

func (l *framingListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.handshake)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.opts.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	var out net.Conn = tc
	if st := tc.ConnectionState(); st.NegotiatedProtocol != "h2" {
		fc := newFramingConn(tc, tc, l.opts)
		fc.tlsState = &st
		out = fc
	}
	select {
	case l.ready <- out:
	case <-l.done:
		c.Close()
	}
}

// framingConn checks the HTTP/1 request framing of one connection. Reads
// come from net/http's connection goroutine (and its background read, never
// at the same time); deadlines may be set from any goroutine.
type framingConn struct {
	net.Conn
	tlsConn  *tls.Conn
	tlsState *tls.ConnectionState
	opts     framingOptions

	// read side
	in, out []byte
	buf     []byte
	// The arrays of in and out, reused once all of either was consumed
	// (a fresh array per request was ~8 % of an exchange's allocation).
	// Each is at most a read (16 KiB) plus a head (maxHead) long.
	inBuf, outBuf []byte
	st            parseState
	remain        int64 // body or chunk bytes still to pass
	// headSeen is how many bytes at the start of in a head's search has
	// passed (no end, no bare LF): a head trickled in one-byte reads (TLS
	// records) is searched once, not again on every read.
	headSeen int
	dead     error // once set, every Read returns it
	// body rate: bytes that arrived and time spent waiting since the
	// current body began
	bodyBytes  int64
	bodyWaited time.Duration

	mu      sync.Mutex
	goDL    time.Time // the read deadline net/http asked for
	rateDL  time.Time // ours, while a body is being read (zero otherwise)
	refusal string    // why the connection's last head was refused
	status  int
	nonce   string
}

type parseState int

const (
	stHead parseState = iota
	stBody
	stChunkSize
	stChunkData
	stChunkEnd
	stTrailer
	stOpaque  // after a protocol switch: bytes are not HTTP
	stRefused // a refusal request was handed over; nothing more is read
)

var errSlowBody = errors.New("request body arrived below the minimum data rate")

func newFramingConn(c net.Conn, tc *tls.Conn, opts framingOptions) *framingConn {
	return &framingConn{Conn: c, tlsConn: tc, opts: opts}
}

// SetDeadline is called by net/http only when a handler hijacks the
// connection (a protocol switch, WebSocket): from then on its bytes are
// the handler's, not HTTP requests.
func (c *framingConn) SetDeadline(t time.Time) error {
	c.setState(stOpaque)
	c.SetReadDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *framingConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.goDL = t
	dl := earliest(t, c.rateDL)
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(dl)
}

// earliest of two deadlines, the zero time meaning none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// CloseWrite lets net/http half-close before closing (so a client reads
// the last answer rather than a reset).
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *framingConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.dead != nil {
			return 0, c.dead
		}
		c.mu.Lock()
		st := c.st
		c.mu.Unlock()
		if st == stRefused {
			// net/http has the refusal request buffered and will answer it
			// and close; until then, read and drop whatever else comes (an
			// EOF now would look like the client leaving, and cancel the
			// request still being served).
			if c.buf == nil {
				c.buf = make([]byte, 16<<10)
			}
			if _, err := c.Conn.Read(c.buf); err != nil {
				return 0, err
			}
			continue
		}
		if st == stOpaque && len(c.in) > 0 {
			c.out, c.in = c.in, nil
			continue
		}
		if c.buf == nil {
			c.buf = make([]byte, 16<<10)
		}
		inBody := st != stHead && st != stOpaque
		if inBody && c.opts.minRate > 0 {
			allow := c.opts.grace + time.Duration(float64(c.bodyBytes)/c.opts.minRate*float64(time.Second)) - c.bodyWaited
			c.mu.Lock()
			c.rateDL = time.Now().Add(max(allow, 0))
			dl := earliest(c.goDL, c.rateDL)
			c.mu.Unlock()
			c.Conn.SetReadDeadline(dl)
		}
		start := time.Now()
		n, err := c.Conn.Read(c.buf)
		if inBody && c.opts.minRate > 0 {
			c.bodyWaited += time.Since(start)
			c.mu.Lock()
			rateHit := !c.rateDL.IsZero() && !time.Now().Before(c.rateDL) && (c.goDL.IsZero() || c.rateDL.Before(c.goDL))
			c.rateDL = time.Time{}
			dl := c.goDL
			c.mu.Unlock()
			c.Conn.SetReadDeadline(dl)
			var ne net.Error
			if n == 0 && rateHit && errors.As(err, &ne) && ne.Timeout() {
				c.opts.log.Info("request body too slow; connection closed", "remote", c.RemoteAddr().String())
				c.dead = errSlowBody
				return 0, c.dead
			}
		}
		if n > 0 {
			if inBody {
				c.bodyBytes += int64(n)
			}
			if len(c.in) == 0 {
				// Nothing else refers to inBuf's bytes now: out is empty
				// (reads come only then), and feed copies what it passes.
				c.in = append(c.inBuf[:0], c.buf[:n]...)
				c.inBuf = c.in[:0]
			} else {
				c.in = append(c.in, c.buf[:n]...)
			}
			c.feed()
		}
		if err != nil && len(c.out) == 0 {
			if c.dead != nil {
				return 0, c.dead
			}
			return 0, err
		}
	}
}

// emit appends checked bytes to out, in outBuf's array when net/http has
// read all of out.
func (c *framingConn) emit(b []byte) {
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	c.out = append(c.outBuf[:0], b...)
	c.outBuf = c.out[:0]
}

// feed moves checked bytes from in to out, as far as they can be checked.
func (c *framingConn) feed() {
	for len(c.in) > 0 && c.dead == nil {
		c.mu.Lock()
		st := c.st
		c.mu.Unlock()
		switch st {
		case stOpaque:
			c.emit(c.in)
			c.in = nil
		case stRefused:
			c.in = nil
		case stHead:
			// An empty line before a request line is allowed (RFC 9112
			// section 2.2); drop it.
			for bytes.HasPrefix(c.in, []byte("\r\n")) {
				c.in = c.in[2:]
				c.headSeen = max(c.headSeen-2, 0)
			}
			// The end may straddle what was searched and what is new.
			from := max(c.headSeen-3, 0)
			end := bytes.Index(c.in[from:], []byte("\r\n\r\n"))
			if end < 0 {
				if i := bareLF(c.in, c.headSeen); i >= 0 {
					c.refuse(http.StatusBadRequest, "a bare CR or LF in the request head")
				} else if len(c.in) > c.opts.maxHead {
					c.refuse(http.StatusRequestHeaderFieldsTooLarge, "the request head is too large")
				}
				c.headSeen = len(c.in)
				return
			}
			end += from
			c.headSeen = 0
			head := c.in[:end+4]
			if len(head) > c.opts.maxHead {
				c.refuse(http.StatusRequestHeaderFieldsTooLarge, "the request head is too large")
				return
			}
			f, reason := checkHead(head)
			if reason != "" {
				c.refuse(http.StatusBadRequest, reason)
				return
			}
			c.emit(head)
			c.in = c.in[end+4:]
			c.bodyBytes, c.bodyWaited = int64(len(c.in)), 0
			switch {
			case f.chunked:
				c.setState(stChunkSize)
			case f.length > 0:
				c.remain = f.length
				c.setState(stBody)
			}
		case stBody, stChunkData:
			n := int(min(int64(len(c.in)), c.remain))
			c.emit(c.in[:n])
			c.in = c.in[n:]
			c.remain -= int64(n)
			if c.remain == 0 && st == stBody {
				c.setState(stHead)
			} else if c.remain == 0 {
				c.setState(stChunkEnd)
			}
		case stChunkEnd:
			if len(c.in) < 2 {
				return
			}
			if c.in[0] != '\r' || c.in[1] != '\n' {
				c.kill("malformed chunked request body")
				return
			}
			c.emit(c.in[:2])
			c.in = c.in[2:]
			c.setState(stChunkSize)
		case stChunkSize, stTrailer:
			i := bytes.IndexByte(c.in, '\n')
			if i < 0 {
				if len(c.in) > 4096 {
					c.kill("chunk line too long")
				}
				return
			}
			line := c.in[:i+1]
			if i == 0 || line[i-1] != '\r' || bytes.IndexByte(line[:i-1], '\r') >= 0 {
				c.kill("malformed chunked request body")
				return
			}
			text := line[:i-1]
			if st == stTrailer {
				if len(text) == 0 {
					c.setState(stHead)
				} else if !validFieldLine(text) {
					c.kill("malformed request trailer")
					return
				}
			} else {
				size, ok := chunkSize(text)
				if !ok {
					c.kill("malformed chunk size")
					return
				}
				if size == 0 {
					c.setState(stTrailer)
				} else {
					c.remain = size
					c.setState(stChunkData)
				}
			}
			c.emit(line)
			c.in = c.in[i+1:]
		}
	}
}

func (c *framingConn) setState(s parseState) {
	c.mu.Lock()
	c.st = s
	c.mu.Unlock()
}

// refuse replaces a refused head with a request for the refusal path, for
// guard to answer; nothing after it is read.
func (c *framingConn) refuse(status int, reason string) {
	var b [16]byte
	rand.Read(b[:])
	c.mu.Lock()
	c.st, c.refusal, c.status, c.nonce = stRefused, reason, status, hex.EncodeToString(b[:])
	c.mu.Unlock()
	c.in = nil
	c.out = append(c.out, "GET "+refusedPrefix+c.nonce+" HTTP/1.1\r\nHost: refused.invalid\r\nConnection: close\r\n\r\n"...)
	c.opts.log.Info("request framing refused", "remote", c.RemoteAddr().String(), "reason", reason)
}

// kill ends a connection whose body framing is broken: the handler reading
// the body gets an error, and net/http reads nothing more from it.
func (c *framingConn) kill(reason string) {
	c.opts.log.Info("request body framing refused", "remote", c.RemoteAddr().String(), "reason", reason)
	c.dead = errors.New(reason)
	c.in = nil
}

// refused returns the status and reason of a refusal request.
func (c *framingConn) refused(r *http.Request) (int, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refusal == "" || r.URL.Path != refusedPrefix+c.nonce {
		return 0, "", false
	}
	return c.status, c.refusal, true
}

// headFraming is what a request head says about its body.
type headFraming struct {
	length  int64
	chunked bool
}

// checkHead reads a request head (ending in CRLF CRLF) and returns its
// framing, or why it is refused.
func checkHead(head []byte) (headFraming, string) {
	var f headFraming
	// Lines are what lies between CRLFs; walked twice, without copying
	// them, so that a bare CR or LF anywhere is the reason given first.
	body := head[:len(head)-4]
	for rest, more := body, true; more; {
		var l []byte
		l, rest, more = bytes.Cut(rest, crlf)
		if bytes.IndexByte(l, '\r') >= 0 || bytes.IndexByte(l, '\n') >= 0 {
			return f, "a bare CR or LF in the request head"
		}
	}
	rl, rest, more := bytes.Cut(body, crlf)
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
	for more {
		var l []byte
		l, rest, more = bytes.Cut(rest, crlf)
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
		isCL, exactCL := nameIs(name, "content-length")
		isTE, exactTE := nameIs(name, "transfer-encoding")
		switch {
		case exactCL:
			cls++
			v := strings.Trim(string(value), " \t")
			if len(v) == 0 || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
				return f, "a Content-Length that is not a number"
			}
			f.length, _ = strconv.ParseInt(v, 10, 64)
		case exactTE:
			tes++
			te = strings.TrimLeft(string(value), " ")
		case isCL || isTE:
			return f, "a framing header spelled with '_' (" + string(name) + ")"
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

var crlf = []byte("\r\n")

// nameIs reports whether a header name (a token: ASCII) is target (lower
// case, with "-") in any case and with any "-" written as "_" (is), and
// whether it is so with every "-" as "-" (exact).
func nameIs(name []byte, target string) (is, exact bool) {
	if len(name) != len(target) {
		return false, false
	}
	exact = true
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		switch {
		case c == target[i]:
		case c == '_' && target[i] == '-':
			exact = false
		default:
			return false, false
		}
	}
	return true, exact
}

// isToken: b's characters are RFC 9110 token characters, by the table
// net/http itself reads header names with.
func isToken(b []byte) bool {
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// chunkSize parses a chunk-size line: hex digits, then optionally ";" and
// extensions without control characters.
func chunkSize(line []byte) (int64, bool) {
	size, ext, _ := bytes.Cut(line, []byte(";"))
	if len(size) == 0 || len(size) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range size {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	for _, c := range ext {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	return n, true
}

// validFieldLine: a trailer field "name: value" without obs-fold.
func validFieldLine(l []byte) bool {
	name, _, ok := bytes.Cut(l, []byte(":"))
	return ok && len(name) > 0 && isToken(name)
}

// bareLF returns the index of the first LF at or after from not preceded
// by CR, or -1.
func bareLF(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] == '\n' && (i == 0 || b[i-1] != '\r') {
			return i
		}
	}
	return -1
}

type framingConnKey struct{}

// framingConnContext makes a request's framingConn reachable from its
// context (http.Server.ConnContext).
func framingConnContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framingConn); ok {
		return context.WithValue(ctx, framingConnKey{}, fc)
	}
	return ctx
}

// guard answers the refusal requests of framingConns, and gives requests
// on a TLS framingConn their TLS state (net/http sets it only on a
// *tls.Conn).
func guard(next http.Handler, minRate float64, grace time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fc, ok := r.Context().Value(framingConnKey{}).(*framingConn); ok {
			if status, reason, ok := fc.refused(r); ok {
				h := w.Header()
				h.Set("Content-Type", "application/json")
				h.Set("Connection", "close")
				h.Set("Cache-Control", "no-store")
				w.WriteHeader(status)
				body, _ := json.Marshal(map[string]string{"error": "invalid_request", "error_description": "request refused: " + reason + "; the connection is closed"})
				w.Write(append(body, '\n'))
				return
			}
			if r.TLS == nil && fc.tlsState != nil {
				r.TLS = fc.tlsState
			}
			if r.ContentLength != 0 && !strings.HasPrefix(r.URL.EscapedPath(), "/gw/") {
				// The gateway closes a refused request's connection itself
				// (it streams bodies, so it knows when it has not read one).
				w = &unreadBounded{ResponseWriter: w, rc: http.NewResponseController(w)}
			}
		} else if r.ProtoMajor == 2 && minRate > 0 && strings.HasPrefix(r.URL.Path, "/gw/") && r.Body != nil && r.Body != http.NoBody {
			// HTTP/2 streams bypass framingConn: bound the gateway's
			// streamed bodies per stream (the API bounds its own small
			// bodies with a read deadline).
			r.Body = &rateBody{ReadCloser: r.Body, rc: http.NewResponseController(w), minRate: minRate, grace: grace}
		}
		next.ServeHTTP(w, r)
	})
}

// rateBody applies the minimum body data rate to one HTTP/2 request body
// through the stream's read deadline.
type rateBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	minRate float64
	grace   time.Duration
	n       int64
	waited  time.Duration
}

func (b *rateBody) Read(p []byte) (int, error) {
	allow := b.grace + time.Duration(float64(b.n)/b.minRate*float64(time.Second)) - b.waited
	start := time.Now()
	b.rc.SetReadDeadline(start.Add(max(allow, 0)))
	n, err := b.ReadCloser.Read(p)
	b.waited += time.Since(start)
	b.n += int64(n)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errSlowBody
	}
	return n, err
}

// unreadWindow bounds how long net/http waits for the part of a request
// body its handler left unread. It reads that part before it answers, to
// keep the connection (up to 256 KiB; more, and it closes): a body that is
// already arriving is dropped within the window and the connection kept
// (a refused leak report's costs less than a new TLS handshake), one that
// trickles is cut, so the request is answered at once and its connection
// closed.
const unreadWindow = 200 * time.Millisecond

// unreadBounded applies unreadWindow from the moment the handler answers.
type unreadBounded struct {
	http.ResponseWriter
	rc    *http.ResponseController
	armed bool
}

func (u *unreadBounded) arm() {
	if !u.armed {
		u.armed = true
		u.rc.SetReadDeadline(time.Now().Add(unreadWindow))
	}
}

func (u *unreadBounded) WriteHeader(code int) {
	if code >= 200 {
		u.arm()
	}
	u.ResponseWriter.WriteHeader(code)
}

func (u *unreadBounded) Write(p []byte) (int, error) {
	u.arm()
	return u.ResponseWriter.Write(p)
}

func (u *unreadBounded) Unwrap() http.ResponseWriter { return u.ResponseWriter }
