package mask

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// A stream that begins inside a secret (a ranged download, `tail -c`, a
// log viewer resuming at a byte offset) must not show the secret's tail
// when 8 bytes or more of it came; one that stops inside a secret (the
// command exits, the body ends) must not show its beginning either. Only
// the very start and end of a stream are looked at this way.
func TestStreamCutInsideSecret(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	b64 := base64.StdEncoding.EncodeToString([]byte(s))
	m := newTestMatcher(t, s)
	tests := []struct {
		name, in, want string
		gone           string // must not be in the output ("" : nothing)
	}{
		{"tail at the start", s[5:] + " rest\n", "*** rest\n", s[5:]},
		{"tail of 8 bytes", s[len(s)-8:] + "\n", "***\n", s[len(s)-8:]},
		{"tail of 7 bytes shows", s[len(s)-7:] + "\n", s[len(s)-7:] + "\n", ""},
		{"tail of the base64 form", b64[9:] + "\n", "***\n", b64[9:]},
		{"tail, then the whole secret", s[3:] + " " + s + "\n", "*** ***\n", s[3:]},
		{"tail not at the start", "x" + s[5:] + "\n", "x" + s[5:] + "\n", ""},
		{"no tail, a gram of it", s[3:12] + "X and more\n", s[3:12] + "X and more\n", ""},
		{"beginning at the end", "token: " + s[:12], "token: ***", s[:12]},
		{"beginning of 7 bytes at the end shows", "token: " + s[:7], "token: " + s[:7], ""},
		{"a piece inside", s[3:15], "***", s[3:15]},
		{"a piece of 7 bytes", s[3:10], s[3:10], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			for cut := 0; cut <= len(in); cut++ {
				out := string(maskParts(t, m, in, cut))
				if out != tt.want {
					t.Fatalf("writes cut at %d: %q, want %q", cut, out, tt.want)
				}
				st := m.NewStream(StreamOptions{KeepLength: true})
				kept := st.Flush(st.Mask(st.Mask(nil, in[:cut]), in[cut:]), MinSecretLen)
				if len(kept) != len(in) || tt.gone != "" && bytes.Contains(kept, []byte(tt.gone)) {
					t.Fatalf("KeepLength stream cut at %d: %q", cut, kept)
				}
			}
			if got := m.MaskStringTail(tt.in, MinSecretLen); got != tt.want {
				t.Fatalf("MaskStringTail: %q, want %q", got, tt.want)
			}
		})
	}
	// The start is masked only at the stream's start: a Flush ends it.
	st := m.NewStream(StreamOptions{})
	out := st.Flush(st.Mask(nil, []byte("ok ")), MinSecretLen)
	out = st.Flush(st.Mask(out, []byte(s[5:]+"\n")), MinSecretLen)
	if want := "ok " + s[5:] + "\n"; string(out) != want {
		t.Fatalf("after a flush: %q, want %q", out, want)
	}
}

// The start of a stream is held only while it may still be a form's
// tail: ordinary text goes out at once.
func TestStreamStartNotHeld(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	var out bytes.Buffer
	w0 := m.NewWriter(&out, Options{Idle: -1})
	if _, _ = w0.Write([]byte("hello\n")); out.String() != "hello\n" {
		t.Fatalf("a short first write: wrote %q", out.String())
	}
	out.Reset()
	w := m.NewWriter(&out, Options{Idle: -1})
	_, _ = w.Write([]byte("plain-Se"))
	if out.Len() != 0 {
		t.Fatalf("wrote %q before it can tell", out.String())
	}
	_, _ = w.Write([]byte("cXet and more"))
	if want := "plain-SecXet and more"; out.String() != want {
		t.Fatalf("wrote %q, want %q", out.String(), want)
	}
	out.Reset()
	w2 := m.NewWriter(&out, Options{Idle: -1})
	_, _ = w2.Write([]byte(strings.Repeat("build ok ", 10)))
	if out.Len() != 90 {
		t.Fatalf("held %d bytes of plain text", 90-out.Len())
	}
}

// radixSort orders by gram whatever the bytes, including 0xff ones (a
// byte-typed bucket index once overflowed there).
func TestRadixSort(t *testing.T) {
	tests := []struct {
		name string
		gs   []uint64
	}{
		{"empty", nil},
		{"one", []uint64{7}},
		{"high bytes", []uint64{0xffffffffffffffff, 0, 0xff, 0xff00000000000000, 0x00ff00ff00ff00ff, 0xff}},
		{"one value of most bytes", []uint64{0x0101010101010103, 0x0101010101010101, 0x0101010101010102}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	var many []uint64
	for range 5000 {
		many = append(many, r.Uint64()>>(8*r.IntN(8)))
	}
	tests = append(tests, struct {
		name string
		gs   []uint64
	}{"random", many})
	for _, tt := range tests {
		es := make([]headEntry, len(tt.gs))
		for i, g := range tt.gs {
			es[i] = headEntry{g: g, v: int32(i)}
		}
		got := radixSort(es, make([]headEntry, len(es)))
		want := slices.Clone(tt.gs)
		slices.Sort(want)
		for i := range want {
			if got[i].g != want[i] || tt.gs[got[i].v] != got[i].g {
				t.Fatalf("%s: at %d got %#x (node %d), want %#x", tt.name, i, got[i].g, got[i].v, want[i])
			}
		}
	}
}
