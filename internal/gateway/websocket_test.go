package gateway

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/lease"
)

// chunkConn serves src in reads of the given sizes (cycled), and records
// what is written to it.
type chunkConn struct {
	src   []byte
	sizes []int
	i     int
	wrote bytes.Buffer
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, max(1, c.sizes[c.i%len(c.sizes)]))
		c.i++
	}
	n = copy(p, c.src[:min(n, len(c.src))])
	c.src = c.src[n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) { return c.wrote.Write(p) }
func (c *chunkConn) Close() error                { return nil }

type wsFrame struct {
	fin     bool
	opcode  byte
	payload []byte
}

func encodeFrames(fs []wsFrame) []byte {
	var b bytes.Buffer
	for _, f := range fs {
		wsWriteFrame(&b, f.fin, f.opcode, f.payload, false)
	}
	return b.Bytes()
}

func decodeFrames(t *testing.T, b []byte) []wsFrame {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(b))
	var out []wsFrame
	for {
		fin, op, p, err := wsReadFrame(r)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("output frames: %v", err)
		}
		out = append(out, wsFrame{fin, op, p})
	}
}

const wsSecret = "ghp_SecretUpstreamCredential0123456789"

// maskFrames runs frames through a wsMasker that reads in the given sizes.
func maskFrames(t *testing.T, in []wsFrame, sizes []int) ([]wsFrame, error) {
	t.Helper()
	red := testRedactor(t, wsSecret)
	m := newWSMasker(&chunkConn{src: encodeFrames(in), sizes: sizes}, red.m)
	out, err := io.ReadAll(m)
	return decodeFrames(t, out), err
}

func TestWSMasker(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	bigWith := append(append(bytes.Clone(big), wsSecret...), big...)
	s := []byte(wsSecret)
	tests := []struct {
		name  string
		in    []wsFrame
		sizes []int
	}{
		{"one frame", []wsFrame{{true, 1, []byte("token " + wsSecret + " end")}}, nil},
		{"byte by byte", []wsFrame{{true, 1, []byte("token " + wsSecret + " end")}}, []int{1}},
		{"16-bit length", []wsFrame{{true, 2, append(bytes.Repeat([]byte("y"), 300), s...)}}, []int{7, 100}},
		{"64-bit length", []wsFrame{{true, 2, bigWith}}, []int{4096}},
		{"two frames", []wsFrame{{false, 1, s[:10]}, {true, 0, s[10:]}}, nil},
		{"short first part", []wsFrame{{false, 1, append([]byte("a"), s[:2]...)}, {true, 0, s[2:]}}, nil},
		{"three frames and a ping", []wsFrame{{false, 1, s[:6]}, {true, 9, []byte("ping")}, {false, 0, s[6:20]}, {true, 0, s[20:]}}, []int{3}},
		{"in a ping", []wsFrame{{true, 9, s}}, nil},
		{"base64 form", []wsFrame{{true, 1, []byte(base64.StdEncoding.EncodeToString(s))}}, nil},
		{"empty frames", []wsFrame{{false, 1, nil}, {false, 0, s[:12]}, {false, 0, nil}, {true, 0, s[12:]}}, nil},
		{"nothing to mask", []wsFrame{{true, 1, []byte("hello")}, {true, 10, nil}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := maskFrames(t, tc.in, tc.sizes)
			if err != nil {
				t.Fatal(err)
			}
			checkMasked(t, tc.in, out)
		})
	}
}

// checkMasked: same frames, lengths and opcodes; bytes changed only to
// '*'; no whole secret in the messages, and at most wsMinTail-1 bytes of
// it in a row.
func checkMasked(t *testing.T, in, out []wsFrame) {
	t.Helper()
	if len(in) != len(out) {
		t.Fatalf("%d frames in, %d out", len(in), len(out))
	}
	var all []byte
	for i := range in {
		if in[i].fin != out[i].fin || in[i].opcode != out[i].opcode || len(in[i].payload) != len(out[i].payload) {
			t.Fatalf("frame %d changed shape", i)
		}
		for j := range in[i].payload {
			if a, b := in[i].payload[j], out[i].payload[j]; a != b && b != '*' {
				t.Fatalf("frame %d byte %d: %q became %q", i, j, a, b)
			}
		}
		if in[i].opcode < 8 {
			all = append(all, out[i].payload...)
		} else if bytes.Contains(out[i].payload, []byte(wsSecret)) {
			t.Fatalf("control frame %d shows the secret", i)
		}
	}
	if bytes.Contains(all, []byte(wsSecret)) {
		t.Fatalf("the secret came through: %q", all)
	}
}

func TestWSMaskerRefuses(t *testing.T) {
	for name, raw := range map[string][]byte{
		"compressed (RSV1)":      {0xc1, 0x02, 'h', 'i'},
		"masked server frame":    {0x81, 0x82, 1, 2, 3, 4, 'h', 'i'},
		"fragmented control":     {0x09, 0x00},
		"long control":           {0x89, 126, 0, 200},
		"reserved opcode":        {0x83, 0x00},
		"64-bit length, top bit": {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1},
	} {
		m := newWSMasker(&chunkConn{src: raw}, testRedactor(t, wsSecret).m)
		if _, err := io.ReadAll(m); err != errWSFrame {
			t.Errorf("%s: %v, want errWSFrame", name, err)
		}
	}
}

// Any message cut into any frames, read in any chunks, comes out with the
// same frames and never shows the secret.
func FuzzWSMasker(f *testing.F) {
	f.Add([]byte("hello world"), uint16(3), []byte{5, 9}, []byte{1, 3})
	f.Add([]byte("x"), uint16(0), []byte{1, 1, 1}, []byte{2})
	f.Add(bytes.Repeat([]byte("ab"), 300), uint16(250), []byte{200, 17}, []byte{255})
	f.Fuzz(func(t *testing.T, data []byte, at uint16, cuts, sizes []byte) {
		if len(data) > 1<<16 || len(cuts) > 64 {
			return
		}
		pos := int(at) % (len(data) + 1)
		msg := append(append(bytes.Clone(data[:pos]), wsSecret...), data[pos:]...)
		var in []wsFrame
		op := byte(1)
		for _, c := range cuts {
			n := min(int(c), len(msg))
			in = append(in, wsFrame{false, op, bytes.Clone(msg[:n])})
			msg = msg[n:]
			op = 0
			if c%7 == 0 {
				in = append(in, wsFrame{true, 9, []byte("p")})
			}
		}
		in = append(in, wsFrame{true, op, msg})
		var sz []int
		for _, s := range sizes {
			sz = append(sz, int(s))
		}
		out, err := maskFrames(t, in, sz)
		if err != nil {
			t.Fatal(err)
		}
		checkMasked(t, in, out)
	})
}

// A WebSocket's entry said 0 bytes in and 0 out whatever crossed the
// tunnel: the counts came from the request body and the response writer,
// which an upgraded connection's frames bypass (the proxy copies the
// hijacked connections). An auditor reading the log for what a job sent
// to or fetched from an upstream saw nothing moved. The entry counts the
// frames' bytes each way as they pass.
func TestWebSocketBytesAudited(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs []string // sent one frame each; the upstream upper-cases them back
	}{
		{"one frame", []string{"hello"}},
		{"several, one long", []string{"a", strings.Repeat("x", 70000), "bye"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /gw/api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", tok)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			var sent, got bytes.Buffer
			for _, m := range tc.msgs {
				wsWriteFrame(io.MultiWriter(conn, &sent), true, 1, []byte(m), true)
				_, _, msg, err := wsReadFrame(br)
				if err != nil || string(msg) != strings.ToUpper(m) {
					t.Fatalf("echo of %d bytes: %d bytes, %v", len(m), len(msg), err)
				}
				wsWriteFrame(&got, true, 1, msg, false) // the frame as it came
			}
			conn.Close()
			deadline := time.Now().Add(5 * time.Second)
			for !hasEntry(h, func(e *audit.Entry) bool {
				return e.Path == "/ws" && e.Status == 101 && e.BytesIn == int64(sent.Len()) && e.BytesOut == int64(got.Len())
			}) {
				if time.Now().After(deadline) {
					for _, e := range h.entries() {
						if e.Path == "/ws" {
							t.Logf("entry: status %d, bytes in %d, out %d", e.Status, e.BytesIn, e.BytesOut)
						}
					}
					t.Fatalf("no entry of the WebSocket with %d bytes in and %d out", sent.Len(), got.Len())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
