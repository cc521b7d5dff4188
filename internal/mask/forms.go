package mask

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MinSecretLen is the shortest secret NewMatcher accepts, in bytes. Shorter
// values (and shorter lines of a multi-line value) would mask common words.
const MinSecretLen = 8

// Forms returns every encoded form of secret that a Matcher built from it
// masks, deduplicated, the raw value first:
//
//   - the raw value;
//   - if the value has more than one line, each line with surrounding
//     spaces, tabs and '\r' trimmed that is still at least MinSecretLen bytes
//     long, as a secret of its own (with all of the forms below);
//   - base64, standard and URL alphabets, padded and unpadded, plus for each
//     alphabet the stable inner substring of the encoding when the value sits
//     at byte offset 0, 1 or 2 (mod 3) of a larger encoded blob: the
//     characters whose 6 bits all come from the value, none from its
//     neighbours; each holding '/' or '+' also JSON-escaped as each encoder
//     in jsonStyles writes it;
//   - hex, lower and upper case;
//   - quoted-printable ('=' as =3D, non-ASCII bytes as =XX), as an e-mail
//     or MIME part writes it; its soft line breaks are looked through as
//     wrap newlines are;
//   - percent-encoding as each encoder in percentSafe writes it (Go,
//     Python, Java, PHP, .NET, JavaScript), space as '+' and as "%20", each
//     with upper- and lower-case hex digits;
//   - JSON string escaping (without the quotes) as each encoder in
//     jsonStyles writes it (RFC 8259's minimum, Python, PHP and its
//     JSON_HEX_* flags, Gson, Jackson, Json.NET, System.Text.Json), and Go's
//     encoding/json form; and, for valid UTF-8, every character as \uXXXX,
//     with lower- and upper-case hex digits (as some serialisers write
//     non-Latin text, and as a reflection may be disguised);
//   - for a value holding a single quote, the value single-quoted as a
//     shell trace, quoter, YAML or SQL writes it (quoteStyles: set -x,
//     shlex.quote, the quote doubled); for a value holding shell
//     punctuation, the value as bash escapes it with backslashes
//     (backslashStyles: export -p, printf %q);
//   - every form above as UTF-16, little- and big-endian (a UTF-16 body or
//     file); for an ASCII form the two share one pattern, the characters
//     with a zero byte between them, which matches at either byte order;
//   - the standard base64 of a stable inner substring of the standard
//     base64, at each alignment (b64Twice): a Kubernetes docker-registry
//     secret holds the Docker config, whose auth holds user:password, each
//     base64-encoded; not as UTF-16 either;
//   - the standard base64 of the value as UTF-16LE, as the stable inner
//     substring at each alignment (b64UTF16): PowerShell's
//     -EncodedCommand holding it in a script;
//   - hex with a space, colon or dash between the bytes (hexSeps), lower
//     and upper case: one line of debug output; not as UTF-16;
//   - base32 (RFC 4648's alphabet, upper case), padded and unpadded, plus
//     the stable inner substring of the encoding when the value sits at
//     byte offset 0 to 4 (mod 5) of a larger encoded blob (base32Forms);
//     not as UTF-16;
//   - HTML and XML escaping as each escaper in htmlStyles writes it (Go's
//     html/template and encoding/xml, PHP, Python, Ruby, .NET, JavaScript
//     templates, OWASP ESAPI, Spring): a page quoting a credential back. Not as UTF-16 too: a
//     form is added only where the value holds a character escaped, and
//     an escaped page in UTF-16 is too rare to double them for.
//
// A secret longer than LongSecretLen (a PEM key, a kubeconfig, a JSON
// service-account key) gets fewer forms (see longForms): the list above
// holds ~300 pattern bytes per secret byte, each ~100 bytes to build.
//
// Forms does not check the length of secret; NewMatcher does.
func Forms(secret []byte) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	add := func(f string) {
		if len(f) == 0 || seen[f] {
			return
		}
		seen[f] = true
		out = append(out, []byte(f))
	}
	values := [][]byte{secret}
	if bytes.IndexByte(secret, '\n') >= 0 {
		for _, line := range bytes.Split(secret, []byte{'\n'}) {
			line = bytes.Trim(line, " \t\r")
			if len(line) >= MinSecretLen {
				values = append(values, line)
			}
		}
	}
	if len(secret) > LongSecretLen {
		for _, f := range longForms(values) {
			add(f)
		}
		return out
	}
	for _, v := range values {
		for _, f := range valueForms(v) {
			add(f)
		}
	}
	for _, f := range out[:len(out):len(out)] {
		for _, u := range utf16Forms(f) {
			add(u)
		}
	}
	for _, v := range values {
		for _, st := range htmlStyles {
			add(htmlEscape(v, st))
		}
		for _, f := range b64Twice(v) {
			add(f)
		}
		for _, f := range b64UTF16(v) {
			add(f)
		}
		for _, by := range hexSeps {
			add(hexSep(v, by, hexLower))
			add(hexSep(v, by, hexUpper))
		}
		for _, f := range base32Forms(v) {
			add(f)
		}
	}
	return out
}

// base32Forms lists v in base32 (RFC 4648, upper case), padded or not,
// and the part of it that stays the same at each of the 5 alignments v
// may have inside a longer encoded text (when at least MinSecretLen long).
func base32Forms(v []byte) []string {
	fs := []string{base32.StdEncoding.EncodeToString(v), base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(v)}
	for k := 0; k < 5; k++ {
		if s := b32Stable(v, k); len(s) >= MinSecretLen {
			fs = append(fs, s)
		}
	}
	return fs
}

// b32Stable returns the characters of the base32 of v, placed at byte
// offset k (0 to 4) of a longer blob, that depend on v alone. Character i
// carries bits [5i, 5i+5); v occupies bits [8k, 8k+8len(v)).
func b32Stable(v []byte, k int) string {
	n := k + len(v)
	buf := make([]byte, (n+4)/5*5)
	copy(buf[k:], v)
	s := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(buf)
	start, end := (8*k+4)/5, (8*n)/5
	if end <= start {
		return ""
	}
	return s[start:end]
}

// hexSeps are the separators printed between the bytes of hex on one
// line: Go's fmt "% x", hexdump -ve '1/1 "%.2x "' and Python's
// bytes.hex(" "); colons (openssl, Java's HexFormat, Python); dashes
// (.NET's BitConverter.ToString). Dumps of 16 bytes a line (xxd, hexdump
// -C, od) are not forms: the dump thread reads them (dump.go).
var hexSeps = []byte{' ', ':', '-'}

// hexSep is v in hex with the given digits, by between each two bytes.
func hexSep(v []byte, by byte, digits string) string {
	var b strings.Builder
	b.Grow(3 * len(v))
	for i, c := range v {
		if i > 0 {
			b.WriteByte(by)
		}
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// b64UTF16 returns the stable inner substrings (b64Stable) of the standard
// base64 of v as UTF-16LE, at each alignment: PowerShell's -EncodedCommand
// (a script in a command line that a CI log shows), also what
// [Convert]::ToBase64String of [Text.Encoding]::Unicode writes. Nothing
// for v that is not UTF-8.
func b64UTF16(v []byte) []string {
	if !utf8.Valid(v) {
		return nil
	}
	units := utf16.Encode([]rune(string(v)))
	le := make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(le[2*i:], u)
	}
	var out []string
	for k := 0; k < 3; k++ {
		if s := b64Stable(base64.StdEncoding, le, k); len(s) >= MinSecretLen {
			out = append(out, s)
		}
	}
	return out
}

// b64Twice returns the stable inner substrings (b64Stable) of the
// standard base64 of each stable inner substring of v's: v encoded inside
// a value (a Docker config's auth, base64 of user:v) that is encoded
// again with what surrounds it (a Kubernetes docker-registry secret's
// .dockerconfigjson, base64 of the whole config).
func b64Twice(v []byte) []string {
	var out []string
	for k := 0; k < 3; k++ {
		inner := b64Stable(base64.StdEncoding, v, k)
		if len(inner) < MinSecretLen {
			continue
		}
		for k2 := 0; k2 < 3; k2++ {
			if s := b64Stable(base64.StdEncoding, []byte(inner), k2); len(s) >= MinSecretLen {
				out = append(out, s)
			}
		}
	}
	return out
}

// htmlStyle is how one HTML or XML escaper writes the characters whose
// entity differs between escapers. "" keeps the character as it is, but
// amp, lt and gt: "" is &amp; &lt; &gt;, which most write.
type htmlStyle struct {
	quot, apos, plus, eq, slash string
	amp, lt, gt                 string
	// hexRest: every other ASCII byte but letters, digits and ",.-_ " as
	// &#xhh; (OWASP ESAPI).
	hexRest bool
}

// htmlStyles lists common escapers, as percentSafe does for
// percent-encoders: each writes a character the same way wherever it
// occurs, so one form per escaper covers what it writes.
var htmlStyles = []htmlStyle{
	{quot: "&#34;", apos: "&#39;"},                                              // Go's html.EscapeString and encoding/xml, Jinja2 (MarkupSafe), OWASP Java Encoder
	{quot: "&#34;", apos: "&#39;", plus: "&#43;"},                               // Go's html/template
	{quot: "&#34;", apos: "&#39;", plus: "&#43;", eq: "&#61;"},                  // Go's html/template, unquoted attribute
	{quot: "&quot;", apos: "&#039;"},                                            // PHP's htmlspecialchars (ENT_QUOTES, the default since 8.1)
	{quot: "&quot;"},                                                            // PHP's htmlspecialchars before 8.1, Apache Commons escapeHtml4
	{quot: "&quot;", apos: "&apos;"},                                            // PHP's ENT_HTML5, XML escapers (Commons escapeXml10, .NET SecurityElement)
	{quot: "&quot;", apos: "&#x27;"},                                            // Python's html.escape, Django, React
	{quot: "&quot;", apos: "&#39;"},                                             // Ruby's CGI.escapeHTML and ERB, .NET's WebUtility.HtmlEncode, Spring, lodash
	{quot: "&quot;", apos: "&#x27;", plus: "&#x2B;"},                            // ASP.NET Core's HtmlEncoder (Razor)
	{quot: "&quot;", apos: "&#x27;", eq: "&#x3D;"},                              // Handlebars
	{quot: "&quot;", apos: "&#39;", eq: "&#x3D;", slash: "&#x2F;"},              // mustache.js
	{quot: "&quot;", apos: "&#x27;", hexRest: true},                             // OWASP ESAPI's encodeForHTML (non-ASCII kept: ESAPI names or numbers it)
	{amp: "&#38;", lt: "&#60;", gt: "&#62;", quot: "&#34;", apos: "&#39;"},      // Spring's HtmlUtils.htmlEscapeDecimal
	{amp: "&#x26;", lt: "&#x3c;", gt: "&#x3e;", quot: "&#x22;", apos: "&#x27;"}, // Spring's HtmlUtils.htmlEscapeHex
}

// htmlEscape escapes v as an HTML or XML escaper of style st writes it.
func htmlEscape(v []byte, st htmlStyle) string {
	var b strings.Builder
	or := func(e, def string) string {
		if e == "" {
			return def
		}
		return e
	}
	for _, c := range v {
		e := ""
		switch c {
		case '&':
			e = or(st.amp, "&amp;")
		case '<':
			e = or(st.lt, "&lt;")
		case '>':
			e = or(st.gt, "&gt;")
		case '"':
			e = st.quot
		case '\'':
			e = st.apos
		case '+':
			e = st.plus
		case '=':
			e = st.eq
		case '/':
			e = st.slash
		}
		if e == "" && st.hexRest && c < utf8.RuneSelf && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(",.-_ ", c) >= 0) {
			e = "&#x" + strconv.FormatUint(uint64(c), 16) + ";"
		}
		if e == "" {
			b.WriteByte(c)
		} else {
			b.WriteString(e)
		}
	}
	return b.String()
}

// utf16Forms returns f as UTF-16: for ASCII, the bytes with a zero between
// each two (the inside of both the little- and the big-endian encoding);
// otherwise, when f is valid UTF-8, both encodings in full. Bytes that are
// not UTF-8 have no UTF-16 form.
func utf16Forms(f []byte) []string {
	ascii := true
	for _, c := range f {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		b := make([]byte, 0, 2*len(f))
		for i, c := range f {
			if i > 0 {
				b = append(b, 0)
			}
			b = append(b, c)
		}
		return []string{string(b)}
	}
	if !utf8.Valid(f) {
		return nil
	}
	units := utf16.Encode([]rune(string(f)))
	le, be := make([]byte, 2*len(units)), make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(le[2*i:], u)
		binary.BigEndian.PutUint16(be[2*i:], u)
	}
	return []string{string(le), string(be)}
}

// LongSecretLen is the longest secret that gets every form Forms lists.
// Tokens, passwords and API keys are far shorter; a JWT or a small
// certificate fits.
const LongSecretLen = 1024

// longForms lists the forms of a secret longer than LongSecretLen, values
// being the secret and its lines: those SPEC section 8 names, the rest
// only for shorter secrets. The secret as it is, its base64 (both
// alphabets, padded or not, at each alignment), hex in both cases,
// percent-encoding as each encoder in percentSafe writes it with
// upper-case hex digits, and JSON strings; each line as it is; and each
// value as the text escapers write it (escapeForms: a PEM in a JSON config,
// in export -p), which cost about one pattern byte per secret byte each,
// fewer where they agree. Not: any form as UTF-16, lower-case percent
// escapes (.NET's HttpUtility), \uXXXX for every character, base64 forms
// JSON-escaped, hex with separators, HTML escaping, base64 twice or of
// UTF-16, base32, nor the base64, hex or percent-encoding of a line alone (the
// secret's holds each line's).
func longForms(values [][]byte) []string {
	v := values[0]
	fs := append([]string{string(v)}, base64Forms(v)...)
	fs = append(fs, hexPercentForms(v, hexUpper)...)
	for _, v := range values {
		fs = append(fs, string(v))
		fs = append(fs, escapeForms(v)...)
	}
	return fs
}

// escapeForms lists the forms of v that text escapers write, keeping most
// of its characters as they are (possibly with duplicates): quoted-printable,
// JSON strings as each encoder in jsonStyles and Go's encoding/json write
// them, and shell quoting (quoteStyles, backslashStyles).
func escapeForms(v []byte) []string {
	fs := []string{quotedPrintable(v)}
	for _, st := range jsonStyles {
		fs = append(fs, jsonEscape(v, st))
	}
	if b, err := json.Marshal(string(v)); err == nil && len(b) >= 2 {
		fs = append(fs, string(b[1:len(b)-1]))
	}
	if bytes.IndexByte(v, '\'') >= 0 {
		for _, q := range quoteStyles {
			fs = append(fs, strings.ReplaceAll(string(v), "'", q))
		}
	}
	for _, set := range backslashStyles {
		if bytes.ContainsAny(v, set) {
			var b strings.Builder
			for _, c := range v {
				if strings.IndexByte(set, c) >= 0 {
					b.WriteByte('\\')
				}
				b.WriteByte(c)
			}
			fs = append(fs, b.String())
		}
	}
	return fs
}

// valueForms lists the encodings of one value (possibly with duplicates).
func valueForms(v []byte) []string {
	b64 := base64Forms(v)
	fs := append([]string{string(v)}, b64...)
	// A base64 form inside a JSON string (an echo of a Basic header) as
	// the encoders that escape '/' or '+' write it (PHP's "\/",
	// System.Text.Json's \u002B); its '=' padding aside, which the
	// unpadded forms leave out.
	for _, f := range b64 {
		if strings.ContainsAny(f, "/+") {
			for _, st := range jsonStyles {
				fs = append(fs, jsonEscape([]byte(f), st))
			}
		}
	}
	fs = append(fs, hexPercentForms(v, hexUpper, hexLower)...)
	if utf8.Valid(v) {
		fs = append(fs, jsonEscapeAll(v, hexLower), jsonEscapeAll(v, hexUpper))
	}
	return append(fs, escapeForms(v)...)
}

// base64Forms lists v in base64, both alphabets, padded or not, and the
// part of it that stays the same at each of the 3 alignments v may have
// inside a longer encoded text (when at least MinSecretLen long).
func base64Forms(v []byte) []string {
	var fs []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		fs = append(fs, enc.EncodeToString(v), enc.WithPadding(base64.NoPadding).EncodeToString(v))
		for k := 0; k < 3; k++ {
			if s := b64Stable(enc, v, k); len(s) >= MinSecretLen {
				fs = append(fs, s)
			}
		}
	}
	return fs
}

// hexPercentForms lists v in hex, both cases, and percent-encoded as each
// encoder in percentSafe writes it, with each space style and each of
// digits' hex digit cases.
func hexPercentForms(v []byte, digits ...string) []string {
	h := hex.EncodeToString(v)
	fs := []string{h, strings.ToUpper(h)}
	for _, safe := range percentSafe {
		for _, space := range []string{"+", "%20"} {
			for _, d := range digits {
				fs = append(fs, percentEncode(v, safe, space, d))
			}
		}
	}
	return fs
}

// quotedPrintable writes v as MIME's quoted-printable does (RFC 2045): '='
// and every byte that is neither printable ASCII nor a tab or line end as
// =XX, upper-case; soft line breaks are the normalising thread's
// (wrap.go). The same as v when v holds none of them (deduplicated).
func quotedPrintable(v []byte) string {
	var b strings.Builder
	for _, c := range v {
		if c == '=' || c >= 0x7f || c < ' ' && c != '\t' && c != '\r' && c != '\n' {
			b.WriteByte('=')
			b.WriteByte(hexUpper[c>>4])
			b.WriteByte(hexUpper[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// backslashStyles lists, per shell quoter that escapes with backslashes,
// the bytes it writes with one before: bash's double-quoted values
// (declare -p, export -p: a job dumping its environment) and printf %q
// (inside a word: at its start it also escapes '#' and '~').
var backslashStyles = []string{"$`\"\\", " !\"$&'()*,;<>?[\\]^`{|}"}

// quoteStyles lists how common quoters write a single quote inside a
// single-quoted string, the rest of it kept as it is: bash's and zsh's set
// -x trace (and ${v@Q}), Python's shlex.quote, and YAML's single-quoted
// scalars and SQL string literals, which double it.
var quoteStyles = []string{`'\''`, `'"'"'`, `''`}

// jsonEscapeAll writes every character of the valid UTF-8 v as a JSON
// \uXXXX escape (surrogate pairs above U+FFFF), with the given hex digits.
func jsonEscapeAll(v []byte, digits string) string {
	var b strings.Builder
	b.Grow(6 * len(v))
	for _, u := range utf16.Encode([]rune(string(v))) {
		b.WriteString(`\u`)
		b.WriteByte(digits[u>>12&15])
		b.WriteByte(digits[u>>8&15])
		b.WriteByte(digits[u>>4&15])
		b.WriteByte(digits[u&15])
	}
	return b.String()
}

// b64Stable returns the characters of the encoding of v, placed at byte
// offset k (0, 1 or 2) of a longer blob, that depend on v alone. Character i
// of an encoding carries bits [6i, 6i+6); v occupies bits [8k, 8k+8len(v)).
func b64Stable(enc *base64.Encoding, v []byte, k int) string {
	n := k + len(v)
	buf := make([]byte, (n+2)/3*3)
	copy(buf[k:], v)
	s := enc.WithPadding(base64.NoPadding).EncodeToString(buf)
	start, end := (8*k+5)/6, (8*n)/6
	if end <= start {
		return ""
	}
	return s[start:end]
}

const (
	hexLower = "0123456789abcdef"
	hexUpper = "0123456789ABCDEF"
)

// percentSafe lists, per common percent-encoder, the bytes it keeps besides
// ASCII letters and digits; it writes every other byte as %XX. An encoder
// treats a byte the same way wherever it occurs, so one form per encoder
// (times space style and hex case) covers what it writes: escaping each
// byte independently would give 2^n forms for n punctuation bytes.
var percentSafe = []string{
	"-_.~",                 // RFC 3986 unreserved: Go's QueryEscape, PHP's rawurlencode, Python's quote_plus, .NET's EscapeDataString, curl
	"-_.~/",                // Python's urllib.parse.quote (safe="/"), what requests and urllib use for paths
	"-_.*",                 // Java's URLEncoder, Ruby's encode_www_form_component
	"-_.",                  // PHP's urlencode
	"-_.!*()",              // .NET's HttpUtility.UrlEncode (lower-case hex)
	"-_.!~*'()",            // JavaScript's encodeURIComponent
	"-_.~$&+:=@",           // Go's url.PathEscape
	"-_.!~*'();/?:@&=+$,#", // JavaScript's encodeURI
}

// percentEncode writes every byte of v that is neither an ASCII letter or
// digit nor in safe as %XX with the given hex digits, and space as space.
func percentEncode(v []byte, safe, space, digits string) string {
	var b strings.Builder
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(safe, c) >= 0:
			b.WriteByte(c)
		case c == ' ':
			b.WriteString(space)
		default:
			b.WriteByte('%')
			b.WriteByte(digits[c>>4])
			b.WriteByte(digits[c&15])
		}
	}
	return b.String()
}

// jsonStyle is how one JSON encoder escapes a string.
type jsonStyle struct {
	hex      string // ASCII characters written as \u00XX, besides control characters
	upper    bool   // upper-case hex digits in those and in control characters
	slash    bool   // '/' as "\/"
	nonASCII string // hex digits for non-ASCII characters as \uXXXX; "" keeps them
}

// jsonStyles lists common JSON encoders' escaping, as percentSafe does for
// percent-encoders: each writes a character the same way wherever it
// occurs. PHP's JSON_HEX_* flags are listed alone (TAG) and together
// (Symfony's JsonResponse), with PHP's default "\/" and \uXXXX and without
// them (JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE); other subsets of
// the flags are not.
var jsonStyles = []jsonStyle{
	{},                                // RFC 8259's minimum: JavaScript, serde_json, Ruby, Json.NET
	{upper: true},                     // Jackson (control characters in upper case)
	{slash: true},                     // PHP with JSON_UNESCAPED_UNICODE
	{nonASCII: hexLower},              // Python's json.dumps, Json.NET's EscapeNonAscii
	{upper: true, nonASCII: hexUpper}, // Jackson's ESCAPE_NON_ASCII
	{slash: true, nonASCII: hexLower}, // PHP's json_encode
	{hex: "<>&='"},                    // Gson (HTML-safe by default)
	{hex: "<>&'\""},                   // Json.NET's EscapeHtml
	{hex: "<>&'\"+`", upper: true, nonASCII: hexUpper},            // System.Text.Json's default encoder
	{hex: "<>", upper: true, slash: true, nonASCII: hexLower},     // PHP's JSON_HEX_TAG
	{hex: "<>&'\"", upper: true, slash: true, nonASCII: hexLower}, // PHP's four JSON_HEX_* flags
	{hex: "<>", upper: true},                                      // PHP's JSON_HEX_TAG without "\/" and \uXXXX
	{hex: "<>&'\"", upper: true},                                  // PHP's four JSON_HEX_* flags without them
}

// jsonEscape escapes v as the inside of a JSON string in style st: the RFC
// 8259 minimum, plus what st escapes further (non-ASCII runes as UTF-16).
// Bytes that are not valid UTF-8 are kept as they are.
func jsonEscape(v []byte, st jsonStyle) string {
	var b strings.Builder
	u := func(r rune, digits string) {
		b.WriteString(`\u`)
		b.WriteByte(digits[r>>12&15])
		b.WriteByte(digits[r>>8&15])
		b.WriteByte(digits[r>>4&15])
		b.WriteByte(digits[r&15])
	}
	digits := hexLower
	if st.upper {
		digits = hexUpper
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(v[i:])
			if st.nonASCII == "" || r == utf8.RuneError && size == 1 {
				b.Write(v[i : i+size])
			} else if r > 0xFFFF {
				r -= 0x10000
				u(0xD800+r>>10, st.nonASCII)
				u(0xDC00+r&0x3FF, st.nonASCII)
			} else {
				u(r, st.nonASCII)
			}
			i += size
			continue
		}
		switch {
		case strings.IndexByte(st.hex, c) >= 0:
			u(rune(c), digits)
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c < 0x20:
			u(rune(c), digits)
		case c == '/' && st.slash:
			b.WriteString(`\/`)
		default:
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}
