package policy

import (
	"errors"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxPathLen bounds the escaped request path after /gw/{upstream}.
const MaxPathLen = 8 << 10

// PathError says why a request path was refused. It quotes nothing of the
// path itself.
// Its reason is PathRefused; Detail says which rule the path broke.
type PathError struct{ Detail string }

func (e *PathError) Error() string { return PathRefused.String() + ": " + e.Detail }

func pathErr(detail string) error { return &PathError{Detail: detail} }

// ErrPath is matched by errors.Is for every *PathError.
var ErrPath = errors.New("path refused")

// Is lets errors.Is(err, ErrPath) match.
func (e *PathError) Is(target error) bool { return target == ErrPath }

// CleanPath checks the raw, still percent-encoded path a client sent after
// /gw/{upstream} and returns it decoded: the path policy is matched against.
// It does not "clean" by rewriting: anything that could be read two ways is
// refused, so that the path the policy saw and the path the upstream gets
// (EscapePath of the result) are the same path. Refused:
//
//   - a path not starting with "/"; one longer than MaxPathLen as sent, or
//     as forwarded (EscapePath can spell a byte in three);
//   - invalid escapes ("%zz", "%4"); encoded "/", "\", "." and "%" (so no
//     double encoding like "%252e"); encoded or raw control characters
//     (NUL, CR, LF, DEL, …); raw "\";
//   - a decoded path that is not valid UTF-8 (overlong "%c0%ae" and other
//     invalid sequences), or that holds Unicode format characters, the
//     look-alike forms of ".", "/" and "\" that some servers fold to ASCII,
//     or any character that Unicode compatibility normalisation (NFKC)
//     turns into ".", "/", "\", "%", ";", a space or a control character
//     ("\uFE30" is "..", "\u2100" "a/c", "\uFF05" "%");
//   - empty segments ("//"), except one trailing "/";
//   - segments made only of dots (".", "..", "...") — also before a ";"
//     ("..;x", which some servers read as ".."), segments starting with ";",
//     and segments ending in "." or " " (Windows servers drop those).
//
// "" is the root, "/".
func CleanPath(raw string) (string, error) {
	if raw == "" {
		return "/", nil
	}
	if raw[0] != '/' {
		return "", pathErr("must start with /")
	}
	if len(raw) > MaxPathLen {
		return "", pathErr("too long")
	}
	var b strings.Builder
	decoded := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", pathErr("invalid percent-encoding")
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			switch {
			case d == '/':
				return "", pathErr("encoded slash")
			case d == '\\':
				return "", pathErr("encoded backslash")
			case d == '.':
				return "", pathErr("encoded dot")
			case d == '%':
				return "", pathErr("encoded percent sign (double encoding)")
			case d < 0x20 || d == 0x7f:
				return "", pathErr("encoded control character")
			}
			if !decoded {
				b.Grow(len(raw))
				b.WriteString(raw[:i])
				decoded = true
			}
			b.WriteByte(d)
			i += 2
			continue
		case c == '\\':
			return "", pathErr("backslash")
		case c < 0x20 || c == 0x7f:
			return "", pathErr("control character")
		}
		if decoded {
			b.WriteByte(c)
		}
	}
	p := raw
	if decoded {
		p = b.String()
	}
	if !utf8.ValidString(p) {
		return "", pathErr("not valid UTF-8")
	}
	for i, r := range p {
		if r >= utf8.RuneSelf && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || confusable(r) || foldsToSpecial(p[i:])) {
			return "", pathErr("look-alike or invisible character")
		}
	}
	// Segments: p[0] == '/'.
	for i := 1; i <= len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			j = len(p)
		} else {
			j += i
		}
		seg := p[i:j]
		if seg == "" {
			if j != len(p) || i == 1 && len(p) > 1 {
				return "", pathErr("empty segment")
			}
		} else if err := checkSegment(seg); err != nil {
			return "", err
		}
		i = j + 1
	}
	// Checked last and only when it can matter: what the upstream gets must
	// also fit, or a path accepted here would be refused on its way back in.
	if len(p) > MaxPathLen/3 && len(EscapePath(p)) > MaxPathLen {
		return "", pathErr("too long once escaped")
	}
	return p, nil
}

func checkSegment(seg string) error {
	base := seg
	if k := strings.IndexByte(seg, ';'); k >= 0 {
		base = seg[:k]
		if base == "" {
			return pathErr("segment starts with ;")
		}
	}
	if strings.Trim(base, ".") == "" {
		return pathErr("dot segment")
	}
	if last := seg[len(seg)-1]; last == '.' || last == ' ' {
		return pathErr("segment ends with a dot or space")
	}
	return nil
}

// confusable: characters that some servers and frameworks fold (Unicode
// compatibility normalisation, best-fit code pages) to ".", "/" or "\".
func confusable(r rune) bool {
	switch r {
	case '\uFF0E', '\uFF0F', '\uFF3C', // full-width . / \
		'\u2024', '\u2025', '\u2026', // one/two dot leader, ellipsis
		'\uFE52', '\uFE68', // small full stop, small reverse solidus
		'\u2215', '\u2044', '\u29F8', '\u29F9', '\u2216', // division slash, fraction slash, big solidus, big reverse solidus, set minus
		'\u3002', '\uFF61', // ideographic full stops
		'\u00A0', '\u2000', '\u2001', '\u2002', '\u2003', '\u2004', '\u2005', '\u2006',
		'\u2007', '\u2008', '\u2009', '\u200A', '\u202F', '\u205F', '\u3000': // spaces
		return true
	}
	return false
}

// foldsToSpecial: the (non-ASCII) character s starts with becomes, under
// Unicode compatibility normalisation (NFKC, NFKD), which some servers
// apply to paths, text with a character the checks above refuse or read
// specially: ".", "/", "\", "%", ";", a space or a control character
// ("\uFE30" is "..", "\u2100" "a/c", "\u2488" "1."). The decomposition
// table holds full decompositions, and composing never makes these, so
// the rune's own entry is enough; looking it up does not allocate.
func foldsToSpecial(s string) bool {
	for _, c := range norm.NFKD.PropertiesString(s).Decomposition() {
		if strings.IndexByte("./\\%; ", c) >= 0 || c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// EscapePath percent-encodes a path CleanPath returned, segment by segment
// (url.PathEscape): the exact form forwarded to the upstream.
func EscapePath(clean string) string {
	if clean == "" || clean == "/" {
		return "/"
	}
	if clean[0] == '/' && !strings.ContainsFunc(clean, needsEscape) {
		// Every forwarded request's path: most are letters, digits and
		// "-._~" only, which url.PathEscape keeps.
		return clean
	}
	return escapeSegments(clean)
}

// needsEscape reports whether r is other than "/" and what url.PathEscape
// keeps everywhere (RFC 3986's unreserved characters); some others it
// keeps too, which escapeSegments leaves to it.
func needsEscape(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '-' || r == '.' || r == '_' || r == '~' || r == '/')
}

// escapeSegments is EscapePath segment by segment.
func escapeSegments(clean string) string {
	var b strings.Builder
	b.Grow(len(clean) + 8)
	for i := 0; i < len(clean); {
		j := strings.IndexByte(clean[i+1:], '/')
		if j < 0 {
			j = len(clean)
		} else {
			j += i + 1
		}
		b.WriteByte('/')
		b.WriteString(url.PathEscape(clean[i+1 : j]))
		i = j
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
