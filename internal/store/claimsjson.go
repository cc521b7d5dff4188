package store

import (
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// claimsJSON encodes a lease's claims as json.Marshal does, byte for byte
// (keys sorted, HTML characters, U+2028/U+2029 and invalid UTF-8 escaped
// alike), without its reflection over the map: that was 3.5 % of an
// exchange's CPU (BenchmarkExchange). TestClaimsJSONIsMarshal and
// FuzzClaimsJSON hold it to json.Marshal.
func claimsJSON(claims map[string]string) []byte {
	if claims == nil {
		return []byte("null")
	}
	keys := make([]string, 0, len(claims))
	n := 2
	for k, v := range claims {
		keys = append(keys, k)
		n += len(k) + len(v) + 6
	}
	slices.Sort(keys)
	b := make([]byte, 0, n+n/8)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, claims[k])
	}
	return append(b, '}')
}

// appendJSONString appends s as json.Marshal does: a string needing no
// escape (the common case: refs, names, URLs) directly, anything else
// through json.Marshal itself, as audit's entries do.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
				q, _ := json.Marshal(s) // a string always encodes
				return append(b, q...)
			}
			i += size
			continue
		}
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
		i++
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
