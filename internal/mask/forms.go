package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/url"
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
//     neighbours;
//   - hex, lower and upper case;
//   - percent-encoding: url.QueryEscape, the same with "%20" for space
//     (RFC 3986), url.PathEscape and JavaScript's encodeURIComponent, each
//     with upper- and lower-case hex digits;
//   - JSON string escaping (without the quotes): minimal (RFC 8259),
//     with "\/", with non-ASCII as \uXXXX (Python, PHP), both, and Go's
//     encoding/json (HTML-safe) form; and, for valid UTF-8, every
//     character as \uXXXX, with lower- and upper-case hex digits (as some
//     serialisers write non-Latin text, and as a reflection may be disguised);
//   - every form above as UTF-16, little- and big-endian (a UTF-16 body or
//     file); for an ASCII form the two share one pattern, the characters
//     with a zero byte between them, which matches at either byte order.
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
	return out
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

// valueForms lists the encodings of one value (possibly with duplicates).
func valueForms(v []byte) []string {
	fs := []string{string(v)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		fs = append(fs, enc.EncodeToString(v), enc.WithPadding(base64.NoPadding).EncodeToString(v))
		for k := 0; k < 3; k++ {
			if s := b64Stable(enc, v, k); len(s) >= MinSecretLen {
				fs = append(fs, s)
			}
		}
	}
	h := hex.EncodeToString(v)
	fs = append(fs, h, strings.ToUpper(h))

	s := string(v)
	q := url.QueryEscape(s)
	for _, p := range []string{q, strings.ReplaceAll(q, "+", "%20"), url.PathEscape(s), uriComponent(v)} {
		fs = append(fs, p, lowerPercent(p))
	}

	fs = append(fs, jsonEscape(v, false, false), jsonEscape(v, true, false),
		jsonEscape(v, false, true), jsonEscape(v, true, true))
	if b, err := json.Marshal(s); err == nil && len(b) >= 2 {
		fs = append(fs, string(b[1:len(b)-1]))
	}
	if utf8.Valid(v) {
		fs = append(fs, jsonEscapeAll(v, "0123456789abcdef"), jsonEscapeAll(v, "0123456789ABCDEF"))
	}
	return fs
}

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

// lowerPercent lower-cases the hex digits of every %XX escape in s.
func lowerPercent(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1] = lowerHex(b[i+1])
			b[i+2] = lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// uriComponent is JavaScript's encodeURIComponent over the bytes of v.
func uriComponent(v []byte) string {
	const hexUpper = "0123456789ABCDEF"
	var b strings.Builder
	for _, c := range v {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexUpper[c>>4])
		b.WriteByte(hexUpper[c&15])
	}
	return b.String()
}

// jsonEscape escapes v as the inside of a JSON string: the RFC 8259
// minimum, optionally "/" as "\/" and non-ASCII runes as \uXXXX (UTF-16).
// Bytes that are not valid UTF-8 are kept as they are.
func jsonEscape(v []byte, slash, ascii bool) string {
	const hexLower = "0123456789abcdef"
	var b strings.Builder
	u := func(r rune) {
		b.WriteString(`\u`)
		b.WriteByte(hexLower[r>>12&15])
		b.WriteByte(hexLower[r>>8&15])
		b.WriteByte(hexLower[r>>4&15])
		b.WriteByte(hexLower[r&15])
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(v[i:])
			if !ascii || r == utf8.RuneError && size == 1 {
				b.Write(v[i : i+size])
			} else if r > 0xFFFF {
				r -= 0x10000
				u(0xD800 + r>>10)
				u(0xDC00 + r&0x3FF)
			} else {
				u(r)
			}
			i += size
			continue
		}
		switch {
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
			u(rune(c))
		case c == '/' && slash:
			b.WriteString(`\/`)
		default:
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
}
