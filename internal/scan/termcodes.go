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

// stripTermCodes returns b without '\r' bytes and CSI sequences (ESC '[',
// at most csiMax bytes in 0x20-0x3F, one final byte in 0x40-0x7E; an ESC
// that does not start one is kept), and for each byte of the result its
// offset in b.
func stripTermCodes(b []byte) ([]byte, []int) {
	out := make([]byte, 0, len(b))
	at := make([]int, 0, len(b))
	for i := 0; i < len(b); {
		switch {
		case b[i] == '\r':
			i++
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
	}
	return out, at
}
