package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// utf16Text encodes s (valid UTF-8) as UTF-16 in the given byte order.
func utf16Text(s string, order binary.ByteOrder) []byte {
	units := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(units))
	for i, u := range units {
		order.PutUint16(b[2*i:], u)
	}
	return b
}

// decodeUTF16 decodes b (any length) as UTF-16 in the given byte order.
func decodeUTF16(b []byte, order binary.ByteOrder) string {
	units := make([]uint16, len(b)/2)
	for i := range units {
		units[i] = order.Uint16(b[2*i:])
	}
	return string(utf16.Decode(units))
}

// escapeAll writes every character of s as a JSON \uXXXX escape.
func escapeAll(s string, upper bool) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(s)) {
		if upper {
			fmt.Fprintf(&b, `\u%04X`, u)
		} else {
			fmt.Fprintf(&b, `\u%04x`, u)
		}
	}
	return b.String()
}

// TestReflectedForms: the forms an upstream reflecting a credential was
// seen to send back readable (issue 12): base64 of "Bearer <secret>" (the
// secret at another alignment inside a larger value), lower-case percent
// escapes, hex, JSON with every character \u-escaped, UTF-16 bodies.
// Each must come out without the secret in any readable form.
func TestReflectedForms(t *testing.T) {
	for _, secret := range []string{"ghp_R3flected/Credential+0123456789abc", "gr\u00fc\u00dfe-\u65e5\u672c-\U0001F511-key"} {
		m := newTestMatcher(t, secret)
		type tc struct {
			name string
			in   []byte
			// gone: what must not be in the output (beyond the secret).
			gone []string
			// decode: how a reader would decode the output.
			decode func([]byte) string
		}
		var cases []tc
		for _, pre := range []string{"Bearer ", "Basic x", "token=xy"} {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				e := enc.EncodeToString([]byte(pre + secret))
				cases = append(cases, tc{"base64 after " + pre, []byte(`{"auth":"` + e + `"}`), []string{e[len(e)/3 : 2*len(e)/3]}, nil})
			}
		}
		h := hex.EncodeToString([]byte(secret))
		cases = append(cases,
			tc{"hex lower", []byte("x=" + h), []string{h[len(h)/3 : 2*len(h)/3]}, nil},
			tc{"hex upper", []byte("x=" + strings.ToUpper(h)), []string{strings.ToUpper(h[len(h)/3 : 2*len(h)/3])}, nil},
			tc{"\\u lower", []byte(`{"a":"` + escapeAll(secret, false) + `"}`), []string{escapeAll(secret[4:12], false)}, nil},
			tc{"\\u upper", []byte(`{"a":"` + escapeAll(secret, true) + `"}`), []string{escapeAll(secret[4:12], true)}, nil},
		)
		for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, odd := range []string{"", "x"} { // the text at an odd byte offset too
				text := odd + string(utf16Text("before "+secret+" after", order))
				cases = append(cases, tc{fmt.Sprintf("UTF-16 %v %q", order, odd), []byte(text), nil, func(b []byte) string {
					b = b[len(odd):]
					return decodeUTF16(b, order) + decodeUTF16(b[1:], order)
				}})
				js := string(utf16Text(`{"a":"`+escapeAll(secret, false)+`"}`, order))
				cases = append(cases, tc{fmt.Sprintf("UTF-16 %v \\u", order), []byte(js), []string{escapeAll(secret[4:12], false)},
					func(b []byte) string { return decodeUTF16(b, order) + decodeUTF16(b[1:], order) }})
			}
		}
		for _, c := range cases {
			for _, cut := range []int{0, 1, len(c.in) / 2, len(c.in) - 1} {
				out := maskParts(t, m, c.in, cut)
				if !bytes.Equal(out, m.MaskBytes(c.in)) {
					t.Fatalf("%q %s: Writer and MaskBytes differ", secret, c.name)
				}
				readable := string(out)
				if c.decode != nil {
					readable += c.decode(out)
				}
				if strings.Contains(readable, secret) {
					t.Fatalf("%q %s cut at %d: secret readable in %q", secret, c.name, cut, out)
				}
				for _, g := range c.gone {
					if strings.Contains(readable, g) {
						t.Fatalf("%q %s: %q survives in %q", secret, c.name, g, out)
					}
				}
				if !bytes.Contains(out, []byte("***")) {
					t.Fatalf("%q %s: nothing masked", secret, c.name)
				}
			}
		}
	}
}

func TestFormsNewKinds(t *testing.T) {
	forms := map[string]bool{}
	for _, f := range Forms([]byte("abc-DEF/12")) {
		forms[string(f)] = true
	}
	for _, want := range []string{
		`\u0061\u0062\u0063\u002d\u0044\u0045\u0046\u002f\u0031\u0032`,
		`\u0061\u0062\u0063\u002D\u0044\u0045\u0046\u002F\u0031\u0032`,
		"a\x00b\x00c\x00-\x00D\x00E\x00F\x00/\x001\x002",                // UTF-16, either order
		"a\x00b\x00c\x00-\x00D\x00E\x00F\x00%\x002\x00f\x001\x002",      // lower-case percent, UTF-16
		string(utf16Text("YWJjLURFRi8xMg==", binary.LittleEndian)[:31]), // base64, UTF-16
	} {
		if !forms[want] {
			t.Errorf("Forms lacks %q", want)
		}
	}
	// Non-ASCII: both byte orders in full; bytes that are not UTF-8 get no
	// UTF-16 or \u form.
	forms = map[string]bool{}
	for _, f := range Forms([]byte("caf\u00e9-cr\u00e8me")) {
		forms[string(f)] = true
	}
	for _, o := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		if !forms[string(utf16Text("caf\u00e9-cr\u00e8me", o))] {
			t.Errorf("Forms lacks UTF-16 %v", o)
		}
	}
	for _, f := range Forms([]byte("bin\xff\xfe-ary-value")) {
		if bytes.Contains(f, []byte("\xff\x00")) || bytes.Contains(f, []byte("\x00\xff")) || bytes.Contains(f, []byte(`\u0062`)) {
			t.Errorf("invalid UTF-8 got form %q", f)
		}
	}
}

// A KeepLength stream keeps every byte's place: masked bytes become '*'.
func TestStreamKeepLength(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	in := []byte("a " + s + " b " + base64.StdEncoding.EncodeToString([]byte(s)) + " c " + s[:10])
	for cut := 0; cut <= len(in); cut++ {
		st := m.NewStream(StreamOptions{KeepLength: true})
		out := st.Mask(nil, in[:cut])
		out = st.Mask(out, in[cut:])
		out = st.Flush(out, MinSecretLen)
		if len(out) != len(in) {
			t.Fatalf("cut %d: %d bytes out of %d", cut, len(out), len(in))
		}
		want := "a " + strings.Repeat("*", len(s)) + " b " + strings.Repeat("*", len(base64.StdEncoding.EncodeToString([]byte(s)))) +
			" c " + strings.Repeat("*", 10)
		if string(out) != want {
			t.Fatalf("cut %d: %q, want %q", cut, out, want)
		}
	}
}

// Flush cuts the stream (a frame ends): a held beginning of a form of at
// least tail bytes is masked, a shorter one shows; either way the rest of
// the form, when the stream goes on, is masked.
func TestStreamFlushTail(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	for _, tc := range []struct {
		at   int
		want string
	}{
		{3, "x hun" + strings.Repeat("*", len(s)-3) + " y"},
		{4, "x " + strings.Repeat("*", len(s)) + " y"},
		{15, "x " + strings.Repeat("*", len(s)) + " y"},
	} {
		st := m.NewStream(StreamOptions{KeepLength: true})
		first := st.Flush(st.Mask(nil, []byte("x "+s[:tc.at])), 4)
		if len(first) != 2+tc.at || st.Held() != 0 {
			t.Fatalf("at %d: flush gave %q, held %d", tc.at, first, st.Held())
		}
		out := st.Flush(st.Mask(first, []byte(s[tc.at:]+" y")), 4)
		if string(out) != tc.want {
			t.Fatalf("at %d: %q, want %q", tc.at, out, tc.want)
		}
	}
	// Without KeepLength: a replacement for the masked start, and one for
	// the rest.
	st := m.NewStream(StreamOptions{})
	out := st.Flush(st.Mask(nil, []byte("x "+s[:10])), MinSecretLen)
	out = st.Flush(st.Mask(out, []byte(s[10:]+" y")), MinSecretLen)
	if string(out) != "x ****** y" {
		t.Fatalf("got %q", out)
	}
}

func TestMaskStringNoAlloc(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	clean := "application/json; charset=utf-8, and a longer header value with nothing in it"
	if n := testing.AllocsPerRun(100, func() { _ = m.MaskString(clean) }); n != 0 {
		t.Fatalf("MaskString of a clean value: %v allocations", n)
	}
	if got := m.MaskString("Bearer " + s); got != "Bearer ***" {
		t.Fatalf("got %q", got)
	}
	if got := m.MaskString("x\x1b[1m" + s[:4] + "\x1b[0m" + s[4:]); got != "x\x1b[1m***" {
		t.Fatalf("through an escape: %q", got)
	}
}

// MaskStringTail masks a value as a Stream masks a whole stream flushed
// with the same tail: a form cut off by the end is masked from tail bytes
// on; a clean value costs no allocation.
func TestMaskStringTail(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	b64 := base64.StdEncoding.EncodeToString([]byte(s))
	tests := []struct {
		name, in, want string
		tail           int
	}{
		{"whole", "Bearer " + s, "Bearer ***", MinSecretLen},
		{"cut", "v=" + s[:len(s)-3], "v=***", MinSecretLen},
		{"cut at tail bytes, shorter than any form", s[:MinSecretLen], "***", MinSecretLen},
		{"cut below tail", "v=" + s[:MinSecretLen-1], "v=" + s[:MinSecretLen-1], MinSecretLen},
		{"cut, tail 0", "v=" + s[:len(s)-3], "v=" + s[:len(s)-3], 0},
		{"cut base64", "v=" + b64[:len(b64)-4], "v=***", MinSecretLen},
		{"whole then cut", s + " " + s[:10], "*** ***", MinSecretLen},
		{"clean", "application/json; charset=utf-8", "application/json; charset=utf-8", MinSecretLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.MaskStringTail(tt.in, tt.tail); got != tt.want {
				t.Fatalf("MaskStringTail(%q, %d) = %q, want %q", tt.in, tt.tail, got, tt.want)
			}
			st := m.NewStream(StreamOptions{})
			if got := st.Flush(st.Mask(nil, []byte(tt.in)), tt.tail); string(got) != tt.want {
				t.Fatalf("a stream gives %q, MaskStringTail %q", got, tt.want)
			}
		})
	}
	clean := "application/json; charset=utf-8, and a longer header value with nothing in it"
	if n := testing.AllocsPerRun(100, func() { _ = m.MaskStringTail(clean, MinSecretLen) }); n != 0 {
		t.Fatalf("MaskStringTail of a clean value: %v allocations", n)
	}
}

func TestMatcherTableBound(t *testing.T) {
	secrets := benchSecrets(3)
	big, _ := NewMatcher(secrets)
	small, err := NewMatcherWith(secrets, MatcherOptions{TableBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if 4*len(small.a.dense) > 64<<10 && small.a.nDense > 1+int32(small.a.stride) || small.Size() >= big.Size() {
		t.Fatalf("bounded table %d bytes (%d total), unbounded %d", 4*len(small.a.dense), small.Size(), big.Size())
	}
	data := benchLog(secrets)[:256<<10]
	if !bytes.Equal(small.MaskBytes(data), big.MaskBytes(data)) {
		t.Fatal("a bounded table masks differently")
	}
}

// FuzzStream: any secret, planted in any new form (UTF-16, \u), in a
// stream cut anywhere, with frame ends (Flush) anywhere: a KeepLength
// stream keeps the length, changes bytes only to '*', and no form of the
// secret survives whole.
func FuzzStream(f *testing.F) {
	f.Add([]byte("hunter2-plain-Secret9"), []byte("some text around it"), uint(7), uint(3), uint8(0))
	f.Add([]byte("gr\u00fc\u00dfe-\u65e5\u672c-key"), []byte("x"), uint(0), uint(1), uint8(1))
	f.Add([]byte("abcdefgh"), []byte(""), uint(1), uint(0), uint8(2))
	f.Fuzz(func(t *testing.T, secret, text []byte, at, cuts uint, kind uint8) {
		if len(secret) < MinSecretLen || len(secret) > 64 || len(text) > 4096 || !utf8.Valid(secret) {
			return
		}
		m, err := NewMatcher([][]byte{secret})
		if err != nil {
			t.Fatal(err)
		}
		var planted []byte
		switch kind % 4 {
		case 0:
			planted = utf16Text(string(secret), binary.LittleEndian)
		case 1:
			planted = utf16Text(string(secret), binary.BigEndian)
		case 2:
			planted = []byte(escapeAll(string(secret), false))
		case 3:
			planted = []byte(escapeAll(string(secret), true))
		}
		p := int(at % uint(len(text)+1))
		in := append(append(append([]byte{}, text[:p]...), planted...), text[p:]...)
		st := m.NewStream(StreamOptions{KeepLength: true})
		var out []byte
		prev := 0
		for k := uint(0); k < 4; k++ {
			c := int((cuts >> (8 * k)) % uint(len(in)+1))
			if c < prev {
				continue
			}
			out = st.Mask(out, in[prev:c])
			if (cuts>>(32+k))&1 == 1 {
				out = st.Flush(out, 4)
			}
			prev = c
		}
		out = st.Flush(st.Mask(out, in[prev:]), 4)
		if len(out) != len(in) {
			t.Fatalf("%d bytes out of %d", len(out), len(in))
		}
		for i := range in {
			if out[i] != in[i] && out[i] != '*' {
				t.Fatalf("byte %d: %q became %q", i, in[i], out[i])
			}
		}
		// A form in the output made only of bytes the stream let through
		// unchanged is a form of the input that survived. One that takes
		// a star the masker wrote is not: a secret with '*' in it can be
		// spelt by the stars masking one form and the text after them
		// ("*00=000=" from a masked UTF-16 form followed by "00=000="),
		// which shows nothing of the secret that the input did not.
		for _, form := range Forms(secret) {
			for off := 0; ; {
				i := bytes.Index(out[off:], form)
				if i < 0 {
					break
				}
				i += off
				if bytes.Equal(in[i:i+len(form)], form) {
					t.Fatalf("form %q survives in %q", form, out)
				}
				off = i + 1
			}
		}
	})
}

// TestFormSplitEveryByte: every form of a secret, and each way the masker
// looks through text between a form's bytes ('\r', a colour
// code, base64 wrapped at 76, 64 and 60 columns, quoted-printable soft
// line breaks, those with a CI log's timestamp before each line), cut into two writes at every byte boundary (through the
// Writer and through a Stream) gives what masking it in one piece gives.
func TestFormSplitEveryByte(t *testing.T) {
	for _, secret := range []string{"hunter2-plain-Secret9", `p@ss w/rd"&<>\+%?#=;`, "gr\u00fc\u00dfe-\u65e5\u672c-\U0001F511-key"} {
		m := newTestMatcher(t, secret)
		type tc struct {
			name string
			form string
		}
		var cases []tc
		for i, f := range Forms([]byte(secret)) {
			cases = append(cases, tc{fmt.Sprintf("form %d", i), string(f)})
		}
		b64 := base64.StdEncoding.EncodeToString([]byte("Authorization: Bearer " + secret + " and the rest of a longer header line"))
		var qp bytes.Buffer
		w := quotedprintable.NewWriter(&qp)
		_, _ = w.Write([]byte(strings.Repeat("x", 60) + " token " + secret + " end"))
		_ = w.Close()
		cases = append(cases,
			tc{"carriage return inside", secret[:5] + "\r" + secret[5:]},
			tc{"colour code inside", secret[:6] + "\x1b[1;31m" + secret[6:]},
			tc{"base64 wrapped at 76", wrap(b64, 76, "\n")},
			tc{"base64 wrapped at 64, CRLF", wrap(b64, 64, "\r\n")},
			tc{"base64 wrapped at 60", wrap(b64, 60, "\n")},
			tc{"quoted-printable, soft break", qp.String()},
			tc{"quoted-printable, soft break, LF", strings.ReplaceAll(qp.String(), "\r\n", "\n")},
			tc{"base64 wrapped at 76, GitHub Actions timestamps", stampLines(wrap(b64, 76, "\n"), logPrefixes["GitHub Actions"])},
			tc{"base64 wrapped at 64, GitLab timestamps", stampLines(wrap(b64, 64, "\n"), logPrefixes["GitLab"])},
			tc{"quoted-printable, GitLab timestamps", stampLines(strings.ReplaceAll(qp.String(), "\r\n", "\n"), logPrefixes["GitLab"])},
		)
		for _, c := range cases {
			in := []byte("text before " + c.form + " and after\n")
			want := m.MaskBytes(in)
			if bytes.Equal(want, in) {
				t.Fatalf("%q, %s: precondition: %q is not masked in one piece", secret, c.name, in)
			}
			for cut := 0; cut <= len(in); cut++ {
				if got := maskParts(t, m, in, cut); !bytes.Equal(got, want) {
					t.Fatalf("%q, %s, cut %d: Writer %q, in one piece %q", secret, c.name, cut, got, want)
				}
				st := m.NewStream(StreamOptions{})
				if got := st.Flush(st.Mask(st.Mask(nil, in[:cut]), in[cut:]), MinSecretLen); !bytes.Equal(got, want) {
					t.Fatalf("%q, %s, cut %d: Stream %q, in one piece %q", secret, c.name, cut, got, want)
				}
			}
		}
	}
}

// A line that ends in a form's base64, padded ("…Mw==\n", as `base64`
// prints it), looks like a quoted-printable soft line break ("=\n") to the
// normalising thread, which removes that '=' and '\n' and so still holds a
// partial match when the stream is cut there. The cut (a body's end, an
// idle pause, the end of `mayfly mask`'s input) masks what began a form,
// and only that: the line end after it is no part of any form and shows,
// or every such line of a job's log ran into the next.
func TestCutKeepsLineEndAfterForm(t *testing.T) {
	const two, one = "supersecretvalue123", "a-secret-value-20-by" // base64 ends in "==" and in "="
	b2 := base64.StdEncoding.EncodeToString([]byte(two))
	b1 := base64.StdEncoding.EncodeToString([]byte(one))
	long := strings.Repeat("p4ssw0rdP4SSW0RD", 8)
	wrapped := base64.StdEncoding.EncodeToString([]byte(long))
	tests := []struct {
		name, secret, in, want string
	}{
		{"padded base64 ending the output", two, "x " + b2 + "\n", "x ***\n"},
		{"padded base64 alone", two, b2 + "\n", "***\n"},
		{"padded base64, CRLF", two, "x " + b2 + "\r\n", "x ***\r\n"},
		{"one padding byte", one, "x " + b1 + "\n", "x ***\n"},
		{"after another line", two, "first line\nx " + b2 + "\n", "first line\nx ***\n"},
		{"a wrapped line cut off", long, "k: " + wrapped[:76] + "\n", "k: ***\n"},
		{"no line end", two, "x " + b2, "x ***"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMatcher(t, tt.secret)
			if got := m.MaskStringTail(tt.in, MinSecretLen); got != tt.want {
				t.Errorf("MaskStringTail: %q, want %q", got, tt.want)
			}
			st := m.NewStream(StreamOptions{})
			if got := string(st.Flush(st.Mask(nil, []byte(tt.in)), MinSecretLen)); got != tt.want {
				t.Errorf("Stream.Flush: %q, want %q", got, tt.want)
			}
			var out bytes.Buffer
			w := m.NewWriter(&out, Options{})
			_, _ = w.Write([]byte(tt.in))
			if err := w.Close(); err != nil || out.String() != tt.want {
				t.Errorf("Writer.Close: %q %v, want %q", out.String(), err, tt.want)
			}
		})
	}
}
