package scan

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// hexDump prints data as the dump tool format names does: 16 bytes a
// line.
func hexDump(data []byte, format string) string {
	if format == "hexdump -C" {
		return hex.Dump(data) + fmt.Sprintf("%08x\n", len(data))
	}
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		text := bytes.Map(func(r rune) rune {
			if r < ' ' || r > '~' {
				return '.'
			}
			return r
		}, line)
		switch format {
		case "xxd":
			var h strings.Builder
			for i, c := range line {
				if i > 0 && i%2 == 0 {
					h.WriteByte(' ')
				}
				fmt.Fprintf(&h, "%02x", c)
			}
			fmt.Fprintf(&b, "%08x: %-39s  %s\n", off, h.String(), text)
		case "od -A x -t x1z":
			var h strings.Builder
			for _, c := range line {
				fmt.Fprintf(&h, " %02x", c)
			}
			fmt.Fprintf(&b, "%06x%-48s  >%s<\n", off, h.String(), text)
		case "xxd -e":
			var h strings.Builder
			for i := 0; i < len(line); i += 4 {
				if i > 0 {
					h.WriteByte(' ')
				}
				w := slices.Clone(line[i:min(i+4, len(line))])
				slices.Reverse(w)
				fmt.Fprintf(&h, "%x", w)
			}
			fmt.Fprintf(&b, "%08x: %-35s  %s\n", off, h.String(), text)
		case "od -A x -t x2z --endian=big":
			var h strings.Builder
			for i := 0; i < len(line); i += 2 {
				fmt.Fprintf(&h, " %x", line[i:min(i+2, len(line))])
			}
			fmt.Fprintf(&b, "%06x%-40s  >%s<\n", off, h.String(), text)
		case "od -x":
			fmt.Fprintf(&b, "%07o", off)
			for i := 0; i < len(line); i += 2 {
				w := uint16(line[i])
				if i+1 < len(line) {
					w |= uint16(line[i+1]) << 8
				}
				fmt.Fprintf(&b, " %04x", w)
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// A hex dump of a file or response holding a token (xxd .env, hexdump -C,
// od) prints it 16 bytes a line, its hex and its text column cut at each
// line's end: the masker masks it; mayfly scan must find it and a
// /v1/leaks report of that log revoke it, on whatever line it starts.
func TestScanHexDump(t *testing.T) {
	s := newScanner(t, Options{})
	for _, format := range []string{"xxd", "hexdump -C", "od -A x -t x1z", "od -x", "xxd -e", "od -A x -t x2z --endian=big"} {
		for lead := 0; lead < 16; lead += 3 {
			tok := jobToken(t)
			data := strings.Repeat("#", lead) + "MAYFLY_TOKEN=" + tok + "\nCI=true\n"
			log := "$ " + format + " .env\n" + hexDump([]byte(data), format) + "$ next step\n"
			if strings.Contains(log, tok) {
				t.Fatalf("precondition: the token is whole in %q", log)
			}
			var found []string
			for _, f := range s.ScanBytes("ci.log", []byte(log)) {
				found = append(found, f.Secret)
			}
			if !slices.Contains(found, tok) {
				t.Errorf("%s, lead %d: scan misses the token (findings %d)", format, lead, len(found))
			}
			if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
				t.Errorf("%s, lead %d: /v1/leaks would not revoke it (tokens %d)", format, lead, len(rep.Tokens))
			}
		}
	}
}
