package gateway

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestExtractTokenRepeated(t *testing.T) {
	tok := mustToken(t)
	h := http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}
	if _, _, err := extractToken(func(k string) []string { return h[k] }); err != errRepeatedHeader {
		t.Fatalf("err = %v", err)
	}
}

func FuzzExtractToken(f *testing.F) {
	const tok = "mfy_0123456789ABCDEFGHIJabcdefghij" // not checksum-valid: seeds exercise parsing
	f.Add("Bearer "+tok, "")
	f.Add("Basic eDp5", "Bearer x")
	f.Add("", "Basic Og==")
	f.Fuzz(func(t *testing.T, authz, proxy string) {
		h := http.Header{}
		if authz != "" {
			h["Authorization"] = []string{authz}
		}
		if proxy != "" {
			h["Proxy-Authorization"] = []string{proxy}
		}
		got, scheme, err := extractToken(func(k string) []string { return h[k] })
		if err != nil {
			if got != "" || scheme != "" {
				t.Fatal("token returned with an error")
			}
			if len(authz) >= 12 && strings.Contains(err.Error(), authz) || len(proxy) >= 12 && strings.Contains(err.Error(), proxy) {
				t.Fatal("error quotes the header")
			}
			return
		}
		if !isJobToken(got) {
			t.Fatalf("returned %q, not a job token", got)
		}
		if !strings.Contains(authz+proxy, got) && scheme != "basic" {
			t.Fatalf("token %q not in headers", got)
		}
	})
}

func TestMaskBodySplits(t *testing.T) {
	secret := []byte("SECRETVALUE-1234567890")
	r := testRedactor(t, string(secret), "mfy_tokentokentokentokentokentokentoke")
	in := []byte("head SECRETVALUE-1234567890 mid U0VDUkVUVkFMVUUtMTIzNDU2Nzg5MA== SECRETVALUE-1234567890SECRETVALUE-1234567890 tail SECRETVALUE-12")
	// A shared pool: bodies after the first reuse the buffers an earlier
	// one gave back, which must hold nothing of it.
	shared := newBufPool(8, bufSize)
	pool := &shared
	for i, wrap := range []func(io.Reader) io.Reader{
		func(r io.Reader) io.Reader { return r },
		iotest.OneByteReader,
		iotest.HalfReader,
		iotest.DataErrReader,
		func(r io.Reader) io.Reader { return r },
		iotest.OneByteReader,
		iotest.HalfReader,
		iotest.DataErrReader,
	} {
		p := pool
		if i < 4 {
			p = nil
		}
		b := newMaskBody(io.NopCloser(wrap(bytes.NewReader(in))), r.m, p, true, nil)
		out, err := io.ReadAll(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("padded length %d, want %d", len(out), len(in))
		}
		if bytes.Contains(out, []byte("SECRETVALUE-12")) || bytes.Contains(out, []byte("U0VDUkVUVkFMVUU")) {
			t.Fatalf("leak: %s", out)
		}
		if !bytes.HasPrefix(out, []byte("head *** mid *** ***")) || !bytes.Contains(out, []byte("*** tail ***")) {
			t.Fatalf("out %q", out)
		}
	}
}

func TestMaskBodyBoundedOnPathologicalInput(t *testing.T) {
	r := testRedactor(t, "aaaaaaaaaa")
	b := newMaskBody(io.NopCloser(io.LimitReader(allA{}, 8<<20)), r.m, nil, false, nil)
	buf := make([]byte, 4096)
	for {
		_, err := b.Read(buf)
		if b.st.Held() > r.m.MaxHeld() || cap(b.out) > 2*bufSize+r.m.MaxHeld() {
			t.Fatalf("held %d, out %d", b.st.Held(), cap(b.out))
		}
		if err != nil {
			break
		}
	}
	if bytes.Contains(b.out, []byte("aaaaaaaaaa")) {
		t.Fatal("leak")
	}
}

type allA struct{}

func (allA) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func BenchmarkMaskBody(b *testing.B) {
	r := testRedactor(b, "ghp_UpstreamCredential0123456789abcdefXY", "mfy_tokentokentokentokentokentokentoke")
	data := bytes.Repeat([]byte(`{"id":12345,"name":"some value","url":"https://api.example.com/x"}`+"\n"), 16<<10)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		io.Copy(io.Discard, newMaskBody(io.NopCloser(bytes.NewReader(data)), r.m, nil, false, nil))
	}
}

// Header values are masked whatever their length relative to the forms:
// one exactly a form, one shorter than every form, one holding a form.
func TestMaskHeaderValues(t *testing.T) {
	r := testRedactor(t, "s3cr3t-value-1234", "abcdefgh", "mfy_tok-0123456789")
	for _, tc := range []struct{ in, want string }{
		{"abcdefgh", "***"},
		{"abcdefg", "abcdefg"},
		{"x", "x"},
		{"Bearer s3cr3t-value-1234", "Bearer ***"},
		{"mfy_tok-0123456789", "***"},
		{"mfy_tok", "mfy_tok"},
		{"", ""},
	} {
		h := http.Header{"X-A": {tc.in}}
		r.maskHeader(h)
		if got := h.Get("X-A"); got != tc.want {
			t.Errorf("maskHeader(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func testRedactor(t testing.TB, secrets ...string) *redactor {
	t.Helper()
	var bs [][]byte
	for _, s := range secrets {
		bs = append(bs, []byte(s))
	}
	r, err := newRedactor(bs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// BenchmarkNewRedactor is what the first request of each job token costs
// the gateway: the Matcher of the credential and the token.
func BenchmarkNewRedactor(b *testing.B) {
	for b.Loop() {
		if _, err := newRedactor([][]byte{[]byte("ghp_UpstreamCredential0123456789abcdefXY"), []byte("mfy_tokentokentokentokentokentokentoke")}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMaskSmallResponse is the masking of a typical small response:
// its headers and a 256-byte JSON body.
func BenchmarkMaskSmallResponse(b *testing.B) {
	r := testRedactor(b, "ghp_UpstreamCredential0123456789abcdefXY", "mfy_tokentokentokentokentokentokentoke")
	body := bytes.Repeat([]byte(`{"id":1,"v":"x"}`), 16)
	pool := newBufPool(4, bufSize)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Date": {"Fri, 04 Dec 2026 20:00:00 GMT"},
			"Link": {`<https://api.example.com/repos/acme/app/issues?page=2>; rel="next"`}, "X-Request-Id": {"4f3c2a1b-9d8e-4c7b-a6f5-0123456789ab"}}
		r.maskHeader(h)
		mb := newMaskBody(io.NopCloser(bytes.NewReader(body)), r.m, &pool, true, nil)
		io.Copy(io.Discard, mb)
	}
}
