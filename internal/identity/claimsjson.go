package identity

import (
	"encoding/json"
	"unicode/utf8"
)

// flatClaims decodes the common shape of an ID token's claims without
// encoding/json's reflection: one object of plain strings (no escape, no
// control character, valid UTF-8), JSON numbers, true, false and null,
// then only white space. It gives exactly what decodeClaims' decoder gives
// for such a payload (keys and strings share one copy of it, numbers are
// json.Number, a repeated name keeps its last value), and ok false for
// anything else (an array, a nested object, an escape, trailing data, a
// malformed payload), which decodeClaims then decodes with encoding/json
// as before. Decoding the claims with encoding/json was a third of
// Verify's CPU besides RSA and a quarter of an exchange's allocations
// (BenchmarkExchange); FuzzFlatClaims holds this to encoding/json.
func flatClaims(payload []byte) (map[string]any, bool) {
	s := string(payload)
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return nil, false
	}
	claims := make(map[string]any, 32)
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return claims, skipSpace(s, i+1) == len(s)
	}
	for {
		key, j, ok := plainString(s, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(s, j)
		if i >= len(s) || s[i] != ':' {
			return nil, false
		}
		i = skipSpace(s, i+1)
		if i >= len(s) {
			return nil, false
		}
		var v any
		switch c := s[i]; {
		case c == '"':
			var str string
			if str, i, ok = plainString(s, i); !ok {
				return nil, false
			}
			v = str
		case c == '-' || c >= '0' && c <= '9':
			j := number(s, i)
			if j < 0 {
				return nil, false
			}
			v, i = json.Number(s[i:j]), j
		case hasWord(s, i, "true"):
			v, i = true, i+4
		case hasWord(s, i, "false"):
			v, i = false, i+5
		case hasWord(s, i, "null"):
			v, i = nil, i+4
		default:
			return nil, false
		}
		claims[key] = v
		i = skipSpace(s, i)
		if i >= len(s) {
			return nil, false
		}
		switch s[i] {
		case ',':
			i = skipSpace(s, i+1)
		case '}':
			return claims, skipSpace(s, i+1) == len(s)
		default:
			return nil, false
		}
	}
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the JSON string starting at s[i] (a quote) when it
// holds no escape and no control character and is valid UTF-8: such a
// string decodes to its own bytes. It returns the string and the index
// after its closing quote.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	start, ascii := i+1, true
	for j := start; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			if !ascii && !utf8.ValidString(s[start:j]) {
				return "", 0, false
			}
			return s[start:j], j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", 0, false
}

// number returns the index after the JSON number (RFC 8259 section 6)
// starting at s[i], or -1 when there is none.
func number(s string, i int) int {
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(i + 1)
	default:
		return -1
	}
	if i < len(s) && s[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

// hasWord reports whether the literal w starts at s[i].
func hasWord(s string, i int, w string) bool {
	return len(s)-i >= len(w) && s[i:i+len(w)] == w
}
