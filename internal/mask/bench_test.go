package mask

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchSecrets makes n random 32-byte secrets of printable characters.
func benchSecrets(n int) [][]byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.@!"
	r := rand.New(rand.NewPCG(7, 8))
	out := make([][]byte, n)
	for i := range out {
		s := make([]byte, 32)
		for j := range s {
			s[j] = alphabet[r.IntN(len(alphabet))]
		}
		out[i] = s
	}
	return out
}

// benchLog is about 4 MiB of build-log-like text (words, paths, hex and
// base64 digests, colour codes, some "\r\n") with a secret every ~500 lines.
func benchLog(secrets [][]byte) []byte {
	r := rand.New(rand.NewPCG(9, 10))
	words := strings.Fields("the build step compiling linking test passed failed ok go run pkg internal " +
		"cache download module version error warning info debug using from with into main " +
		"docker image layer push pull sha256 digest artifact upload token request response")
	var b bytes.Buffer
	for line := 0; b.Len() < 4<<20; line++ {
		fmt.Fprintf(&b, "2025-01-%02dT12:%02d:%02dZ ", 1+r.IntN(28), r.IntN(60), r.IntN(60))
		if line%7 == 0 {
			b.WriteString("\x1b[32mINFO\x1b[0m ")
		}
		for k := 3 + r.IntN(10); k > 0; k-- {
			switch r.IntN(12) {
			case 0:
				fmt.Fprintf(&b, "%x ", r.Uint64())
			case 1:
				fmt.Fprintf(&b, "pkg/%s/%s.go:%d ", words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(900))
			case 2:
				var raw [18]byte
				for i := range raw {
					raw[i] = byte(r.Uint32())
				}
				fmt.Fprintf(&b, "%x ", raw)
			default:
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
		}
		if line%500 == 0 && len(secrets) > 0 {
			b.Write(secrets[r.IntN(len(secrets))])
		}
		if line%3 == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// BenchmarkMask streams a log through the masker in 32 KiB writes, with a
// plain io.Copy ("cat") as the baseline.
func BenchmarkMask(b *testing.B) {
	all := benchSecrets(100)
	b.Run("cat", func(b *testing.B) {
		data := benchLog(all[:1])
		b.SetBytes(int64(len(data)))
		buf := make([]byte, 32<<10)
		for b.Loop() {
			// Hide WriteTo and ReadFrom: read into a buffer, write it out.
			_, _ = io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{bytes.NewReader(data)}, buf)
		}
	})
	for _, n := range []int{1, 100} {
		secrets := all[:n]
		m, err := NewMatcher(secrets)
		if err != nil {
			b.Fatal(err)
		}
		data := benchLog(secrets)
		for _, exact := range []bool{false, true} {
			name := fmt.Sprintf("secrets=%d", n)
			if exact {
				// The automaton over every byte, without the skip
				// filter: what the filter saves.
				name += "/exact"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					w := m.NewWriter(io.Discard, Options{Idle: -1})
					w.s.exactOnly = exact
					for p := data; len(p) > 0; {
						k := min(len(p), 32<<10)
						_, _ = w.Write(p[:k])
						p = p[k:]
					}
					_ = w.Close()
				}
			})
		}
		b.Run(fmt.Sprintf("MaskBytes/secrets=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_ = m.MaskBytes(data)
			}
		})
	}
}

func BenchmarkNewMatcher(b *testing.B) {
	secrets := benchSecrets(100)
	for b.Loop() {
		if _, err := NewMatcher(secrets); err != nil {
			b.Fatal(err)
		}
	}
}
