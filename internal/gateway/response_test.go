package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mask"
)

// hostileCred needs escaping in URLs and JSON, as real credentials may.
const hostileCred = `ghp_Hostile/Cred+val="x"\0123456789ab`

func TestContentCodings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lines  []string
		decode bool   // the body is decoded as gzip
		refuse string // the refusal's reason ("" none)
	}{
		{"none", nil, false, ""},
		{"identity", []string{"identity"}, false, ""},
		{"empty", []string{""}, false, ""},
		{"gzip", []string{"gzip"}, true, ""},
		{"x-gzip, odd case and blanks", []string{" \tX-GZip "}, true, ""},
		{"identity line then gzip line", []string{"identity", "gzip"}, true, ""},
		{"empty line then gzip line", []string{"", "gzip"}, true, ""},
		{"list with identity and empties", []string{" , identity,,gzip, "}, true, ""},
		{"gzip twice in a list", []string{"gzip, gzip"}, false, "stacked content codings gzip, gzip"},
		{"gzip on two lines", []string{"gzip", "GZIP"}, false, "stacked content codings gzip, gzip"},
		{"deflate then gzip", []string{"deflate", "gzip"}, false, "stacked content codings deflate, gzip"},
		{"br", []string{"br"}, false, "content coding br is not decoded by the gateway"},
		{"deflate", []string{"Deflate"}, false, "content coding deflate is not decoded by the gateway"},
		{"zstd", []string{"zstd"}, false, "content coding zstd is not decoded by the gateway"},
		{"compress", []string{"compress"}, false, "content coding compress is not decoded by the gateway"},
		{"a secret as the coding", []string{hostileCred}, false, "content coding unknown is not decoded by the gateway"},
		{"gzip then unknown", []string{"gzip;q=1"}, false, "content coding unknown is not decoded by the gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var zb bytes.Buffer
			zw := gzip.NewWriter(&zb)
			zw.Write([]byte("plain body"))
			zw.Close()
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Length": {fmt.Sprint(zb.Len())}},
				Body: io.NopCloser(bytes.NewReader(zb.Bytes())), ContentLength: int64(zb.Len())}
			if tc.lines != nil {
				resp.Header["Content-Encoding"] = tc.lines
			}
			err := decodeBody(resp, DefaultMaxGzipRatio)
			if tc.refuse != "" {
				ee, ok := err.(*encodingError)
				if !ok || ee.why != tc.refuse {
					t.Fatalf("err %v, want refusal %q", err, tc.refuse)
				}
				if strings.Contains(err.Error(), "Hostile") {
					t.Fatal("the refusal repeats the upstream's value")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("Content-Encoding %q left", resp.Header.Get("Content-Encoding"))
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.decode != (string(body) == "plain body") || tc.decode && (resp.ContentLength != -1 || resp.Header.Get("Content-Length") != "") {
				t.Fatalf("decode %v: body %q, length %d %q", tc.decode, body, resp.ContentLength, resp.Header.Get("Content-Length"))
			}
		})
	}
	// Without a body there is nothing to decode or refuse.
	resp := &http.Response{StatusCode: 304, Header: http.Header{"Content-Encoding": {"br"}}, Body: http.NoBody}
	if err := decodeBody(resp, DefaultMaxGzipRatio); err != nil || resp.Header.Get("Content-Encoding") != "br" {
		t.Fatalf("304: %v %v", err, resp.Header)
	}
	// A body that only claims to be gzip is refused before anything goes out.
	resp = &http.Response{StatusCode: 200, Header: http.Header{"Content-Encoding": {"gzip"}}, Body: io.NopCloser(strings.NewReader("not gzip")), ContentLength: -1}
	if err, ok := decodeBody(resp, DefaultMaxGzipRatio).(*encodingError); !ok || err.why != "malformed gzip body" {
		t.Fatalf("malformed gzip: %v", err)
	}
}

// Any Content-Encoding lines are either refused, naming only registered
// codings, or leave a body with no Content-Encoding left.
func FuzzContentCodings(f *testing.F) {
	f.Add("identity", "gzip")
	f.Add("", " GZIP")
	f.Add("br, gzip", "")
	f.Add("x-gzip,,", "identity")
	f.Fuzz(func(t *testing.T, a, b string) {
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Encoding": {a, b}},
			Body: io.NopCloser(strings.NewReader("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00")), ContentLength: -1}
		err := decodeBody(resp, DefaultMaxGzipRatio)
		if ee, ok := err.(*encodingError); ok {
			for _, w := range strings.FieldsFunc(strings.TrimPrefix(strings.TrimPrefix(ee.why, "stacked content codings "), "content coding "), func(r rune) bool { return r == ',' || r == ' ' }) {
				if w != "unknown" && !knownCodings[w] && !strings.Contains("is not decoded by the gateway", w) {
					t.Fatalf("refusal %q names %q", ee.why, w)
				}
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(contentCodings(resp.Header)) != 0 {
			t.Fatalf("codings left: %q", resp.Header["Content-Encoding"])
		}
	})
}

// leakForms are the ways a reflecting upstream sends a value back, written
// here independently of internal/mask: each with the piece that must not
// come out readable (the middle third of the encoded value).
func leakForms(v string) []struct{ name, body, mid string } {
	var out []struct{ name, body, mid string }
	add := func(name, body string) {
		out = append(out, struct{ name, body, mid string }{name, body, body[len(body)/3 : 2*len(body)/3]})
	}
	add("raw", v)
	for k, pre := range []string{"Bearer ", "Basic x", "Token xy"} {
		add(fmt.Sprintf("base64 std, alignment %d", k), base64.StdEncoding.EncodeToString([]byte(pre+v)))
		add(fmt.Sprintf("base64 url unpadded, alignment %d", k), base64.RawURLEncoding.EncodeToString([]byte(pre+v)))
	}
	add("hex", hex.EncodeToString([]byte(v)))
	add("HEX", strings.ToUpper(hex.EncodeToString([]byte(v))))
	add("percent, lower-case", lowerPct(url.QueryEscape(v)))
	add("percent path", url.PathEscape(v))
	j, _ := json.Marshal(v)
	add("json", string(j[1:len(j)-1]))
	add("json, every character escaped", uEscape(v, "%04x"))
	add("json, every character escaped, upper", uEscape(v, "%04X"))
	return out
}

func lowerPct(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			copy(b[i+1:i+3], strings.ToLower(string(b[i+1:i+3])))
		}
	}
	return string(b)
}

func uEscape(v, f string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(v)) {
		b.WriteString(`\u` + fmt.Sprintf(f, u))
	}
	return b.String()
}

func utf16Bytes(s string, order binary.ByteOrder) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, x := range u {
		order.PutUint16(b[2*i:], x)
	}
	return b
}

// readable is everything a client could read out of a response: the bytes,
// and the bytes as UTF-16 in either order and at either offset.
func readable(b []byte) string {
	var s strings.Builder
	s.Write(b)
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for off := 0; off < 2 && off < len(b); off++ {
			u := make([]uint16, (len(b)-off)/2)
			for i := range u {
				u[i] = order.Uint16(b[off+2*i:])
			}
			s.WriteString("\n" + string(utf16.Decode(u)))
		}
	}
	return s.String()
}

// hostileGateway is the harness's gateway with a credential that needs
// escaping, and the harness's upstream answering /repos/acme/app/hostile/
// with handler.
func hostileGateway(t *testing.T, h *harness, handler http.HandlerFunc) string {
	t.Helper()
	_, addr := hostileGatewayOf(t, h, handler)
	return addr
}

func hostileGatewayOf(t *testing.T, h *harness, handler http.HandlerFunc) (*Gateway, string) {
	t.Helper()
	gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{hostileCred}, Auditor: h.aud,
		ClientIP: clientip.New(nil), Registerer: nil, AuditTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	h.up.mu.Lock()
	h.up.hostile = handler
	h.up.mu.Unlock()
	return gw, srv.Listener.Addr().String()
}

// rawGet sends a GET on a fresh connection (accepting gzip and br) and
// returns the parsed response, its body as the client reads it (chunked
// framing removed; a gzip Content-Encoding decoded) and every byte that
// came back, followed by that decoded body, for searching.
func rawGet(t *testing.T, addr, target, tok string) (*http.Response, []byte, []byte) {
	t.Helper()
	return rawGetAccepting(t, addr, target, tok, "gzip, br")
}

func rawGetAccepting(t *testing.T, addr, target, tok, accept string) (*http.Response, []byte, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nAccept-Encoding: %s\r\nTE: trailers\r\nConnection: close\r\n\r\n", target, addr, tok, accept)
	all, _ := io.ReadAll(conn)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), nil)
	if err != nil {
		t.Fatalf("%s: %v in %q", target, err, all)
	}
	body, _ := io.ReadAll(resp.Body)
	if len(body) > 0 && resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: gzip body: %v", target, err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: gzip body: %v", target, err)
		}
		all = append(all, body...)
	}
	return resp, body, all
}

func TestHostileUpstreamResponses(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	secrets := map[string]string{"cred": hostileCred, "token": tok}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer "+hostileCred {
			http.Error(w, "no credential", 500)
			return
		}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/base/repos/acme/app/hostile/"), "/")
		v := secrets[r.URL.Query().Get("s")]
		forms := leakForms(v)
		switch parts[0] {
		case "ok":
			fmt.Fprint(w, `{"fine":true}`)
		case "body":
			var form string
			for _, f := range forms {
				if f.name == r.URL.Query().Get("f") {
					form = f.body
				}
			}
			switch r.URL.Query().Get("as") {
			case "utf16le":
				w.Write(utf16Bytes(`{"value":"`+form+`"}`, binary.LittleEndian))
			case "utf16be":
				w.Write(utf16Bytes(`{"value":"`+form+`"}`, binary.BigEndian))
			case "identity+gzip":
				w.Header()["Content-Encoding"] = []string{"identity", "gzip"}
				w.Write(gz([]byte(`{"value":"` + form + `"}`)))
			case "empty+gzip":
				w.Header()["Content-Encoding"] = []string{"", "gzip"}
				w.Write(gz([]byte(`{"value":"` + form + `"}`)))
			case "GZIP":
				w.Header()["Content-Encoding"] = []string{" GZIP "}
				w.Header().Set("Content-Length", fmt.Sprint(len(gz([]byte(form)))))
				w.Write(gz([]byte(form)))
			default:
				fmt.Fprintf(w, `{"value":"%s"}`, form)
			}
		case "headers":
			w.Header().Set("Trailer", "X-Leak-Trailer, "+tok)
			for i, f := range forms {
				w.Header().Set(fmt.Sprintf("X-Leak-%d", i), "v="+f.body)
			}
			w.Header().Set("Location", "https://evil.example/cb?c="+url.QueryEscape(v))
			w.WriteHeader(302)
			fmt.Fprint(w, "moved")
			w.Header().Set("X-Leak-Trailer", forms[1].body)
			w.Header().Set(tok, "x")
		case "ws":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			for _, f := range forms {
				wsWriteFrame(conn, true, 1, []byte("got "+f.body+" ok"), false)
				m := []byte("split " + f.body + " ok")
				wsWriteFrame(conn, false, 1, m[:len(m)/2], false)
				wsWriteFrame(conn, true, 9, []byte(v[:min(len(v), 100)]), false)
				wsWriteFrame(conn, true, 0, m[len(m)/2:], false)
				wsWriteFrame(conn, true, 2, utf16Bytes("utf16 "+f.body, binary.LittleEndian), false)
			}
			wsWriteFrame(conn, true, 8, nil, false)
		case "trailer-coding":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Encoding, X-Fine\r\n\r\n4\r\nbody\r\n0\r\n"+
				"Content-Encoding: br\r\nX-Fine: yes\r\nContent-Length: 99\r\n\r\n")
			brw.Flush()
		case "coding":
			w.Header()["Content-Encoding"] = strings.Split(r.URL.Query().Get("ce"), "|")
			body := []byte(v)
			for range strings.Count(r.URL.Query().Get("ce"), "gzip") {
				body = gz(body)
			}
			w.Write(body)
		}
	})
	// The neighbour that must work: an ordinary response.
	resp, body, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/ok", tok)
	if resp.StatusCode != 200 || string(body) != `{"fine":true}` {
		t.Fatalf("plain response: %d %q", resp.StatusCode, body)
	}
	noLeak := func(what string, all []byte) {
		t.Helper()
		text := readable(all)
		for name, s := range secrets {
			for _, f := range leakForms(s) {
				if strings.Contains(text, f.mid) {
					t.Fatalf("%s: %s of the %s came back: %q", what, f.name, name, all)
				}
			}
		}
	}
	for which := range secrets {
		for _, f := range leakForms(secrets[which]) {
			for _, as := range []string{"", "utf16le", "utf16be", "identity+gzip", "empty+gzip", "GZIP"} {
				what := fmt.Sprintf("%s %s as %q", which, f.name, as)
				resp, body, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/body?"+url.Values{"s": {which}, "f": {f.name}, "as": {as}}.Encode(), tok)
				if resp.StatusCode != 200 || !strings.Contains(readable(body), "***") {
					t.Fatalf("%s: %d %q", what, resp.StatusCode, body)
				}
				// A gzip body comes back gzip-encoded again (masked
				// first): rawGet accepts gzip.
				wantCE := ""
				if strings.Contains(strings.ToLower(as), "gzip") {
					wantCE = "gzip"
				}
				if resp.Header.Get("Content-Encoding") != wantCE {
					t.Fatalf("%s: Content-Encoding %q, want %q", what, resp.Header.Get("Content-Encoding"), wantCE)
				}
				noLeak(what, all)
			}
		}
		resp, body, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/headers?s="+which, tok)
		if resp.StatusCode != 302 || string(body) != "moved" || !strings.HasPrefix(resp.Header.Get("Location"), "https://evil.example/cb?c=***") {
			t.Fatalf("headers %s: %d %q %v", which, resp.StatusCode, body, resp.Header)
		}
		noLeak("headers "+which, all)
		if bytes.Contains(bytes.ToLower(all), bytes.ToLower([]byte(tok))) {
			t.Fatalf("headers %s: the token's letters came back in a name: %q", which, all)
		}
	}
	// WebSocket frames: every form, whole, split around a ping, in UTF-16.
	for which := range secrets {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /gw/api/repos/acme/app/hostile/ws?s=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", which, tok)
		all, _ := io.ReadAll(conn)
		conn.Close()
		br := bufio.NewReader(bytes.NewReader(all))
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("ws %s: %v %q", which, err, all)
		}
		frames := 0
		for {
			_, op, msg, err := wsReadFrame(br)
			if err != nil {
				break
			}
			frames++
			if op != 8 && !bytes.Contains(msg, []byte("*")) {
				t.Fatalf("ws %s: frame %d not masked: %q", which, frames, msg)
			}
		}
		if frames != 5*len(leakForms(secrets[which]))+1 {
			t.Fatalf("ws %s: %d frames came through", which, frames)
		}
		noLeak("ws "+which, all)
	}
	// A coding or length in the trailers is not passed on.
	resp, body, _ = rawGet(t, addr, "/gw/api/repos/acme/app/hostile/trailer-coding", tok)
	if resp.StatusCode != 200 || string(body) != "body" || resp.Trailer.Get("X-Fine") != "yes" ||
		resp.Trailer.Get("Content-Encoding") != "" || resp.Trailer.Get("Content-Length") != "" {
		t.Fatalf("trailers: %d %q %v", resp.StatusCode, body, resp.Trailer)
	}
	// Codings: one gzip behind no-ops is decoded; anything more is refused
	// and never forwarded, and the audit entry says why.
	for _, tc := range []struct {
		ce     string
		status int
		reason string
	}{
		{"identity|gzip", 200, ""},
		{"|gzip", 200, ""},
		{"identity, gzip", 200, ""},
		{"x-gzip", 200, ""},
		{"gzip, gzip", 502, "encoding: stacked content codings gzip, gzip"},
		{"gzip|gzip", 502, "encoding: stacked content codings gzip, gzip"},
		{"identity|gzip|gzip", 502, "encoding: stacked content codings gzip, gzip"},
		{"br", 502, "encoding: content coding br is not decoded by the gateway"},
		{"deflate", 502, "encoding: content coding deflate is not decoded by the gateway"},
		{"zstd", 502, "encoding: content coding zstd is not decoded by the gateway"},
		{"br|", 502, "encoding: content coding br is not decoded by the gateway"},
		{hostileCred, 502, "encoding: content coding unknown is not decoded by the gateway"},
	} {
		for which := range secrets {
			resp, body, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/coding?"+url.Values{"s": {which}, "ce": {tc.ce}}.Encode(), tok)
			if resp.StatusCode != tc.status {
				t.Fatalf("coding %q: %d %q", tc.ce, resp.StatusCode, body)
			}
			noLeak("coding "+tc.ce, all)
			if tc.status == 200 && string(body) != "***" {
				t.Fatalf("coding %q: body %q", tc.ce, body)
			}
			if tc.status != 502 {
				continue
			}
			found := false
			// The entry is written when the response is done; the wait
			// is long only for a loaded -race run, and ends at the entry.
			for deadline := time.Now().Add(30 * time.Second); !found && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				for _, e := range h.entries() {
					found = found || e.Reason == tc.reason
					raw, _ := json.Marshal(e)
					noLeak("audit entry", raw)
				}
			}
			if !found {
				t.Fatalf("coding %q: no entry with reason %q", tc.ce, tc.reason)
			}
		}
	}
}

// A body declared at least bigBody long goes through the large buffers
// (bigPool): the credential and the token are masked wherever they fall,
// also across the buffers' boundaries, the declared length holds, and a
// second response reusing the pooled buffers carries nothing of the first.
func TestLargeDeclaredBodyMasked(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	const size = 3 * bigBody / 2
	body := func(seed byte) []byte {
		b := bytes.Repeat([]byte{'a' + seed}, size)
		for _, at := range []int{0, bufSize - 5, bigBufSize - 7, bigBufSize + 40, 2*bigBufSize - 1, size - len(hostileCred)} {
			copy(b[at:], hostileCred)
		}
		copy(b[bigBufSize*3-10:], tok)
		return b
	}
	gw, addr := hostileGatewayOf(t, h, func(w http.ResponseWriter, r *http.Request) {
		b := body(byte(len(r.URL.Query().Get("n"))))
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	})
	for i, n := range []string{"1", "22", "1", "22"} {
		if i == 2 {
			// As many large bodies in flight as allowed: the next ones
			// take the usual buffers, masked the same.
			gw.bigBodies.Store(maxBigBodies)
		}
		resp, got, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/big?n="+n, tok)
		if resp.StatusCode != 200 || len(got) != size || resp.ContentLength != size {
			t.Fatalf("n=%s: status %d, %d bytes, Content-Length %d; want 200 and %d", n, resp.StatusCode, len(got), resp.ContentLength, size)
		}
		if bytes.Contains(all, []byte(hostileCred[:12])) || bytes.Contains(all, []byte(tok[:12])) {
			t.Fatalf("n=%s: a secret reached the client", n)
		}
		if c := bytes.Count(got, []byte("***")); c < 7 {
			t.Fatalf("n=%s: %d masked runs, want 7", n, c)
		}
		other := byte('a' + 3 - len(n)) // the other response's filler
		if bytes.IndexByte(got, other) >= 0 {
			t.Fatalf("n=%s: bytes of the earlier response came back", n)
		}
		if want := int64(min(i/2, 1) * maxBigBodies); gw.bigBodies.Load() != want {
			t.Fatalf("after request %d, %d large bodies counted in flight, want %d", i, gw.bigBodies.Load(), want)
		}
	}
}

// A header, trailer or 1xx header value that ends in a cut-off credential
// or token (an upstream that truncates what it echoes) is masked as a body
// ending so is: when at least mask.MinSecretLen bytes of it came.
func TestCutOffSecretInHeaderMasked(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	tests := []struct {
		name  string
		where string // header, trailer or early (a 103 response's header)
		value string
		want  string // the value as the client gets it
	}{
		{"credential minus 3", "header", hostileCred[:len(hostileCred)-3], "v=***"},
		{"credential's first 8 bytes", "header", hostileCred[:mask.MinSecretLen], "v=***"},
		{"credential's first 7 bytes", "header", hostileCred[:mask.MinSecretLen-1], "v=" + hostileCred[:mask.MinSecretLen-1]},
		{"token minus 3", "header", tok[:len(tok)-3], "v=***"},
		{"trailer", "trailer", hostileCred[:len(hostileCred)-3], "v=***"},
		{"1xx", "early", hostileCred[:len(hostileCred)-3], "v=***"},
	}
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		tt := tests[len(r.URL.Query().Get("i"))-1]
		v := "v=" + tt.value
		switch tt.where {
		case "header":
			w.Header().Set("X-Cut", v)
		case "trailer":
			w.Header().Set("Trailer", "X-Cut")
		case "early":
			w.Header().Set("X-Cut", v)
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("X-Cut")
		}
		fmt.Fprint(w, "fine")
		if tt.where == "trailer" {
			w.Header().Set("X-Cut", v)
		}
	})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, all := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/cut?i="+strings.Repeat("x", i+1), tok)
			if !bytes.Contains(all, []byte("\r\nX-Cut: "+tt.want+"\r\n")) {
				t.Fatalf("want X-Cut: %q in the %s, got %q", tt.want, tt.where, all)
			}
		})
	}
}

// Every gateway answer is sandboxed and not framed, whatever the upstream
// sent (its own CSP stays beside ours, a 1xx first changes nothing), and
// so are the gateway's own refusals: they come on the console's origin.
func TestAnswersSandboxed(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		switch strings.TrimPrefix(r.URL.Path, "/base/repos/acme/app/hostile/") {
		case "own-csp":
			w.Header().Set("Content-Security-Policy", "default-src *; script-src 'unsafe-inline'")
			w.Header().Set("X-Frame-Options", "ALLOWALL")
		case "early-hints":
			w.Header().Set("Link", "</x.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		case "br":
			w.Header().Set("Content-Encoding", "br")
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<script>fetch('/v1/auth/whoami')</script>")
	})
	for _, tc := range []struct {
		path, tok string
		status    int
		upCSP     string // the upstream's own CSP, kept
	}{
		{"html", tok, 200, ""},
		{"own-csp", tok, 200, "default-src *; script-src 'unsafe-inline'"},
		{"early-hints", tok, 200, ""},
		{"br", tok, 502, ""},
		{"html", "", 401, ""},
	} {
		t.Run(tc.path+fmt.Sprint(tc.status), func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+addr+"/gw/api/repos/acme/app/hostile/"+tc.path, nil)
			if tc.tok != "" {
				req.Header.Set("Authorization", "Bearer "+tc.tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			csp := resp.Header.Values("Content-Security-Policy")
			want := []string{sandboxCSP}
			if tc.upCSP != "" {
				want = []string{tc.upCSP, sandboxCSP}
			}
			if !slices.Equal(csp, want) {
				t.Errorf("Content-Security-Policy %q, want %q", csp, want)
			}
			if xfo := resp.Header.Values("X-Frame-Options"); !slices.Equal(xfo, []string{"DENY"}) {
				t.Errorf("X-Frame-Options %q, want DENY", xfo)
			}
		})
	}
}

// The headers set before the gateway runs (the API's nosniff, no-store and
// HSTS) reach the client on the final answer even when the upstream sends
// informational responses first: ReverseProxy clears the header map after
// relaying each one.
func TestPresetHeadersSurviveInformational(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	gw, _ := hostileGatewayOf(t, h, func(w http.ResponseWriter, r *http.Request) {
		for range len(r.URL.Query().Get("n")) {
			w.Header().Set("Link", "</x.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "fine")
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		gw.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	for _, n := range []string{"", "x", "xx"} {
		t.Run(fmt.Sprintf("%d informational", len(n)), func(t *testing.T) {
			// net/http's client skips the 1xx answers: this is the final one.
			req, _ := http.NewRequest("GET", srv.URL+"/gw/api/repos/acme/app/hostile/early?n="+n, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || string(body) != "fine" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			// The preset first, the upstream's after it, as without a 1xx.
			if got := resp.Header.Values("Cache-Control"); !slices.Equal(got, []string{"no-store", "max-age=60"}) {
				t.Errorf("Cache-Control = %q, want [no-store max-age=60]", got)
			}
		})
	}
}

// An upstream's HTML error page that quotes the Authorization header it got
// (Go's html/template, Python's html.escape) writes a credential's "+" as
// "&#43;" (html/template) and quotes as entities: base64-style secrets
// (AWS secret keys, many API keys) hold "+". A masker that knew no HTML
// entity form would let the whole credential reach the job, one entity
// away from its raw value (SPEC §5: no response ever contains the
// credential).
func TestProtoHTMLEscapedCredentialNotMasked(t *testing.T) {
	const cred = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" // AWS's documented example secret key
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{cred}, Auditor: h.aud,
		ClientIP: clientip.New(nil), AuditTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	page := template.Must(template.New("p").Parse(`<html><body><p>Invalid credentials: {{.}}</p></body></html>`))
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		page.Execute(w, r.Header.Get("Authorization"))
	})
	h.up.mu.Unlock()
	_, body, _ := rawGet(t, srv.Listener.Addr().String(), "/gw/api/repos/acme/app/hostile/page", tok)
	if got := html.UnescapeString(string(body)); strings.Contains(got, cred) {
		t.Fatalf("the credential came back HTML-escaped (html.UnescapeString of the page holds it whole): %s", body)
	}
}

// An upstream's answer reaches the client through whatever serves mayfly
// (README: set public_url behind a proxy). Headers that a front proxy acts
// on rather than passes (nginx's X-Accel-Redirect, an internal redirect to
// any location, `internal` ones too; Apache's and lighttpd's X-Sendfile,
// which serve a file of the proxy's machine, mayfly's keys among them) are
// instructions from mayfly, which never gives them: an upstream's are
// dropped, under any spelling.
func TestFrontProxyDirectivesDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	directives := []string{"X-Accel-Redirect", "X-Accel-Buffering", "X-Accel-Limit-Rate", "X-Accel-Expires",
		"X-Accel-Charset", "X_Accel_Redirect", "X-Sendfile", "X-Sendfile2", "X-Lighttpd-Send-File", "X-LIGHTTPD-send-tempfile"}
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		for _, d := range directives {
			w.Header()[d] = []string{"/etc/mayfly/master.key"}
		}
		w.Header().Set("X-Upstream", "kept")
		io.WriteString(w, "ok")
	})
	resp, _, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/x", tok)
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "kept" {
		t.Fatalf("status %d, X-Upstream %q", resp.StatusCode, resp.Header.Get("X-Upstream"))
	}
	for k, vs := range resp.Header {
		if slices.Contains(vs, "/etc/mayfly/master.key") {
			t.Errorf("the upstream's %s reached whatever serves mayfly", k)
		}
	}
}

// The answer comes on the console's origin: an upstream's Clear-Site-Data
// would clear the console's cookies (signing the admin out, as a Set-Cookie
// of mayfly's session would, which is dropped), its storage and cache.
// It is dropped, on every kind of answer a browser acts on.
func TestUpstreamClearSiteDataDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
		w.Header().Add("clear-site-data", `"*"`)
		if strings.HasSuffix(r.URL.Path, "/redirect") {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		io.WriteString(w, "ok")
	})
	for _, p := range []string{"x", "redirect"} {
		resp, _, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/"+p, tok)
		if v := resp.Header.Values("Clear-Site-Data"); len(v) > 0 {
			t.Errorf("%s: status %d carries the upstream's Clear-Site-Data %q", p, resp.StatusCode, v)
		}
	}
}

// The answer comes on the console's origin, where a browser keeps some
// headers as policy for the whole origin, long after the answer: an
// upstream's NEL with Report-To would have it report the URLs of every
// console request (success_fraction) to the upstream's collector for a
// year, Alt-Svc send the origin's traffic to another host, and
// Strict-Transport-Security turn mayfly's own HSTS off (max-age=0) or onto
// every subdomain. Those are mayfly's to set: an upstream's are dropped.
func TestUpstreamOriginPoliciesDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	policies := map[string]string{
		"NEL":                       `{"report_to":"up","max_age":31536000,"include_subdomains":true,"success_fraction":1.0}`,
		"Report-To":                 `{"group":"up","max_age":31536000,"endpoints":[{"url":"https://collector.example/r"}]}`,
		"Alt-Svc":                   `h2="other.example:443"; ma=31536000`,
		"Strict-Transport-Security": "max-age=0",
	}
	addr := hostileGateway(t, h, func(w http.ResponseWriter, r *http.Request) {
		for k, v := range policies {
			w.Header().Set(k, v)
		}
		io.WriteString(w, "ok")
	})
	resp, _, _ := rawGet(t, addr, "/gw/api/repos/acme/app/hostile/x", tok)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for k := range policies {
		if v := resp.Header.Values(k); len(v) > 0 {
			t.Errorf("the upstream's %s reached the browser on the console's origin: %q", k, v)
		}
	}
}

// The header set before the proxy ran is kept without allocating when it
// is the API's few, and restored first, whole, after informational answers
// cleared the map and appended to the kept values' arrays.
func TestPresetHeaderKeptAndRestored(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 7} {
		t.Run(fmt.Sprintf("%d keys", n), func(t *testing.T) {
			h := http.Header{}
			for i := range n {
				// Room to append in place: a 1xx's value must not show.
				v := make([]string, 1, 4)
				v[0] = fmt.Sprintf("preset-%d", i)
				h[fmt.Sprintf("X-Preset-%d", i)] = v
			}
			want := h.Clone()
			var p presetHeader
			if allocs := testing.AllocsPerRun(50, func() { p = presetHeader{}; p.keep(h) }); n <= 4 && allocs != 0 {
				t.Errorf("keep: %.0f allocations, want 0", allocs)
			}
			// What ReverseProxy does for a 1xx: append its header, write, clear.
			for k := range h {
				h[k] = append(h[k], "informational")
			}
			clear(h)
			h["X-Preset-0"] = []string{"final"} // the upstream's final header
			h.Set("Content-Type", "text/plain")
			p.restore(h)
			for k, v := range want {
				got := h[k]
				if k == "X-Preset-0" {
					v = append(slices.Clone(v), "final")
				}
				if !slices.Equal(got, v) {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if len(h) != max(n, 1)+1 {
				t.Errorf("restored header %v", h)
			}
		})
	}
}
