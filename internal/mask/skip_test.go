package mask

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
)

// skipSecrets: a short one (the filter then uses 4-byte grams and a stride
// of 5), multi-line ones and one with an escape code, so that '\r', ESC
// and the normalising thread meet the filter; skipLongSecrets alone give
// 8-byte grams and a long stride; skipShortForm has a 6-byte form (its
// UTF-16), the shortest a secret can have: 4-byte grams, a stride of 3.
var (
	skipSecrets     = []string{"k9#Lm2!q", "line-one-aaaa\r\nline-two-bbbb\n", "tok_\x1b[1mABCDEFGHijkl", "hunter2-plain-Secret9-longer-value"}
	skipLongSecrets = []string{"ghp_0123456789abcdefABCDEF0123456789ab", "hunter2-plain-Secret9-longer-value", "pem-ish\r\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6\r\n"}
	skipShortForm   = []string{"\u00df\u65e5\u672c", "line-one-aaaa\r\nline-two-bbbb\n"}
)

type skipCase struct {
	m     *Matcher
	forms [][]byte
}

func newSkipCase(t testing.TB, secrets []string) skipCase {
	var bs [][]byte
	for _, s := range secrets {
		bs = append(bs, []byte(s))
	}
	m, err := NewMatcher(bs)
	if err != nil {
		t.Fatal(err)
	}
	if m.a.skip == nil {
		t.Fatal("no skip filter")
	}
	var forms [][]byte
	for _, s := range bs {
		forms = append(forms, Forms(s)...)
	}
	return skipCase{m: m, forms: forms}
}

var fillers = []string{"the build step ", "compiling ", "ok  \tpkg/x 0.01s\n", "sha256:9f86d081884c7d65 ", "line\r\n", "\x1b[32mINFO\x1b[0m ",
	"\r", "\x1b[", "\x1b[1;", "\x1b[0m", "\x1bX", "aaaa", "0123456789abcdef", "\x00", "\n", "=", "%2F"}

// skipStream builds a stream from prog: pieces of the secrets' forms (whole,
// cut, or with '\r' and escape codes inside), log-like filler and runs of
// plain text long enough to be skipped.
func skipStream(c skipCase, prog []byte) []byte {
	var b []byte
	next := func(k int) int {
		if k < len(prog) {
			return int(prog[k])
		}
		return k * 7
	}
	for k := 0; k < len(prog); k += 3 {
		op, x, y := prog[k]%10, next(k+1), next(k+2)
		form := c.forms[(x*31+y)%len(c.forms)]
		switch op {
		case 0:
			b = append(b, form...)
		case 1:
			b = append(b, form[:y%(len(form)+1)]...)
		case 2:
			b = append(b, form[y%(len(form)+1):]...)
		case 3:
			at := y % (len(form) + 1)
			ins := fillers[x%9]
			switch {
			case x&1 == 0:
				ins = "\r"
			case x&7 == 3:
				ins = "=\r\n" // a quoted-printable soft line break
			case x&7 == 7:
				ins = "=\n"
			}
			b = append(append(append(b, form[:at]...), ins...), form[at:]...)
		case 4, 5:
			b = append(b, fillers[(x+y)%len(fillers)]...)
		case 6:
			for range 1 + y%8 {
				b = append(b, "lorem ipsum dolor sit amet, consectetur adipiscing elit "...)
			}
		case 7:
			b = append(b, form...)
			b = append(b, form...)
		case 8:
			b = append(b, byte(x), byte(y))
		case 9:
			// A form cut by a wrap newline: base64 text filled up to a
			// line of 60, 64 or 76 characters (or near it) before the cut.
			at := y % (len(form) + 1)
			width := []int{64, 76, 60, 63, 77, 59}[x%6]
			b = append(b, '\n')
			b = append(b, bytes.Repeat([]byte("Qw9+"), max(0, width-at)/4+1)[:max(0, width-at)]...)
			b = append(append(append(b, form[:at]...), []string{"\n", "\r\n"}[x/4%2]...), form[at:]...)
		}
	}
	return b
}

// checkSkip masks stream cut at the lengths cut gives, with and without the
// skip filter, and fails at the first difference in output or held bytes.
func checkSkip(t testing.TB, c skipCase, stream []byte, cut *rand.Rand, tail int) {
	fast := c.m.NewStream(StreamOptions{})
	slow := c.m.NewStream(StreamOptions{})
	slow.s.exactOnly = true
	var outF, outS []byte
	for off := 0; off < len(stream); {
		n := 1 + cut.IntN(64)
		switch cut.IntN(4) {
		case 0:
			n = 1 + cut.IntN(4000)
		case 1:
			n = minSkipRun + cut.IntN(600)
		}
		n = min(n, len(stream)-off)
		part := stream[off : off+n]
		outF, outS = fast.Mask(outF, part), slow.Mask(outS, part)
		off += n
		if !bytes.Equal(outF, outS) || fast.Held() != slow.Held() {
			t.Fatalf("after %d bytes: skip gave %q (held %d), exact %q (held %d); stream %q",
				off, outF, fast.Held(), outS, slow.Held(), stream)
		}
	}
	outF, outS = fast.Flush(outF, tail), slow.Flush(outS, tail)
	if !bytes.Equal(outF, outS) {
		t.Fatalf("after flush: skip gave %q, exact %q; stream %q", outF, outS, stream)
	}
	whole := newScanner(c.m.a, DefaultReplacement)
	whole.scan(stream)
	exact := newScanner(c.m.a, DefaultReplacement)
	exact.exactOnly = true
	exact.scan(stream)
	if w, e := whole.emit(nil, stream, whole.pos), exact.emit(nil, stream, exact.pos); !bytes.Equal(w, e) {
		t.Fatalf("one call: skip gave %q, exact %q", w, e)
	}
	for _, f := range c.forms {
		if bytes.Contains(outF, f) {
			t.Fatalf("form %q survives in %q", f, outF)
		}
	}
}

// The skip filter only decides where the automaton runs: for any stream and
// any way of cutting it, the output and the bytes held are those of the
// automaton run over every byte.
func TestSkipMatchesExact(t *testing.T) {
	cases := []skipCase{newSkipCase(t, skipSecrets), newSkipCase(t, skipLongSecrets), newSkipCase(t, skipShortForm)}
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 4500 {
		c := cases[iter%3]
		prog := make([]byte, 3*(1+r.IntN(60)))
		for i := range prog {
			prog[i] = byte(r.Uint32())
		}
		checkSkip(t, c, skipStream(c, prog), rand.New(rand.NewPCG(uint64(iter), 5)), r.IntN(12))
	}
}

func FuzzSkipMatchesExact(f *testing.F) {
	cases := []skipCase{newSkipCase(f, skipSecrets), newSkipCase(f, skipLongSecrets), newSkipCase(f, skipShortForm)}
	f.Add([]byte{0, 1, 2, 6, 0, 3, 3, 4, 5, 0, 7, 9}, uint64(1))
	f.Add([]byte{6, 6, 6, 3, 1, 2, 3, 0, 0, 4, 4, 4, 1, 9, 9, 2, 8, 8}, uint64(2))
	f.Add([]byte("\x06\x07\x07\x03\x00\x01\x03\x02\x03\x06\x01\x01\x00\x02\x05"), uint64(3))
	f.Fuzz(func(t *testing.T, prog []byte, seed uint64) {
		// Up to 50 pieces (~20 KiB): each run stays in milliseconds.
		if len(prog) > 150 {
			prog = prog[:150]
		}
		c := cases[seed%3]
		var tail [8]byte
		binary.LittleEndian.PutUint64(tail[:], seed)
		checkSkip(t, c, skipStream(c, prog), rand.New(rand.NewPCG(seed, 6)), int(tail[1]%12))
	})
}

// A secret's shortest forms are its UTF-16 ones when it is made of 3-byte
// characters: "ß日本" (8 bytes) is 6 bytes in UTF-16. They are masked like
// any other form, with the skip filter on (4-byte grams, a stride of 3).
func TestShortestForm(t *testing.T) {
	c := newSkipCase(t, []string{"ß日本"})
	if c.m.a.minLen != 6 || c.m.a.skip.q != 4 || c.m.a.skip.s != 3 {
		t.Fatalf("shortest pattern %d, grams of %d, stride %d; want 6, 4, 3", c.m.a.minLen, c.m.a.skip.q, c.m.a.skip.s)
	}
	filler := bytes.Repeat([]byte("log line, nothing to see; "), 20) // past minSkipRun
	for _, form := range [][]byte{[]byte("\x00\xdf\x65\xe5\x67\x2c"), []byte("\xdf\x00\xe5\x65\x2c\x67")} {
		for _, in := range [][]byte{form, append(append(slices.Clone(filler), form...), filler...)} {
			out := c.m.MaskBytes(in)
			if bytes.Contains(out, form) {
				t.Fatalf("UTF-16 form %q survives in %q", form, out)
			}
			st := c.m.NewStream(StreamOptions{KeepLength: true})
			if out := st.Flush(st.Mask(nil, in), 4); bytes.Contains(out, form) || len(out) != len(in) {
				t.Fatalf("stream: UTF-16 form %q survives in %q", form, out)
			}
		}
	}
}

// The skip filter's false hits cost a restart of the automaton each: as
// forms are added (each adds its leading grams), the filter must grow so
// that the benchmark's log with 100 secrets keeps below 2.5 % of checks
// hitting (2.5 % before the UTF-16 base64, quoted-printable and separated
// hex forms were added), and BenchmarkMask its throughput.
func TestSkipFilterHitRate(t *testing.T) {
	secrets := benchSecrets(100)
	m, err := NewMatcher(secrets)
	if err != nil {
		t.Fatal(err)
	}
	data := benchLog(secrets)
	f := m.a.skip
	hits, checks := 0, 0
	for i := 0; i+f.q <= len(data); i += f.s {
		checks++
		if f.has(data, i) {
			hits++
		}
	}
	if rate := float64(hits) / float64(checks); rate > 0.025 {
		t.Fatalf("%d of %d filter checks hit (%.1f %%), want at most 2.5 %%", hits, checks, 100*rate)
	}
}
