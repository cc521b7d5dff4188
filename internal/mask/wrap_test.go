package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
)

// wrap cuts s into lines of width characters ending in eol, as base64(1)
// (76), PEM and MIME (64) print an encoding.
func wrap(s string, width int, eol string) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + eol)
		s = s[width:]
	}
	return b.String() + s + eol
}

// base64(1) wraps at 76 columns by default, PEM and MIME at 64, Ruby's
// Base64.encode64 at 60, so a secret's encoding longer than a line comes
// in pieces that are no form, and joining the lines gives the secret back.
// A newline ending a run of exactly 60, 64 or 76 base64 characters is
// looked through, as '\r' is; one after a line of another width is not.
func TestWrappedBase64Masked(t *testing.T) {
	tok := "mfy_" + strings.Repeat("Ab3dE", 6) + "Zx09Qw" // mayfly:allow job-token shaped
	long := "sk-live-" + strings.Repeat("q7Z2xK9mP4", 9)  // mayfly:allow a 98-byte API key
	huge := strings.Repeat("0123456789abcdefXYZ", 12)     // 228 bytes: its encoding spans 4 lines and more
	tests := []struct {
		name, secret, plain string
		width               int
		eol                 string
		masked              bool
	}{
		{"echo \"Authorization: Bearer $MAYFLY_TOKEN\" | base64", tok, "Authorization: Bearer " + tok + "\n", 76, "\n", true},
		{"echo \"$API_KEY\" | base64", long, long + "\n", 76, "\n", true},
		{"env | base64", tok, "HOME=/home/runner\nCI=true\nMAYFLY_TOKEN=" + tok + "\n", 76, "\n", true},
		{"PEM-style 64 columns", long, "key=" + long, 64, "\n", true},
		{"CRLF line ends", long, "x" + long, 76, "\r\n", true},
		{"several wraps inside one secret", huge, "v=" + huge, 64, "\n", true},
		{"Ruby's Base64.encode64, 60 columns", tok, "Authorization: Bearer " + tok + "\n", 60, "\n", true},
		{"lines of 72 are not joined", tok, "Authorization: Bearer " + tok + "\n", 72, "\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMatcher([][]byte{[]byte(tt.secret)})
			if err != nil {
				t.Fatal(err)
			}
			in := []byte("$ cmd | base64\n" + wrap(base64.StdEncoding.EncodeToString([]byte(tt.plain)), tt.width, tt.eol) + "$ next\n")
			// Every way of cutting the stream in two gives the same output.
			want := m.MaskBytes(in)
			if got := m.MaskString(string(in)); got != string(want) {
				t.Fatalf("MaskString %q, MaskBytes %q", got, want)
			}
			for cut := 0; cut <= len(in); cut++ {
				if got := maskParts(t, m, in, cut); !bytes.Equal(got, want) {
					t.Fatalf("cut at %d: %q, whole %q", cut, got, want)
				}
			}
			// Joining the lines must give no form of the secret back.
			joined := strings.NewReplacer("\r", "", "\n", "").Replace(string(want))
			if leaked := containsAny([]byte(joined), Forms([]byte(tt.secret))); leaked == tt.masked {
				t.Fatalf("masked %v, want %v: output %q", !leaked, tt.masked, want)
			}
			if !bytes.HasPrefix(want, []byte("$ cmd | base64\n")) || !bytes.HasSuffix(want, []byte("$ next\n")) {
				t.Errorf("text around the encoding changed: %q", want)
			}
		})
	}
}

func TestWrapNewline(t *testing.T) {
	b64 := func(n int) string { return strings.Repeat("Qw", n/2) + strings.Repeat("Q", n%2) }
	tests := []struct {
		name, in string
		want     string // normalize(in)
	}{
		{"76 then newline", b64(76) + "\n" + b64(10), b64(86)},
		{"64 then CRLF", "-----\n" + b64(64) + "\r\n" + b64(3) + "\n", "-----\n" + b64(67) + "\n"},
		{"60 then newline", b64(60) + "\n" + b64(10), b64(70)},
		{"59 is no wrap", b64(59) + "\n" + "ab", b64(59) + "\nab"},
		{"75 is no wrap", b64(75) + "\n" + "ab", b64(75) + "\nab"},
		{"77 is no wrap", b64(77) + "\n" + "ab", b64(77) + "\nab"},
		{"run after a space", "x " + b64(64) + "\nz", "x " + b64(64) + "z"},
		{"run that a space cuts", b64(10) + " " + b64(63) + "\nz", b64(10) + " " + b64(63) + "\nz"},
		{"URL alphabet", strings.Repeat("-_", 38) + "\nz", strings.Repeat("-_", 38) + "z"},
		{"two newlines: the second ends an empty run", b64(64) + "\n\nz", b64(64) + "\nz"},
		{"plain log", "ok  \tpkg 0.1s\n", "ok  \tpkg 0.1s\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(normalize([]byte(tt.in))); got != tt.want {
				t.Fatalf("normalize = %q, want %q", got, tt.want)
			}
			// The stream's scanner finds the same wraps however it is cut.
			var want []int64
			for i := 0; i < len(tt.in); i++ {
				if tt.in[i] == '\n' && (wrapCarry{}).isWrap([]byte(tt.in), i) {
					want = append(want, int64(i))
				}
			}
			for cut1 := 0; cut1 <= len(tt.in); cut1++ {
				for _, cut2 := range []int{cut1, min(cut1+1, len(tt.in)), len(tt.in)} {
					s := &scanner{a: &automaton{}}
					var got []int64
					for _, part := range []string{tt.in[:cut1], tt.in[cut1:cut2], tt.in[cut2:]} {
						s.findWraps([]byte(part))
						got = append(got, s.wraps...)
						s.pos += int64(len(part))
					}
					if !slices.Equal(got, want) {
						t.Fatalf("cut at %d and %d: wraps at %v, want %v", cut1, cut2, got, want)
					}
				}
			}
		})
	}
}

// xxd -p prints hex in lines of 60 characters, which are base64
// characters too: a secret whose hex straddles a line end is masked as a
// wrapped base64 form is.
func TestWrappedHexMasked(t *testing.T) {
	tok := "mfy_" + strings.Repeat("Ab3dE", 6) + "Zx09Qw" // mayfly:allow job-token shaped
	m := newTestMatcher(t, tok)
	for lead := 1; lead < 30; lead += 7 {
		in := "$ xxd -p .env\n" + wrap(hex.EncodeToString([]byte(strings.Repeat("#", lead)+"\nT="+tok+"\n")), 60, "\n")
		out := strings.ReplaceAll(m.MaskString(in), "\n", "")
		if strings.Contains(out, hex.EncodeToString([]byte(tok[4:20]))) || strings.Contains(out, hex.EncodeToString([]byte(tok[20:]))) {
			t.Errorf("lead %d: the hex of the token shows: %s", lead, out)
		}
	}
}
