package scan

import "bytes"

// CI logs carry terminal codes, and one can land inside a token (grep
// --color highlighting the prefix it was asked for, a test runner
// highlighting differing characters, ESC[K after a colour change). The
// masker (internal/mask, normalize) matches across them; the scanner also
// scans a copy with them removed, by the same grammar, so that what the
// masker treats as a secret is found and revoked too.

const (
	escByte = 0x1b
	csiMax  = 32 // parameter and intermediate bytes of one CSI sequence, as the masker
)

// hasTermCodes reports whether b holds an ESC or a '\r' that does not end a
// line ("\r\n" alone changes nothing a token could span, and CRLF files
// must not be scanned twice).
func hasTermCodes(b []byte) bool {
	if bytes.IndexByte(b, escByte) >= 0 {
		return true
	}
	for i := 0; ; {
		k := bytes.IndexByte(b[i:], '\r')
		if k < 0 {
			return false
		}
		i += k + 1
		if i == len(b) || b[i] != '\n' {
			return true
		}
	}
}

// base64(1) and MIME wrap at 76 columns, PEM at 64, Ruby at 60. The line
// end of a line that is exactly that many base64 characters (after a CI
// log's timestamp: GitHub Actions and GitLab put one before every line)
// is removed with the terminal codes when decoding is on, with the
// timestamp after it, so that a token whose encoding straddles it decodes
// whole, as the masker (internal/mask, wrap.go) masks it. A whole line
// only: a line ending in a SHA-256 digest ("image: app@sha256:…") is
// common and no wrap.
const (
	wrapRuby  = 60
	wrapShort = 64
	wrapLong  = 76
)

// hasWrap reports whether b holds a wrapped base64 line. It looks only
// where such a line would start, for a line end or the space that ends a
// timestamp, before reading the line. After a line end at r the next one
// closes a line of 60 or more only from r+61 on, so the search jumps there.
func hasWrap(b []byte) bool {
	for i := 0; i < len(b); {
		k := bytes.IndexByte(b[i:], '\n')
		if k < 0 {
			return false
		}
		e := i + k
		if e > 0 && b[e-1] == '\r' {
			e--
		}
		for _, n := range [...]int{wrapRuby, wrapShort, wrapLong} {
			s := e - n
			if s < 0 {
				break
			}
			if s > 0 && b[s-1] != '\n' && b[s-1] != ' ' || !allB64(b[s:e]) {
				continue
			}
			if s == 0 || b[s-1] == '\n' {
				return true
			}
			ls := bytes.LastIndexByte(b[:s], '\n') + 1
			if n, _ := logStamp(b[ls:]); n == s-ls {
				return true
			}
		}
		i += k + 1 + wrapRuby
	}
	return false
}

// allB64 reports whether every byte of p is a base64 character, reading
// from the end (a line of words fails at its last space).
func allB64(p []byte) bool {
	for k := len(p) - 1; k >= 0; k-- {
		if !setB64Any[p[k]] {
			return false
		}
	}
	return true
}

// logStamp is the length of the CI log timestamp at the start of b, 0 when
// there is none: RFC 3339 in UTC with an optional fraction and a space
// (GitHub Actions: "2026-12-06T10:00:00.1234567Z "), then for GitLab
// Runner's header two hex digits (the stream), O or E, and a flag: '+'
// when the line continues the one before (the runner flushed a partial
// line), else a space ("2026-12-06T10:00:00.123456Z 00O+"). flag is that
// flag, 0 for a timestamp without GitLab's header.
func logStamp(b []byte) (n int, flag byte) {
	const shape = "dddd-dd-ddTdd:dd:dd"
	if len(b) < len(shape)+2 {
		return 0, 0
	}
	for k := 0; k < len(shape); k++ {
		if shape[k] == 'd' && !isDigit(b[k]) || shape[k] != 'd' && b[k] != shape[k] {
			return 0, 0
		}
	}
	i := len(shape)
	if b[i] == '.' {
		j := i + 1
		for j < len(b) && j-i <= 9 && isDigit(b[j]) {
			j++
		}
		if j == i+1 {
			return 0, 0
		}
		i = j
	}
	if i+1 >= len(b) || b[i] != 'Z' || b[i+1] != ' ' {
		return 0, 0
	}
	i += 2
	if j := i; j+3 < len(b) && isHexDigit(b[j]) && isHexDigit(b[j+1]) && (b[j+2] == 'O' || b[j+2] == 'E') && (b[j+3] == ' ' || b[j+3] == '+') {
		return j + 4, b[j+3]
	}
	return i, 0
}

// isGitLabLog reports whether b is a GitLab job log with timestamps: its
// first line, or the first that begins in it, has Runner's header.
func isGitLabLog(b []byte) bool {
	if _, flag := logStamp(b); flag != 0 {
		return true
	}
	k := bytes.IndexByte(b, '\n')
	if k < 0 {
		return false
	}
	_, flag := logStamp(b[k+1:])
	return flag != 0
}

// isHex reports whether c is a hex digit of either case.
func isHex(c byte) bool { _, ok := unhex(c); return ok }

func isHexDigit(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isUTF16 reports whether b holds UTF-16 text of mostly ASCII characters
// (Windows PowerShell's output and files, also one command's inside a
// longer log): a quarter or more of the 64 bytes from its first NUL on
// are NUL. Text without NUL costs one vectorised search.
func isUTF16(b []byte) bool {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return false
	}
	w := b[i:min(len(b), i+64)]
	return 4*bytes.Count(w, []byte{0}) >= len(w) && len(w) >= 8
}

// continues reports whether b starts with GitLab Runner's header of a line
// that continues the one before.
func continues(b []byte) bool {
	_, flag := logStamp(b)
	return flag == '+'
}

// stripOpts says what stripTermCodes removes besides terminal codes.
type stripOpts struct {
	wraps bool // the line ends of wrapped base64 lines and the timestamps after them
	nuls  bool // NUL bytes: UTF-16 text narrowed to its ASCII characters
	joins bool // the line end and header before a GitLab line that continues the one before
	qp    bool // quoted-printable: soft line breaks removed, =XX decoded
	dumps bool // hex dump lines: replaced by the bytes their hex spells (dumpLine)
	// dumpsSwapped: each group of a dump line read in the other byte
	// order (dumpLine's swapped)
	dumpsSwapped bool
	jsonEsc      bool // JSON's \u00XX escapes of printable ASCII and \/ decoded
}

// hasJSONEscape reports whether b holds a JSON escape that may stand for a
// character of a secret: \u00XX (.NET's System.Text.Json writes '+' as
// \u002B; any writer may escape every character) or \/ (PHP's json_encode
// writes every '/' so). Every JSON reader reads the character itself, as
// TruffleHog's decoder does before its detectors run.
func hasJSONEscape(b []byte) bool {
	return bytes.Contains(b, []byte(`\u00`)) || bytes.Contains(b, []byte(`\/`))
}

// isQuotedPrintable reports whether b declares a quoted-printable part
// (an e-mail or MIME dump): its soft line breaks ('=' ending a line that
// MIME cut at 76 characters) and =XX escapes are then read through, as the
// masker (internal/mask, wrap.go) masks through them. A log that does not
// say so is not decoded: "KEY=\n" and "x=3D" are common elsewhere.
func isQuotedPrintable(b []byte) bool {
	return bytes.Contains(b, []byte("quoted-printable")) || bytes.Contains(b, []byte("Quoted-Printable")) ||
		bytes.Contains(b, []byte("QUOTED-PRINTABLE"))
}

// stripTermCodes returns b without '\r' bytes and CSI sequences (ESC '[',
// at most csiMax bytes in 0x20-0x3F, one final byte in 0x40-0x7E; an ESC
// that does not start one is kept) and what o names, and for each byte of
// the result its offset in b.
func stripTermCodes(b []byte, o stripOpts) ([]byte, []int) {
	wraps, nuls := o.wraps, o.nuls
	out := make([]byte, 0, len(b))
	at := make([]int, 0, len(b))
	run, whole := 0, true // base64 characters ending out; and whether they are its whole line
	body := 0             // where the line being read begins, after its timestamp
	lineStart := func(i int) int {
		run, whole, body = 0, true, i
		if !wraps {
			return i
		}
		n, _ := logStamp(b[i:])
		for k := i; k < i+n; k++ {
			out = append(out, b[k])
			at = append(at, k)
		}
		body = i + n
		return body
	}
	for i := lineStart(0); i < len(b); {
		if o.dumps && i == body {
			if end, ok := dumpLine(b, i, o.dumpsSwapped, func(c byte, p int) { out = append(out, c); at = append(at, p) }); ok {
				// Consecutive dump lines spell one run of bytes: their
				// line ends go, and the timestamps before them (a CI
				// log's), but the last one's.
				next := end + 1
				if next < len(b) {
					n, _ := logStamp(b[next:])
					if _, more := dumpLine(b, next+n, false, nil); more {
						i, body = next+n, next+n
						run, whole = 0, false
						continue
					}
				}
				if end < len(b) {
					out = append(out, '\n')
					at = append(at, end)
				}
				i = lineStart(min(next, len(b)))
				continue
			}
		}
		switch {
		case o.qp && b[i] == '=' && i+1 < len(b) && (b[i+1] == '\n' || b[i+1] == '\r' && i+2 < len(b) && b[i+2] == '\n'):
			// A soft line break: the line goes on after it, after the
			// timestamp a CI log puts before every line.
			i += 2
			if b[i-1] == '\r' {
				i++
			}
			n, _ := logStamp(b[i:])
			i += n
			continue
		case o.qp && b[i] == '=' && i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]):
			h, _ := unhex(b[i+1])
			l, _ := unhex(b[i+2])
			out = append(out, h<<4|l)
			at = append(at, i)
			i += 3
			run, whole = 0, false
			continue
		case o.jsonEsc && b[i] == '\\' && i+1 < len(b):
			c, n := jsonEscape(b[i:])
			if n == 0 {
				// An escaped backslash: the 'u' or '/' after it is itself.
				out = append(out, b[i], b[i+1])
				at = append(at, i, i+1)
				i += 2
				run, whole = 0, false
				continue
			}
			if n > 0 {
				out = append(out, c)
				at = append(at, i)
				i += n
				run, whole = 0, false
				continue
			}
		case b[i] == '\r' || b[i] == 0 && nuls:
			i++
			continue
		case o.joins && b[i] == '\n' && continues(b[i+1:]):
			n, _ := logStamp(b[i+1:])
			i += 1 + n
			continue
		case wraps && b[i] == '\n' && whole && (run == wrapRuby || run == wrapShort || run == wrapLong):
			n, _ := logStamp(b[i+1:])
			i += 1 + n
			run = 0
			continue
		case b[i] == escByte && i+1 < len(b) && b[i+1] == '[':
			j := i + 2
			for j < len(b) && j-i-2 < csiMax && b[j] >= 0x20 && b[j] <= 0x3f {
				j++
			}
			if j < len(b) && b[j] >= 0x40 && b[j] <= 0x7e {
				i = j + 1
				continue
			}
		}
		out = append(out, b[i])
		at = append(at, i)
		i++
		switch {
		case b[i-1] == '\n':
			i = lineStart(i)
		case setB64Any[b[i-1]]:
			run++
		default:
			run, whole = 0, false
		}
	}
	return out, at
}

// Hex dumps (xxd, hexdump -C, od -A x -t x1z, od -x, hexdump) print 16
// bytes a line: an offset, the hex in groups, the bytes beside it. A token
// is cut at each line's end, in the hex and the text column alike; the
// masker (internal/mask, dump.go) masks it through the lines, and the
// scanner reads the bytes that consecutive dump lines spell, by the same
// grammar: an offset of 6 to 16 hex (or octal) digits, ':' or a space,
// groups of an even number of hex digits (at most 16) separated by spaces,
// then the line's end or, after two spaces or more, a text column ('|' or
// '>' delimits it, except after xxd's ':'). Groups of 4 digits or more
// after an offset without ':' are little-endian words (od -x, hexdump);
// the buffer is also read with each group in the other byte order (xxd -e,
// od --endian=big), as the masker reads both.
// A CI log's timestamp (logStamp) before a dump line is looked past, as
// after a quoted-printable soft line break.

// hasHexDump reports whether b holds a hex dump line.
func hasHexDump(b []byte) bool {
	for i := 0; i < len(b); {
		n, _ := logStamp(b[i:]) // a CI log's timestamp before the line
		if i += n; i+6 < len(b) && isHex(b[i+4]) && isHex(b[i]) && isHex(b[i+1]) && isHex(b[i+2]) && isHex(b[i+3]) && isHex(b[i+5]) {
			if _, ok := dumpLine(b, i, false, nil); ok {
				return true
			}
		}
		k := bytes.IndexByte(b[i:], '\n')
		if k < 0 {
			return false
		}
		i += k + 1
	}
	return false
}

// dumpLine reads the line of b that begins at i as a hex dump's, calling
// emit (when not nil) with each byte its groups spell and the offset of
// its group; swapped reads each group in the other byte order (xxd -e's
// little-endian words after a ':', od --endian=big's words in byte order
// without one). It returns the offset of the line's end (len(b) if none)
// and whether the line is a dump's; emit is called only if it is.
func dumpLine(b []byte, i int, swapped bool, emit func(c byte, at int)) (int, bool) {
	if i >= len(b) {
		return len(b), false // past a last line without its end: no line
	}
	end := len(b)
	if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
		end = i + k
	}
	line := b[i:end]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	n := 0
	for n < len(line) && n <= 16 && isHex(line[n]) {
		n++
	}
	if n < 6 || n > 16 || n == len(line) || line[n] != ':' && line[n] != ' ' {
		return end, false
	}
	colon := line[n] == ':'
	type group struct{ s, e int }
	var groups [64]group
	ng := 0
	j := n + 1
	for {
		sp := 0
		for j < len(line) && line[j] == ' ' {
			j++
			sp++
		}
		if j == len(line) {
			break
		}
		if ng > 0 && sp >= 2 && (colon || line[j] == '|' || line[j] == '>' || !isHex(line[j])) {
			break // the text column
		}
		if ng > 0 && sp == 0 || !isHex(line[j]) {
			return end, false
		}
		s := j
		for j < len(line) && isHex(line[j]) {
			j++
		}
		if (j-s)%2 != 0 || j-s > 16 || j < len(line) && line[j] != ' ' || ng == len(groups) {
			return end, false
		}
		groups[ng] = group{s, j}
		ng++
	}
	if ng == 0 {
		return end, false
	}
	if emit != nil {
		for _, g := range groups[:ng] {
			nb := (g.e - g.s) / 2
			for k := 0; k < nb; k++ {
				x := k
				if (!colon != swapped) && nb > 1 {
					x = nb - 1 - k // a little-endian word: its last byte printed first
				}
				h, _ := unhex(line[g.s+2*x])
				l, _ := unhex(line[g.s+2*x+1])
				emit(h<<4|l, i+g.s)
			}
		}
	}
	return end, true
}

// jsonEscape reads the escape at the start of b (a backslash): the
// character that \u00XX (printable ASCII only) or \/ stands for and its
// length; n is 0 for an escaped backslash and -1 for anything else, which
// is left as it is.
func jsonEscape(b []byte) (c byte, n int) {
	switch {
	case len(b) >= 2 && b[1] == '\\':
		return 0, 0
	case len(b) >= 2 && b[1] == '/':
		return '/', 2
	case len(b) >= 6 && b[1] == 'u' && b[2] == '0' && b[3] == '0' && isHex(b[4]) && isHex(b[5]):
		h, _ := unhex(b[4])
		l, _ := unhex(b[5])
		if c = h<<4 | l; c >= 0x20 && c < 0x7f {
			return c, 6
		}
	}
	return 0, -1
}
