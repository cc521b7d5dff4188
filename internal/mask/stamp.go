package mask

// A job log that GitHub Actions or GitLab hands out (downloaded through the
// gateway, or piped through `mayfly mask`) has a timestamp before every
// line. A secret's base64 wrapped over lines, a PEM block, a
// quoted-printable part or a hex dump then has one between each two of its
// pieces: after a wrap newline or a soft line break the normalising thread
// removes it as it removed the line end (normThread.step), and the dump
// thread reads a dump line after it (dump.go).
//
// The timestamp is RFC 3339 in UTC with an optional fraction and a space
// (GitHub Actions: "2026-12-07T06:00:00.1234567Z "), then for GitLab
// Runner's header two hex digits (the stream), O or E, and ' ' or '+'
// ("2026-12-07T06:00:00.123456Z 00O "), as the scanner reads it
// (internal/scan, logStamp).

// stampMax is the longest timestamp: 19 bytes, a fraction of 9 digits,
// "Z " and GitLab's header.
const stampMax = 19 + 10 + 2 + 4

// stampScan reads b, the bytes after a line's start (at most stampMax of
// them), as a timestamp: whole is the length of the longest whole one b
// begins with (0: none), and more says whether the bytes after b may still
// make b the start of a longer one.
func stampScan[T string | []byte](b T) (whole int, more bool) {
	const shape = "dddd-dd-ddTdd:dd:dd"
	for i := 0; i < len(shape); i++ {
		if i == len(b) {
			return 0, true
		}
		if shape[i] == 'd' && !isDecDigit(b[i]) || shape[i] != 'd' && b[i] != shape[i] {
			return 0, false
		}
	}
	i := len(shape)
	if i < len(b) && b[i] == '.' {
		j := i + 1
		for j < len(b) && j-i <= 9 && isDecDigit(b[j]) {
			j++
		}
		if j == len(b) {
			return 0, true // the 'Z' is still to come
		}
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i == len(b) {
		return 0, true
	}
	if b[i] != 'Z' {
		return 0, false
	}
	if i++; i == len(b) {
		return 0, true
	}
	if b[i] != ' ' {
		return 0, false
	}
	i++
	whole = i
	for k := 0; k < 4; k++ {
		if i+k == len(b) {
			return whole, true
		}
		c := b[i+k]
		var ok bool
		switch k {
		case 0, 1:
			ok = isDecDigit(c) || c >= 'a' && c <= 'f'
		case 2:
			ok = c == 'O' || c == 'E'
		case 3:
			ok = c == ' ' || c == '+'
		}
		if !ok {
			return whole, false
		}
	}
	return i + 4, false
}

func isDecDigit(c byte) bool { return c >= '0' && c <= '9' }
