package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSecrets covers plain, escape-needing, multi-line, binary and
// non-ASCII values.
var testSecrets = []string{
	"hunter2-plain-Secret9",
	`p@ss w/rd"&<>\+%?#=;`,
	"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\r\nAASCBKcwggSjAgEAAoIBAQC7\n  indented-line-xyz\nshort\n-----END KEY-----\n",
	"\x00\x01bin\xff\xfe\x1b\x7fary\x80\x10",
	"gr\u00fc\u00dfe-\u65e5\u672c-\U0001F511-key",
}

func newTestMatcher(t testing.TB, secrets ...string) *Matcher {
	t.Helper()
	var bs [][]byte
	for _, s := range secrets {
		bs = append(bs, []byte(s))
	}
	m, err := NewMatcher(bs)
	if err != nil {
		t.Fatalf("NewMatcher: %v", err)
	}
	return m
}

// allForms lists every form of every secret.
func allForms(secrets []string) [][]byte {
	var out [][]byte
	for _, s := range secrets {
		out = append(out, Forms([]byte(s))...)
	}
	return out
}

// maskParts writes in to a fresh Writer cut at the given offsets and returns
// the output after Close.
func maskParts(t testing.TB, m *Matcher, in []byte, cuts ...int) []byte {
	t.Helper()
	var out bytes.Buffer
	w := m.NewWriter(&out, Options{Idle: -1})
	prev := 0
	for _, c := range append(cuts, len(in)) {
		if n, err := w.Write(in[prev:c]); err != nil || n != c-prev {
			t.Fatalf("Write = %d, %v", n, err)
		}
		prev = c
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.Bytes()
}

func assertNoForm(t *testing.T, out []byte, forms [][]byte, ctx string) {
	t.Helper()
	for _, f := range forms {
		if bytes.Contains(out, f) {
			t.Fatalf("%s: form %q survives in %q", ctx, f, out)
		}
	}
}

func TestRefuseShort(t *testing.T) {
	for _, tc := range []struct {
		secret string
		ok     bool
	}{
		{"", false},
		{"1234567", false},
		{"\n\n\n\n\n\n\n", false},
		{"12345678", true},
	} {
		_, err := NewMatcher([][]byte{[]byte("long-enough-secret"), []byte(tc.secret)})
		if tc.ok != (err == nil) {
			t.Errorf("NewMatcher(%q) error = %v", tc.secret, err)
		}
		if err != nil && (!errors.Is(err, ErrShortSecret) ||
			err.Error() != "mask: secret shorter than 8 characters would mask common words; refusing") {
			t.Errorf("NewMatcher(%q) error = %q", tc.secret, err)
		}
		if err != nil && tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("error contains the secret")
		}
	}
}

func TestForms(t *testing.T) {
	has := func(forms [][]byte, f string) bool {
		for _, x := range forms {
			if string(x) == f {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		secret string
		want   []string
		not    []string
	}{
		{"hunter2-plain", []string{"hunter2-plain", "aHVudGVyMi1wbGFpbg==", "aHVudGVyMi1wbGFpbg",
			"68756e746572322d706c61696e", "68756E746572322D706C61696E"}, nil},
		{"a b/c\"d&e\n", []string{"a b/c\"d&e\n", "a+b%2Fc%22d%26e%0A", "a%20b%2Fc%22d%26e%0A", "a+b%2fc%22d%26e%0a",
			"a%20b%2Fc%22d&e%0A", "a%20b%2Fc%22d%26e%0A", `a b/c\"d&e\n`, `a b\/c\"d&e\n`, `a b/c\"d\u0026e\n`,
			"a b/c&quot;d&amp;e\n", "a b/c&#34;d&amp;e\n", "a b&#x2F;c&quot;d&amp;e\n"}, nil},
		{"line-one-aaaa\r\nline-two-bbbb\nshort\n", []string{"line-one-aaaa", "line-two-bbbb",
			base64.StdEncoding.EncodeToString([]byte("line-two-bbbb"))}, []string{"short"}},
		{"caf\u00e9-\U0001F511-key", []string{`caf\u00e9-\ud83d\udd11-key`}, nil},
	} {
		forms := Forms([]byte(tc.secret))
		for _, f := range tc.want {
			if !has(forms, f) {
				t.Errorf("Forms(%q) lacks %q; has %q", tc.secret, f, forms)
			}
		}
		for _, f := range tc.not {
			if has(forms, f) {
				t.Errorf("Forms(%q) has %q", tc.secret, f)
			}
		}
		for _, f := range forms {
			if len(f) < MinSecretLen {
				t.Errorf("Forms(%q) has short form %q", tc.secret, f)
			}
		}
	}
}

// TestBase64Alignment checks that the stable substring for the secret's
// offset occurs in the encoding of any blob around it.
func TestBase64Alignment(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range testSecrets {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
			for pre := 0; pre < 7; pre++ {
				for suf := 0; suf < 4; suf++ {
					blob := make([]byte, pre+len(s)+suf)
					for i := range blob {
						blob[i] = byte(r.Uint32())
					}
					copy(blob[pre:], s)
					stable := b64Stable(enc, []byte(s), pre%3)
					text := enc.EncodeToString(blob)
					if !strings.Contains(text, stable) {
						t.Fatalf("%q at %d: %q not in %q", s, pre, stable, text)
					}
				}
			}
		}
	}
}

// TestPercentMatchesGo checks percentEncode against the encoders of Go's
// net/url that percentSafe names, so that its table cannot drift from them.
func TestPercentMatchesGo(t *testing.T) {
	for _, s := range append(testSecrets, "a b/c;d,e?f$g&h+i:j=k@l~m*n!o'p(q)r#s%t") {
		for _, tc := range []struct {
			got, want string
		}{
			{percentEncode([]byte(s), "-_.~", "+", hexUpper), url.QueryEscape(s)},
			{percentEncode([]byte(s), "-_.~$&+:=@", "%20", hexUpper), url.PathEscape(s)},
		} {
			if tc.got != tc.want {
				t.Errorf("%q: percentEncode gives %q, net/url %q", s, tc.got, tc.want)
			}
		}
	}
}

// TestEncoderOutputs masks secrets as common encoders write them (literal
// outputs of each, not of Forms): each writes a character the same way
// wherever it occurs, in its own set of escaped characters and hex case.
func TestEncoderOutputs(t *testing.T) {
	for _, tc := range []struct {
		name, secret, reflected, leak string
	}{
		{"Gson = (base64 padding)", "dXNlcjpwYXNzd29yZDEyMw==", `{"auth":"Basic dXNlcjpwYXNzd29yZDEyMw\u003d\u003d"}`, "dXNlcjpwYXNzd29yZDEyMw"},
		{"Gson apostrophe", "it's-a-long-secret-value", `{"k":"it\u0027s-a-long-secret-value"}`, "s-a-long-secret-value"},
		{"PHP JSON_HEX_TAG", "tok<en>-secret-12345", `{"k":"tok\u003Cen\u003E-secret-12345"}`, "-secret-12345"},
		{"PHP JSON_HEX_* (Symfony)", `p&ss/w'rd<x>"y"-long`, `{"k":"p\u0026ss\/w\u0027rd\u003Cx\u003E\u0022y\u0022-long"}`, "-long"},
		{"System.Text.Json +", "AKIAx+y/z0Secret+Key", `{"k":"AKIAx\u002By/z0Secret\u002BKey"}`, "z0Secret"},
		{"Jackson ESCAPE_NON_ASCII", "gr\u00fc\u00dfe-secret-value", `{"k":"gr\u00FC\u00DFe-secret-value"}`, "e-secret-value"},
		// urllib.parse.quote (safe="/"), requests' and urllib's default
		// for paths: '+' is %2B but '/' stays. An AWS-style key.
		{"Python quote", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "GET /keys/wJalrXUtnFEMI/K7MDENG%2BbPxRfiCYEXAMPLEKEY", "bPxRfiCYEXAMPLEKEY"},
		{"Java URLEncoder", "abc~def*ghi-secret", "q=abc%7Edef*ghi-secret", "ghi-secret"},
		{".NET HttpUtility.UrlEncode", "abc+def~ghi=jkl!*", "q=abc%2bdef%7eghi%3djkl!*", "jkl"},
		{"JavaScript encodeURI", "pass word/x=1;y", "https://h/?pass%20word/x=1;y", "word/x"},
		// HTML and XML escapers, as a page quoting a credential writes it.
		{"Go html/template +", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", goTemplate(t, `<p>{{.}}</p>`, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"), "bPxRfiCYEXAMPLEKEY"},
		{"Go html/template unquoted attribute", "dXNlcjpwYXNzd29yZDEy+w==", goTemplate(t, `<a title={{.}}>`, "dXNlcjpwYXNzd29yZDEy+w=="), "dXNlcjpwYXNzd29yZDEy"},
		{"Go encoding/xml", `p&ss<w>"o'rd-secret`, "<k>" + xmlText(`p&ss<w>"o'rd-secret`) + "</k>", "rd-secret"},
		{"PHP htmlspecialchars", `it's"a&long-secret`, `<b>it&#039;s&quot;a&amp;long-secret</b>`, "long-secret"},
		{"PHP htmlspecialchars before 8.1", `it's"a&long-secret`, `<b>it's&quot;a&amp;long-secret</b>`, "long-secret"},
		{"Python html.escape", `it's"a&long-secret`, `<b>it&#x27;s&quot;a&amp;long-secret</b>`, "long-secret"},
		{"ASP.NET Core HtmlEncoder", "AKIAx+y/z0Secret+Key", "<td>AKIAx&#x2B;y/z0Secret&#x2B;Key</td>", "z0Secret"},
		{"mustache.js", "abc/def=ghi/secret", "<td>abc&#x2F;def&#x3D;ghi&#x2F;secret</td>", "ghi"},
		// OWASP ESAPI's encodeForHTML: every ASCII character but letters,
		// digits and ",.-_ " as an entity, &#xhh; where HTML 4 names none.
		{"OWASP ESAPI encodeForHTML", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "<td>wJalrXUtnFEMI&#x2f;K7MDENG&#x2b;bPxRfiCYEXAMPLEKEY</td>", "bPxRfiCYEXAMPLEKEY"},
		{"OWASP ESAPI encodeForHTML, named", `p&ss<w>"o'rd=secret:1`, "<td>p&amp;ss&lt;w&gt;&quot;o&#x27;rd&#x3d;secret&#x3a;1</td>", "secret"},
		// Spring's HtmlUtils.htmlEscapeDecimal and htmlEscapeHex.
		{"Spring htmlEscapeDecimal", `p&ss<w>"o'rd-secret`, "<td>p&#38;ss&#60;w&#62;&#34;o&#39;rd-secret</td>", "rd-secret"},
		{"Spring htmlEscapeHex", `p&ss<w>"o'rd-secret`, "<td>p&#x26;ss&#x3c;w&#x3e;&#x22;o&#x27;rd-secret</td>", "rd-secret"},
		// An echo service quoting the Authorization header it got, Basic
		// base64 of user:password: PHP's json_encode writes '/' as "\/",
		// System.Text.Json '+' as \u002B.
		{"PHP json_encode of a Basic header", "deploy:p4ss?w0rd>>~~Prod2024", `{"headers":{"Authorization":"Basic ZGVwbG95OnA0c3M\/dzByZD4+fn5Qcm9kMjAyNA=="}}`, "dzByZD4"},
		{"System.Text.Json of a Basic header", "deploy:p4ss?w0rd>>~~Prod2024", `{"authorization":"Basic ZGVwbG95OnA0c3M/dzByZD4\u002Bfn5Qcm9kMjAyNA=="}`, "fn5Qcm9k"},
		// Shells quoting a password with a quote in it: bash's and zsh's
		// set -x trace of a command, Python's shlex.quote (Ansible's and
		// subprocess wrappers' command logs).
		{"bash set -x", "it'sA-Passw0rd'x", `+ psql 'postgres://app:it'\''sA-Passw0rd'\''x@db/app'`, "sA-Passw0rd"},
		{"Python shlex.quote", "it'sA-Passw0rd'x", `running: psql 'postgres://app:it'"'"'sA-Passw0rd'"'"'x@db/app'`, "sA-Passw0rd"},
		// bash's double-quoted values (declare -p, export -p: a job
		// dumping its environment) and printf %q escape with backslashes.
		{"bash export -p", "P@$$w0rd\"x`1\\z", "declare -x DB_PASSWORD=\"P@\\$\\$w0rd\\\"x\\`1\\\\z\"", "w0rd"},
		{"bash printf %q", "Pa$$ w0rd!(x)-long", `Pa\$\$\ w0rd\!\(x\)-long`, "w0rd"},
		// YAML's single-quoted scalars (PyYAML, go-yaml dumping a value
		// that needs quoting) and SQL string literals double the quote.
		{"YAML single-quoted", "it'sA-Passw0rd: x", `password: 'it''sA-Passw0rd: x'`, "sA-Passw0rd"},
		{"SQL string literal", "it'sA-Passw0rd'x", `ALTER ROLE app PASSWORD 'it''sA-Passw0rd''x';`, "sA-Passw0rd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMatcher(t, tc.secret)
			if out := m.MaskBytes([]byte(tc.reflected)); bytes.Contains(out, []byte(tc.leak)) {
				t.Fatalf("escaped secret not masked: %s", out)
			}
		})
	}
}

// goTemplate executes an html/template with data.
func goTemplate(t *testing.T, text, data string) string {
	var b strings.Builder
	if err := template.Must(template.New("").Parse(text)).Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// xmlText is s as encoding/xml escapes text.
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// TestEveryForm feeds every form of every test secret, alone and inside
// base64 blobs, split at every byte boundary and at random pairs.
func TestEveryForm(t *testing.T) {
	m := newTestMatcher(t, testSecrets...)
	forms := allForms(testSecrets)
	r := rand.New(rand.NewPCG(3, 4))
	var inputs [][]byte
	for _, f := range forms {
		inputs = append(inputs, []byte("before "+string(f)+" after\n"))
	}
	for _, s := range testSecrets {
		for pre := 0; pre < 3; pre++ {
			blob := append(bytes.Repeat([]byte{'Z'}, pre), s...)
			blob = append(blob, "tail"...)
			inputs = append(inputs, []byte("b64="+base64.StdEncoding.EncodeToString(blob)+"\n"),
				[]byte("b64u="+base64.RawURLEncoding.EncodeToString(blob)+"\n"))
		}
	}
	for _, in := range inputs {
		check := func(out []byte, cuts []int) {
			assertNoForm(t, out, forms, fmt.Sprintf("%q cut at %v", in, cuts))
			if bytes.HasPrefix(in, []byte("before ")) && string(out) != "before *** after\n" {
				t.Fatalf("%q cut at %v: got %q", in, cuts, out)
			}
			if bytes.HasPrefix(in, []byte("b64")) && !bytes.Contains(out, []byte("***")) {
				t.Fatalf("%q: nothing masked: %q", in, out)
			}
		}
		whole := maskParts(t, m, in)
		check(whole, nil)
		if got := m.MaskBytes(in); !bytes.Equal(got, whole) {
			t.Fatalf("MaskBytes(%q) = %q, Writer gave %q", in, got, whole)
		}
		for i := 0; i <= len(in); i++ {
			if out := maskParts(t, m, in, i); !bytes.Equal(out, whole) {
				t.Fatalf("%q cut at %d: %q, want %q", in, i, out, whole)
			}
		}
		for k := 0; k < 20; k++ {
			a, b := r.IntN(len(in)+1), r.IntN(len(in)+1)
			out := maskParts(t, m, in, min(a, b), max(a, b))
			if !bytes.Equal(out, whole) {
				t.Fatalf("%q cut at %d,%d: %q, want %q", in, a, b, out, whole)
			}
		}
		// One byte per Write.
		cuts := make([]int, len(in))
		for i := range cuts {
			cuts[i] = i
		}
		if out := maskParts(t, m, in, cuts...); !bytes.Equal(out, whole) {
			t.Fatalf("%q byte by byte: %q, want %q", in, out, whole)
		}
	}
}

func TestPlainTextIntact(t *testing.T) {
	m := newTestMatcher(t, testSecrets...)
	for _, in := range []string{
		"",
		"hello world\n",
		"hunter2-plain-Secre\n", // a prefix only
		"\x1b[31mred\x1b[0m \r\n progress 50%\r",
		"unterminated \x1b[12",
		// Ends in 7 bytes of a secret: a stream's end masks 8 or more.
		strings.Repeat("hunter2-", 100) + "hunter2",
	} {
		for i := 0; i <= len(in); i++ {
			if out := maskParts(t, m, []byte(in), i); string(out) != in {
				t.Fatalf("%q cut at %d: %q", in, i, out)
			}
		}
		if out := m.MaskBytes([]byte(in)); string(out) != in {
			t.Fatalf("MaskBytes(%q) = %q", in, out)
		}
	}
}

// TestCRAndEscapes pins down what the normalising thread handles: '\r' and
// CSI sequences (ESC '[' params final) are looked through; other escapes are
// not.
func TestCRAndEscapes(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	const ml = "line-one-aaaa\nline-two-bbbb"
	m := newTestMatcher(t, s, ml, "ab\rcd\x1b[1mefgh-ij")
	for _, tc := range []struct{ name, in, want string }{
		{"colour around", "\x1b[31m" + s + "\x1b[0m\n", "\x1b[31m***\x1b[0m\n"},
		{"colour inside", "x " + s[:5] + "\x1b[1;31m" + s[5:] + "\x1b[0m y", "x ***\x1b[0m y"},
		{"several codes inside", s[:1] + "\x1b[1m" + s[1:2] + "\x1b[2m\x1b[3m" + s[2:] + "!", "***!"},
		{"erase code inside", s[:7] + "\x1b[K" + s[7:], "***"},
		{"cr inside", s[:3] + "\r" + s[3:] + "\r\n", "***\r\n"},
		{"cr before", "progress 10%\r" + s + "\n", "progress 10%\r***\n"},
		{"crlf multi-line", "line-one-aaaa\r\nline-two-bbbb\r\n", "***\r\n"},
		{"multi-line lines apart", "line-two-bbbb and line-one-aaaa", "*** and ***"},
		{"colour at line start", "line-one-aaaa\r\n\x1b[32mline-two-bbbb", "***"},
		{"secret holding cr and csi, literal", "ab\rcd\x1b[1mefgh-ij", "***"},
		{"secret holding cr and csi, bare", "abcdefgh-ij", "***"},
		{"not CSI: ESC ( B", s[:5] + "\x1b(B" + s[5:], s[:5] + "\x1b(B" + s[5:]},
		{"not CSI: too long", s[:5] + "\x1b[" + strings.Repeat("1", 33) + "m" + s[5:],
			s[:5] + "\x1b[" + strings.Repeat("1", 33) + "m" + s[5:]},
		// The first ESC fails to start a CSI and is kept: no longer the secret.
		{"ESC ESC [ m", s[:5] + "\x1b\x1b[m" + s[5:], s[:5] + "\x1b\x1b[m" + s[5:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			for i := 0; i <= len(in); i++ {
				if out := maskParts(t, m, in, i); string(out) != tc.want {
					t.Fatalf("cut at %d: got %q, want %q", i, out, tc.want)
				}
			}
			if out := m.MaskBytes(in); string(out) != tc.want {
				t.Fatalf("MaskBytes: got %q, want %q", out, tc.want)
			}
		})
	}
}

func TestMaskBytes(t *testing.T) {
	m := newTestMatcher(t, "hunter2-plain")
	in := []byte("nothing here")
	if out := m.MaskBytes(in); &out[0] != &in[0] {
		t.Error("MaskBytes copied an unmatched buffer")
	}
	for _, tc := range []struct{ in, want string }{
		{"a hunter2-plain b hunter2-plain", "a *** b ***"},
		{"hunter2-plainhunter2-plain", "******"},
		{"hunter2-plaihunter2-plain", "hunter2-plai***"},
	} {
		if got := m.MaskBytes([]byte(tc.in)); string(got) != tc.want {
			t.Errorf("MaskBytes(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Overlapping matches: the union.
	m2 := newTestMatcher(t, "abcdefghij", "ghijklmnop")
	if got := m2.MaskBytes([]byte("<abcdefghijklmnop>")); string(got) != "<***>" {
		t.Errorf("overlap: %q", got)
	}
}

func TestNoSecrets(t *testing.T) {
	m := newTestMatcher(t)
	in := []byte("plain \x1b[31mtext\r\n with \x1b[ nothing")
	for i := 0; i <= len(in); i++ {
		if out := maskParts(t, m, in, i); !bytes.Equal(out, in) {
			t.Fatalf("cut %d: %q", i, out)
		}
	}
}

func TestReplacementOption(t *testing.T) {
	m := newTestMatcher(t, "hunter2-plain")
	var out bytes.Buffer
	w := m.NewWriter(&out, Options{Idle: -1, Replacement: "[masked]"})
	_, _ = w.Write([]byte("x hunter2-plain y"))
	_ = w.Close()
	if out.String() != "x [masked] y" {
		t.Fatalf("got %q", out.String())
	}
	if _, err := w.Write([]byte("more")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// TestEmitEagerly checks that output not covered by a possible match is
// written by Write itself, and that the held part is bounded.
func TestEmitEagerly(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	var out bytes.Buffer
	w := m.NewWriter(&out, Options{Idle: -1})
	steps := []struct{ write, want string }{
		{"hello wor", "hello wor"},
		{"ld\nabc hun", "ld\nabc "},
		{"ter2", ""},
		{"-plain-Secret9 and", "*** and"},
		{" hunter2-plain-Secret", " "},
		{"X", "hunter2-plain-SecretX"},
	}
	for _, st := range steps {
		out.Reset()
		_, _ = w.Write([]byte(st.write))
		if out.String() != st.want {
			t.Fatalf("after %q: wrote %q, want %q", st.write, out.String(), st.want)
		}
	}
	out.Reset()
	_, _ = w.Write([]byte("tail hunt"))
	if err := w.Flush(); err != nil || out.String() != "tail hunt" {
		t.Fatalf("Flush: %v, %q", err, out.String())
	}
}

func TestBoundedHold(t *testing.T) {
	m := newTestMatcher(t, testSecrets...)
	maxHold := int64(m.a.maxLen - 1)
	forms := allForms(testSecrets)
	r := rand.New(rand.NewPCG(5, 6))
	var out bytes.Buffer
	w := m.NewWriter(&out, Options{Idle: -1})
	for k := 0; k < 3000; k++ {
		f := forms[r.IntN(len(forms))]
		piece := f[:r.IntN(len(f)+1)] // often a partial form
		piece = bytes.ReplaceAll(bytes.ReplaceAll(piece, []byte{'\r'}, nil), []byte{esc}, nil)
		_, _ = w.Write(piece)
		if held := w.s.pos - w.s.done; held > maxHold {
			t.Fatalf("holding %d bytes, max %d", held, maxHold)
		}
	}
	// A stream that matches forever holds no bytes and few spans.
	m2 := newTestMatcher(t, "aaaaaaaa")
	w2 := m2.NewWriter(&out, Options{Idle: -1})
	chunk := bytes.Repeat([]byte{'a'}, 4096)
	for k := 0; k < 256; k++ {
		_, _ = w2.Write(chunk)
		if len(w2.s.pend) > 8 || len(w2.s.spans) > 2 {
			t.Fatalf("pend %d spans %d", len(w2.s.pend), len(w2.s.spans))
		}
	}
	// A match followed across an endless run of colour codes is dropped.
	m3 := newTestMatcher(t, "hunter2-plain")
	w3 := m3.NewWriter(&out, Options{Idle: -1})
	_, _ = w3.Write([]byte("hunt"))
	for k := 0; k < 10000; k++ {
		_, _ = w3.Write([]byte("\x1b[1m"))
		if len(w3.s.pend) > 8*m3.a.maxLen+256+8 {
			t.Fatalf("pend %d", len(w3.s.pend))
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the idle timer's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("output %q, want %q", b.String(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleFlush(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	var out syncBuffer
	w := m.NewWriter(&out, Options{Idle: 2 * time.Millisecond})
	defer w.Close()
	// A prompt that ends in a prefix of the secret shows after the pause.
	_, _ = w.Write([]byte("Password for hunt"))
	waitFor(t, &out, "Password for hunt")
	// The rest of a secret split by the pause is still masked.
	_, _ = w.Write([]byte("er2-plain-Secret9 ok\n"))
	waitFor(t, &out, "Password for hunt*** ok\n")
	// Repeated writes keep postponing, then flush.
	for k := 0; k < 5; k++ {
		_, _ = w.Write([]byte("h"))
	}
	waitFor(t, &out, "Password for hunt*** ok\nhhhhh")
}

func TestConcurrentWrites(t *testing.T) {
	const s = "hunter2-plain-Secret9"
	m := newTestMatcher(t, s)
	var out syncBuffer
	shared := m.NewWriter(&out, Options{Idle: time.Millisecond})
	const goroutines, lines = 8, 200
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		// Half share one Writer, half have their own over the same output.
		w := shared
		if g%2 == 1 {
			w = m.NewWriter(&out, Options{Idle: time.Millisecond})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				if _, err := fmt.Fprintf(w, "g%d-%d %s tail\n", g, i, s); err != nil {
					t.Error(err)
					return
				}
			}
			if w != shared {
				_ = w.Close()
			}
		}()
	}
	wg.Wait()
	_ = shared.Close()
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != goroutines*lines {
		t.Fatalf("%d lines, want %d", len(got), goroutines*lines)
	}
	seen := map[string]bool{}
	for _, l := range got {
		var g, i int
		if n, _ := fmt.Sscanf(l, "g%d-%d *** tail", &g, &i); n != 2 || l != fmt.Sprintf("g%d-%d *** tail", g, i) {
			t.Fatalf("bad line %q", l)
		}
		seen[l] = true
	}
	if len(seen) != goroutines*lines {
		t.Fatalf("%d distinct lines", len(seen))
	}
}

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorSticky(t *testing.T) {
	m := newTestMatcher(t, "hunter2-plain")
	w := m.NewWriter(failWriter{}, Options{Idle: -1})
	if _, err := w.Write([]byte("hello\n")); err == nil {
		t.Fatal("no error")
	}
	if _, err := w.Write([]byte("again\n")); err == nil {
		t.Fatal("error not sticky")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close hid the error")
	}
}
