package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"hash/crc32"
	"math/big"
	"strings"
	"testing"
)

// refChecksum is an independent implementation of SPEC section 2's
// checksum: math/big's base-62 digits use 0-9a-zA-Z, so swap the cases.
func refChecksum(body string) string {
	s := new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(body)))).Text(62)
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r - 'A' + 'a')
		default:
			b.WriteRune(r)
		}
	}
	return strings.Repeat("0", 6-b.Len()) + b.String()
}

func TestNewAndParse(t *testing.T) {
	for _, k := range []Kind{Job, Admin} {
		seen := map[string]bool{}
		for i := 0; i < 200; i++ {
			tok, err := New(k)
			if err != nil {
				t.Fatal(err)
			}
			want := JobLen
			if k == Admin {
				want = AdminLen
			}
			if len(tok) != want {
				t.Fatalf("len(%s)=%d want %d", k, len(tok), want)
			}
			got, err := Parse(tok)
			if err != nil || got != k {
				t.Fatalf("Parse(new %s) = %v, %v", k, got, err)
			}
			body := tok[len(k.prefix()) : len(k.prefix())+BodyLen]
			if refChecksum(body) != tok[len(tok)-ChecksumLen:] {
				t.Fatalf("checksum differs from reference for %s", Hint(tok))
			}
			if seen[tok] {
				t.Fatal("duplicate token")
			}
			seen[tok] = true
		}
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := New(Job)
	body := good[4:34]
	flip := []byte(good)
	if flip[10] == 'a' {
		flip[10] = 'b'
	} else {
		flip[10] = 'a'
	}
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrFormat},
		{"short", good[:39], ErrFormat},
		{"long", good + "a", ErrFormat},
		{"wrong prefix", "mfx_" + good[4:], ErrFormat},
		{"bad char", "mfy_" + body[:29] + "-" + good[34:], ErrFormat},
		{"flipped body", string(flip), ErrChecksum},
		{"zero checksum", "mfy_" + body + "000000", ErrChecksum},
		{"admin stem without underscore", "mfya" + good[4:], ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.in); err != tt.want {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestChecksumPadding(t *testing.T) {
	// Some body has a CRC small enough to need padding; the reference agrees
	// for a spread of bodies either way.
	for _, body := range []string{"000000000000000000000000000000", strings.Repeat("z", 30), "abcdefghijklmnopqrstuvwxyzABCD"} {
		if got, want := Checksum(body), refChecksum(body); got != want {
			t.Errorf("Checksum(%q) = %s want %s", body, got, want)
		}
	}
}

func TestHint(t *testing.T) {
	j, _ := New(Job)
	a, _ := New(Admin)
	for _, tt := range []struct{ in, want string }{
		{j, j[:8] + "…"},
		{a, a[:9] + "…"},
		{"secret", "…"},
	} {
		if got := Hint(tt.in); got != tt.want {
			t.Errorf("Hint = %q want %q", got, tt.want)
		}
	}
}

func TestFind(t *testing.T) {
	j, _ := New(Job)
	a, _ := New(Admin)
	bad := j[:39] + "x"
	if bad == j {
		bad = j[:39] + "y"
	}
	text := "token=" + j + "\nadmin " + a + " bad " + bad + " end " + j[:20]
	got := Find([]byte(text))
	if len(got) != 2 || got[0].Token != j || got[0].Kind != Job || got[1].Token != a || got[1].Kind != Admin {
		t.Fatalf("Find = %+v", got)
	}
	if got[0].Offset != strings.Index(text, j) {
		t.Fatalf("offset %d", got[0].Offset)
	}
	// Escaped or glued, a whole token is still one: a JSON log writes a
	// newline before it as "\n", a URL as "%0A", HTML as "&lt;".
	for _, around := range [][2]string{
		{`{"log":"$ mayfly login\n`, `\n$ make"}`},
		{`"\u003c`, `\u003e"`},
		{"GET /x?q=%0A", "%20HTTP/1.1"},
		{"x", "y"},
		{"mfy", "mfy_"},
	} {
		for _, tok := range []string{j, a} {
			in := around[0] + tok + around[1]
			if got := Find([]byte(in)); len(got) != 1 || got[0].Token != tok || got[0].Offset != len(around[0]) {
				t.Errorf("Find(%q + token + %q) = %d matches, want the token", around[0], around[1], len(got))
			}
		}
	}
}

func TestHasher(t *testing.T) {
	if _, err := NewHasher(make([]byte, 16)); err == nil {
		t.Fatal("short key accepted")
	}
	h, _ := NewHasher(make([]byte, 32))
	h2, _ := NewHasher(append(make([]byte, 31), 1))
	j, _ := New(Job)
	if !Equal(h.Sum(j), h.Sum(j)) || Equal(h.Sum(j), h2.Sum(j)) {
		t.Fatal("hasher not keyed or not deterministic")
	}
	// Pooled HMACs are reset between uses: every sum is HMAC-SHA-256 of
	// its token alone, whatever was hashed before.
	key := make([]byte, 32)
	for i, tok := range []string{j, "a", j + j, "", j} {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(tok))
		if got := h.Sum(tok); !bytes.Equal(got[:], m.Sum(nil)) {
			t.Fatalf("sum %d differs from HMAC-SHA-256", i)
		}
	}
}

func FuzzParse(f *testing.F) {
	j, _ := New(Job)
	a, _ := New(Admin)
	f.Add(j)
	f.Add(a)
	f.Add("mfy_")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			return
		}
		body := s[len(k.prefix()):][:BodyLen]
		if refChecksum(body) != s[len(s)-ChecksumLen:] {
			t.Fatalf("accepted a token with a wrong checksum")
		}
		if m := Find([]byte(" " + s + " ")); len(m) != 1 || m[0].Token != s {
			t.Fatalf("Find missed a valid token")
		}
	})
}

func FuzzFind(f *testing.F) {
	j, _ := New(Job)
	f.Add([]byte("x " + j + " y"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range Find(b) {
			if _, err := Parse(m.Token); err != nil {
				t.Fatal("Find returned an invalid token")
			}
			if string(b[m.Offset:m.Offset+len(m.Token)]) != m.Token {
				t.Fatal("wrong offset")
			}
		}
	})
}

func BenchmarkFind(b *testing.B) {
	j, _ := New(Job)
	text := []byte(strings.Repeat("some log line without secrets mfy nothing here 0123456789\n", 20000) + j)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if len(Find(text)) != 1 {
			b.Fatal("miss")
		}
	}
}

func TestRedact(t *testing.T) {
	j, _ := New(Job)
	a, _ := New(Admin)
	p, _ := NewPassword()
	// An admin session's value (SSO sign-in): no checksum, 43 base64url
	// characters after its prefix.
	s := SessionPrefix + "Ab3_-" + strings.Repeat("x", SessionLen-len(SessionPrefix)-5)
	// A GitHub installation token (mayfly mints them): the prefix and 36
	// base62 characters.
	g := "ghs_" + "16C7e42F292c6912E7710c838347Ae178B4a" // mayfly:allow
	tests := []struct{ in, want string }{
		{"github said: bad credentials " + g + ".", "github said: bad credentials ghs_16C7…."},
		{`\n` + g + "x", `\n` + "ghs_16C7…x"},
		{"ghx_" + g[4:] + " " + g[:39], "ghx_" + g[4:] + " " + g[:39]}, // another letter; one short
		// A GitHub token starting in a session-shaped run: its rest is
		// hidden with the run.
		{SessionPrefix + strings.Repeat("x", 39) + g + "!", SessionPrefix + "xxxx…!"},
		{"/v1/admin/sessions/" + s, "/v1/admin/sessions/" + SessionPrefix + "Ab3_…"},
		{"x" + s + "y " + j, "x" + SessionPrefix + "Ab3_…y " + Hint(j)},
		{"Bearer " + s[:SessionLen-1], "Bearer " + s[:SessionLen-1]}, // one character short
		{"Bearer " + s[:SessionLen-1] + "!", "Bearer " + s[:SessionLen-1] + "!"},
		{"postgres://mayfly_x:" + p + "@db/app " + j, "postgres://mayfly_x:" + PasswordHint(p) + "@db/app " + Hint(j)},
		{j + p, Hint(j) + PasswordHint(p)},
		{"nothing here", "nothing here"},
		{"Bearer " + j, "Bearer " + Hint(j)},
		{j + "," + a + "!", Hint(j) + "," + Hint(a) + "!"},
		{"x" + j + "y", "x" + Hint(j) + "y"},
		{`"path":"/v1/admin/tokens/\n` + a + `"`, `"path":"/v1/admin/tokens/\n` + Hint(a) + `"`},
		{`\u003c` + j, `\u003c` + Hint(j)},
	}
	for _, tt := range tests {
		if got := string(Redact([]byte(tt.in))); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", Hint(tt.in), got, tt.want)
		}
	}
}

// An audit entry holds the hint of the token it concerns (every gateway
// request's two encodings run Redact over one): a hint, or a prefix in
// text, is passed over without allocating.
func TestRedactPassesHintsWithoutAllocating(t *testing.T) {
	j, _ := New(Job)
	a, _ := New(Admin)
	for _, text := range []string{
		`{"type":"gateway.request","hint":"` + Hint(j) + `","path":"/repos/acme/app/issues"}`,
		`{"hint":"` + Hint(a) + `","reason":"mfy_ and mfya_ are prefixes; mfyp_ too"}`,
		"mfy_" + strings.Repeat("a", JobLen-5) + "!", // long enough, not base62
	} {
		b := []byte(text)
		if n := testing.AllocsPerRun(100, func() { _ = Redact(b) }); n != 0 {
			t.Errorf("Redact(%q): %.0f allocations, want 0", text, n)
		}
		if got := Redact(b); string(got) != text {
			t.Errorf("Redact(%q) = %q", text, got)
		}
	}
}
