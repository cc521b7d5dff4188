package mask

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// xxdDump is data as xxd prints it (with upper: xxd -u): an offset and
// ':', 16 bytes a line in groups of two, two spaces, the text column.
func xxdDump(data []byte, upper bool) string {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		var h strings.Builder
		for i, c := range line {
			if i > 0 && i%2 == 0 {
				h.WriteByte(' ')
			}
			if upper {
				fmt.Fprintf(&h, "%02X", c)
			} else {
				fmt.Fprintf(&h, "%02x", c)
			}
		}
		fmt.Fprintf(&b, "%08x: %-39s  %s\n", off, h.String(), dumpText(line))
	}
	return b.String()
}

// odDump is data as od -A x -t x1z prints it (an offset, 16 bytes a line
// one by one, the text column between '>' and '<'), or with words as
// od -x prints it (an octal offset, 16-bit little-endian words, no text
// column).
func odDump(data []byte, words bool) string {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		if words {
			fmt.Fprintf(&b, "%07o", off)
			for i := 0; i < len(line); i += 2 {
				w := uint16(line[i])
				if i+1 < len(line) {
					w |= uint16(line[i+1]) << 8
				}
				fmt.Fprintf(&b, " %04x", w)
			}
			b.WriteByte('\n')
			continue
		}
		var h strings.Builder
		for _, c := range line {
			fmt.Fprintf(&h, " %02x", c)
		}
		fmt.Fprintf(&b, "%06x%-48s  >%s<\n", off, h.String(), dumpText(line))
	}
	if words {
		fmt.Fprintf(&b, "%07o\n", len(data))
	} else {
		fmt.Fprintf(&b, "%06x\n", len(data))
	}
	return b.String()
}

// xxdLEDump is data as xxd -e prints it: an offset and ':', 16 bytes a
// line in little-endian words of 4 bytes, two spaces, the text column.
func xxdLEDump(data []byte) string {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		var h strings.Builder
		for i := 0; i < len(line); i += 4 {
			if i > 0 {
				h.WriteByte(' ')
			}
			w := slices.Clone(line[i:min(i+4, len(line))])
			slices.Reverse(w)
			fmt.Fprintf(&h, "%x", w)
		}
		fmt.Fprintf(&b, "%08x: %-35s  %s\n", off, h.String(), dumpText(line))
	}
	return b.String()
}

// odBEDump is data as od -A x -t x2 --endian=big prints it (with text,
// -t x2z): big-endian words of 2 bytes, that is the bytes in order.
func odBEDump(data []byte, text bool) string {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		line := data[off:min(off+16, len(data))]
		var h strings.Builder
		for i := 0; i < len(line); i += 2 {
			fmt.Fprintf(&h, " %x", line[i:min(i+2, len(line))])
		}
		if text {
			fmt.Fprintf(&b, "%06x%-40s  >%s<\n", off, h.String(), dumpText(line))
		} else {
			fmt.Fprintf(&b, "%06x%s\n", off, h.String())
		}
	}
	fmt.Fprintf(&b, "%06x\n", len(data))
	return b.String()
}

func dumpText(line []byte) string {
	return string(bytes.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '.'
		}
		return r
	}, line))
}

// readDump is what a reader recovers from a dump: the bytes its lines'
// hex groups spell (16-bit words swapped when words), and its text
// columns joined.
func readDump(out string, words bool) (data, text string) {
	var d, tx strings.Builder
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			g, err := hex.DecodeString(f[i])
			if err != nil {
				tx.WriteString(strings.Trim(strings.Join(f[i:], " "), "|<>"))
				break
			}
			if words {
				slices.Reverse(g)
			}
			d.Write(g)
		}
	}
	return d.String(), tx.String()
}

// A job dumping a file or a response in hex (xxd, hexdump -C, od): the
// dump prints 16 bytes a line, the hex in groups and the text beside it, so
// a secret that does not fit in what is left of a line comes in pieces,
// in the hex and in the text column alike, and neither piece is a form.
// Whatever line it starts on, neither the hex nor the text column may give
// it back; and cutting the stream anywhere changes nothing.
func TestHexDumpMasked(t *testing.T) {
	for _, secret := range []string{"hunter2-plain-Secret9", "sk-live-q7Z2xK9mP4q7Z2xK9mP4q7Z2xK9mP4q7"} { // mayfly:allow test secrets
		m := newTestMatcher(t, secret)
		formats := []struct {
			name  string
			dump  func([]byte) string
			words bool
		}{
			{"xxd", func(b []byte) string { return xxdDump(b, false) }, false},
			{"xxd -u", func(b []byte) string { return xxdDump(b, true) }, false},
			{"hexdump -C", func(b []byte) string { return hex.Dump(b) + fmt.Sprintf("%08x\n", len(b)) }, false},
			{"od -A x -t x1z", func(b []byte) string { return odDump(b, false) }, false},
			{"od -x", func(b []byte) string { return odDump(b, true) }, true},
			{"xxd -e", xxdLEDump, true},
			{"od -A x -t x2z --endian=big", func(b []byte) string { return odBEDump(b, true) }, false},
			{"od -t x2 --endian=big", func(b []byte) string { return odBEDump(b, false) }, false},
		}
		for _, f := range formats {
			for lead := 0; lead < 20; lead++ {
				data := []byte(strings.Repeat("#", lead) + "export API_TOKEN=" + secret + "\nnext line\n")
				dump := f.dump(data)
				// A long line, then a short one: the search for line ends
				// jumps over the short one and the dump's first lines.
				before := "$ xxd .env\n"
				if lead%2 == 1 {
					before = strings.Repeat("a long line of build output ", 3) + "\n$ xxd\n"
				}
				in := []byte(before + dump + "$ done\n")
				if d, _ := readDump(dump, f.words); !strings.HasPrefix(d, string(data)) { // od -x pads an odd length
					t.Fatalf("%s: precondition: the test reads %q back from %q", f.name, d, dump)
				}
				out := string(m.MaskBytes(in))
				d, text := readDump(out, f.words)
				for _, piece := range []string{secret[:MinSecretLen+2], secret[len(secret)-MinSecretLen-2:]} {
					if strings.Contains(d, piece) {
						t.Fatalf("%s, lead %d: the hex of %q can be read back from\n%s", f.name, lead, piece, out)
					}
					if strings.Contains(text, piece) {
						t.Fatalf("%s, lead %d: the text column gives %q back in\n%s", f.name, lead, piece, out)
					}
				}
				if !strings.HasPrefix(out, before) || !strings.HasSuffix(out, "$ done\n") {
					t.Fatalf("%s, lead %d: the text around the dump changed:\n%s", f.name, lead, out)
				}
				if lead%7 != 3 {
					continue
				}
				for cut := 0; cut <= len(in); cut++ {
					if got := maskParts(t, m, in, cut); string(got) != out {
						t.Fatalf("%s, lead %d, cut %d: %q, in one piece %q", f.name, lead, cut, got, out)
					}
				}
			}
		}
	}
}

// Lines that begin like a dump's (a git log --oneline, a table of
// digests) and plain text are left alone.
func TestHexDumpLookalikesIntact(t *testing.T) {
	m := newTestMatcher(t, "hunter2-plain-Secret9")
	for _, in := range []string{
		"3f2a9c1 Fix the build\n0123abc add feature dead beef\n",
		"00000000: 6865 6c6c 6f20 776f 726c 640a            hello world.\n",
		"deadbeef cafe babe 0011 2233\nabcdef012345 not a dump\n",
		"000000 68 65 6c 6c 6f\n000005\n",
	} {
		if got := string(m.MaskBytes([]byte(in))); got != in {
			t.Errorf("%q became %q", in, got)
		}
	}
}

// A line that begins as a dump's and never ends (an upstream's body, a
// job's output without a line end) must not make the masker hold all of
// it: the text column after groups that spell a form, or a long run of
// spaces or text after a partial one, was held until the line end, so a
// job could make the gateway buffer a response whole (its own token's
// hex, then endless bytes, through an upstream that echoes) and `mayfly
// exec`'s output stopped flowing while the command kept writing. Held
// stays within MaxHeld, and a form the groups spell stays masked, in the
// hex and in the text column.
func TestDumpLineHoldBounded(t *testing.T) {
	const secret = "mfy_0123456789abcdefghij"
	m := newTestMatcher(t, secret)
	first := xxdDump([]byte(secret), false)
	first = first[:strings.IndexByte(first, '\n')+1]
	for _, tc := range []struct {
		name, start string
		fill        byte
		form        bool // the start holds a whole form
	}{
		{"text column after a form", strings.TrimSuffix(xxdDump([]byte(secret+"-more"), false), "\n"), 'x', true},
		{"text column after a partial form", strings.TrimSuffix(xxdDump([]byte(secret[:16]), false), "\n"), 'x', false},
		{"spaces after a partial form", strings.TrimSuffix(xxdDump([]byte(secret[:8]), false), dumpText([]byte(secret[:8]))+"\n"), ' ', false},
		{"spaces after an offset, a partial form on the line before", first + "00000010:", ' ', false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := m.NewStream(StreamOptions{})
			out := st.Mask(nil, []byte(tc.start))
			fill := bytes.Repeat([]byte{tc.fill}, 4096)
			for range 64 {
				out = st.Mask(out, fill)
				if st.Held() > m.MaxHeld() {
					t.Fatalf("holding %d bytes of a line without end, MaxHeld %d", st.Held(), m.MaxHeld())
				}
			}
			out = st.Flush(out, MinSecretLen)
			if data, text := readDump(string(out), false); tc.form && (strings.Contains(data, secret[4:12]) || strings.Contains(text, secret[16:])) {
				t.Fatalf("a piece of the secret shows: %q", out[:min(len(out), 200)])
			}
		})
	}
}
