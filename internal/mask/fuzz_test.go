package mask

import (
	"bytes"
	"slices"
	"testing"
)

// patternsOf is what NewMatcher looks for: every form and its normalised
// variant.
func patternsOf(secrets [][]byte) [][]byte {
	var ps [][]byte
	for _, s := range secrets {
		for _, f := range Forms(s) {
			ps = append(ps, f)
			if n := normalize(f); len(n) >= MinSecretLen {
				ps = append(ps, n)
			}
		}
	}
	return ps
}

// refEnds is what a whole stream in masks at its ends, the slow way: at
// its start the longest suffix of a pattern (not all of it) of headGram
// bytes or more, or all of in when it is that long and lies inside a
// pattern (neither its start nor its end); at its end the longest
// beginning of a pattern (not all of it) of MinSecretLen bytes or more.
func refEnds(in []byte, patterns [][]byte) (head, tail int) {
	for _, p := range patterns {
		for k := 1; k < len(p); k++ {
			if l := len(p) - k; l >= headGram && l <= len(in) && bytes.Equal(in[:l], p[k:]) {
				head = max(head, l)
			}
			if len(in) >= headGram && k+len(in) < len(p) && bytes.Equal(in, p[k:k+len(in)]) {
				head = max(head, len(in))
			}
		}
		for l := MinSecretLen; l < len(p) && l <= len(in); l++ {
			if bytes.Equal(in[len(in)-l:], p[:l]) {
				tail = max(tail, l)
			}
		}
	}
	return head, tail
}

// endsIn reports whether refEnds finds anything in in.
func endsIn(in []byte, patterns [][]byte) bool {
	h, t := refEnds(in, patterns)
	return h+t > 0
}

// refMask masks every literal occurrence of every pattern the slow way:
// the union of the occurrences and of what refEnds gives, one replacement
// per overlapping run.
func refMask(in []byte, patterns [][]byte) []byte {
	type iv struct{ s, e int }
	var ivs []iv
	for _, p := range patterns {
		for i := 0; i+len(p) <= len(in); i++ {
			if bytes.Equal(in[i:i+len(p)], p) {
				ivs = append(ivs, iv{i, i + len(p)})
			}
		}
	}
	if head, tail := refEnds(in, patterns); head > 0 || tail > 0 {
		if head > 0 {
			ivs = append(ivs, iv{0, head})
		}
		if tail > 0 {
			ivs = append(ivs, iv{len(in) - tail, len(in)})
		}
	}
	slices.SortFunc(ivs, func(a, b iv) int { return a.s - b.s })
	var out []byte
	done := 0
	for k := 0; k < len(ivs); {
		cur := ivs[k]
		for k++; k < len(ivs) && ivs[k].s < cur.e; k++ {
			cur.e = max(cur.e, ivs[k].e)
		}
		out = append(out, in[done:cur.s]...)
		out = append(out, DefaultReplacement...)
		done = cur.e
	}
	return append(out, in[done:]...)
}

func containsAny(b []byte, ps [][]byte) bool {
	for _, p := range ps {
		if bytes.Contains(b, p) {
			return true
		}
	}
	return false
}

// fuzzSecrets are fewer and shorter than testSecrets, to build fast.
var fuzzSecrets = []string{
	"hunter2-plain-Secret9",
	`p@ss w/rd"&<>\+%`,
	"line-one-aaaa\r\nline-two-bbbb\n",
	"\x00\x01bin\xff\x1b[1m\rary",
}

// FuzzMask: data is the stream, optionally led by a secret of its own (the
// first byte gives its length); split picks where to cut the stream into
// three Writes and whether to plant a form of some secret in it.
func FuzzMask(f *testing.F) {
	for _, s := range fuzzSecrets {
		for i, form := range Forms([]byte(s)) {
			f.Add(append([]byte("\x00pre "), append(form, " post\r\n"...)...), uint(i*7919))
		}
	}
	f.Add([]byte("\x0aabcdefghij xx abc\x1b[31mdefghij \rabcd\refghij"), uint(12345))
	f.Add([]byte("\x00hunter2-plain-Secret9"), uint(1))
	// A wrapped base64 form with a CI log's timestamp on each line.
	f.Add([]byte("\x00"+stampLines(wrap("QXV0aG9yaXphdGlvbjogQmVhcmVyIGh1bnRlcjItcGxhaW4tU2VjcmV0OSBhbmQgdGhlIHJlc3Qgb2YgaXQ=", 76, "\n"),
		"2026-12-07T06:00:00.1234567Z ")), uint(77))
	var base [][]byte
	for _, s := range fuzzSecrets {
		base = append(base, []byte(s))
	}
	// Built once: with every form of every secret, a Matcher takes a while
	// (most seeds add no secret of their own).
	baseMatcher, err := NewMatcher(base)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		secrets := slices.Clone(base)
		stream := data
		if len(data) > 0 {
			n := int(data[0]) % 48
			if n >= MinSecretLen && len(data) > n && bytes.IndexByte(data[1:1+n], '*') < 0 {
				secrets = append(secrets, data[1:1+n])
				stream = data[1+n:]
			} else {
				stream = data[1:]
			}
		}
		var forms [][]byte
		for _, s := range secrets {
			forms = append(forms, Forms(s)...)
		}
		if split&1 == 1 {
			form := forms[(split>>1)%uint(len(forms))]
			at := int((split >> 16) % uint(len(stream)+1))
			stream = append(append(append([]byte{}, stream[:at]...), form...), stream[at:]...)
		}
		m := baseMatcher
		if len(secrets) > len(base) {
			var err error
			if m, err = NewMatcher(secrets); err != nil {
				t.Fatal(err)
			}
		}
		a := int((split >> 8) % uint(len(stream)+1))
		b := int((split >> 24) % uint(len(stream)+1))
		out := maskParts(t, m, stream, min(a, b), max(a, b))

		if got := m.MaskStringTail(string(stream), MinSecretLen); got != string(out) {
			t.Fatalf("MaskStringTail %q != Writer %q", got, out)
		}
		for _, f := range forms {
			if bytes.Contains(out, f) {
				t.Fatalf("form %q survives: in %q out %q", f, stream, out)
			}
		}
		patterns := patternsOf(secrets)
		// Nothing for the normalising thread to look through, and no line
		// that the dump thread reads (dump.go).
		if len(normalize(stream)) == len(stream) && !hasDumpOffset(stream) {
			if want := refMask(stream, patterns); !bytes.Equal(out, want) {
				t.Fatalf("in %q: got %q, want %q", stream, out, want)
			}
		} else if h, t1 := refEnds(stream, patterns); !containsAny(stream, patterns) && !containsAny(normalize(stream), patterns) &&
			h+t1 == 0 && !endsIn(normalize(stream), patterns) && !bytes.Equal(out, stream) {
			t.Fatalf("nothing to mask in %q, got %q", stream, out)
		}
	})
}

// hasDumpOffset reports whether a line of b begins as a hex dump's.
func hasDumpOffset(b []byte) bool {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if dumpOffset(line) {
			return true
		}
	}
	return false
}
