package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The gateway masks the upstream credential and the job token in every
// response (headers, body, trailers) with its own small replacer rather
// than the CI-log masker of internal/mask: that one normalises terminal
// escapes and builds an automaton over dozens of encodings, which costs
// about a millisecond per secret set and runs at tens of MB/s; here the set
// is a handful of fixed byte strings searched with bytes.Index.

const maskReplacement = "***"

// redactor holds the byte strings to mask in one response. It is never
// changed once built, so responses of one token share it.
type redactor struct {
	pats           [][]byte
	strs           []string // pats as strings, for headers: no conversion per value
	minLen, maxLen int
}

func newRedactor(sets ...[][]byte) *redactor {
	r := &redactor{}
	for _, set := range sets {
		for _, p := range set {
			if len(p) == 0 || slices.Contains(r.strs, string(p)) {
				continue
			}
			r.pats = append(r.pats, p)
			r.strs = append(r.strs, string(p))
			r.maxLen = max(r.maxLen, len(p))
			if r.minLen == 0 || len(p) < r.minLen {
				r.minLen = len(p)
			}
		}
	}
	return r
}

// secretForms returns the forms of a secret value an upstream could send
// back: the value, its base64 (standard and URL alphabets, padded or not),
// its URL- and JSON-escaped forms, and, when the value is itself base64
// (a Basic credential), what it decodes to and the password in it.
func secretForms(v []byte) [][]byte {
	if len(v) == 0 {
		return nil
	}
	out := [][]byte{bytes.Clone(v)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		out = append(out, []byte(enc.EncodeToString(v)))
	}
	s := string(v)
	out = append(out, []byte(url.QueryEscape(s)), []byte(url.PathEscape(s)))
	if j, err := json.Marshal(s); err == nil && len(j) >= 2 {
		out = append(out, j[1:len(j)-1], bytes.ReplaceAll(j[1:len(j)-1], []byte("/"), []byte(`\/`)))
	}
	if dec, err := base64.StdEncoding.DecodeString(s); err == nil && len(dec) >= 8 {
		out = append(out, dec)
		if _, pass, ok := bytes.Cut(dec, []byte(":")); ok && len(pass) >= 8 {
			out = append(out, pass)
		}
	}
	return out
}

// tokenForms: the job token and its base64.
func tokenForms(tok string) [][]byte {
	return [][]byte{[]byte(tok), []byte(base64.StdEncoding.EncodeToString([]byte(tok))),
		[]byte(base64.RawURLEncoding.EncodeToString([]byte(tok)))}
}

// maskString replaces every pattern in s.
func (r *redactor) maskString(s string) string {
	if len(s) < r.minLen {
		return s // most header values: shorter than any form
	}
	hit := false
	for _, p := range r.strs {
		if strings.Contains(s, p) {
			hit = true
			break
		}
	}
	if !hit {
		return s
	}
	out, _ := r.mask([]byte(s), nil, true)
	return string(out)
}

// maskHeader masks every value of h in place.
func (r *redactor) maskHeader(h http.Header) {
	for k, vs := range h {
		for i, v := range vs {
			vs[i] = r.maskString(v)
		}
		if m := r.maskString(k); m != k {
			// A header name holding a secret: drop it.
			delete(h, k)
		}
	}
}

// mask appends buf, with every match replaced, to dst. Unless final, it
// holds back the shortest tail that could still become a match (a suffix
// that is a proper prefix of a pattern, and any match overlapping it), and
// returns the number of bytes of buf it consumed. When final, a tail that is
// a prefix of a pattern and at least 8 bytes long is masked too: a secret
// cut off by the end of the body still does not show.
func (r *redactor) mask(buf, dst []byte, final bool) ([]byte, int) {
	ivs := r.find(buf)
	cut := len(buf)
	if held := r.partialTail(buf); held > 0 {
		if !final {
			cut = len(buf) - held
		} else if held >= 8 {
			ivs = append(ivs, iv{len(buf) - held, len(buf)})
		}
	}
	// Pull the cut back over any match that crosses it, until none does,
	// but never hold more than twice the longest pattern (a run of
	// overlapping matches is then masked up to the cut).
	for moved := true; moved && !final; {
		moved = false
		for _, m := range ivs {
			if m.s < cut && m.e > cut {
				cut, moved = m.s, true
			}
		}
	}
	if floor := len(buf) - 2*r.maxLen; !final && cut < floor {
		cut = floor
	}
	if len(ivs) == 0 {
		return append(dst, buf[:cut]...), cut
	}
	// Sort by start and merge.
	slices.SortFunc(ivs, func(a, b iv) int { return a.s - b.s })
	pos := 0
	for k := 0; k < len(ivs); {
		s, e := ivs[k].s, ivs[k].e
		k++
		for k < len(ivs) && ivs[k].s < e {
			e = max(e, ivs[k].e)
			k++
		}
		if s >= cut {
			break
		}
		e = min(e, cut)
		dst = append(dst, buf[pos:s]...)
		dst = append(dst, maskReplacement...)
		pos = e
	}
	if pos < cut {
		dst = append(dst, buf[pos:cut]...)
	}
	return dst, cut
}

// iv is a run of bytes [s, e) to mask.
type iv struct{ s, e int }

// find returns the runs of buf that match a pattern, overlapping runs of
// one pattern merged (runs of different patterns may still overlap).
func (r *redactor) find(buf []byte) []iv {
	var ivs []iv
	for _, p := range r.pats {
		for off := 0; ; {
			i := bytes.Index(buf[off:], p)
			if i < 0 {
				break
			}
			s, e := off+i, off+i+len(p)
			// Matches of one pattern come in order: extend the last run
			// rather than keep one interval per overlapping match.
			if n := len(ivs); n > 0 && ivs[n-1].e >= s && ivs[n-1].s <= s {
				ivs[n-1].e = max(ivs[n-1].e, e)
			} else {
				ivs = append(ivs, iv{s, e})
			}
			off = s + 1
		}
	}
	return ivs
}

// partialTail is the length of the longest suffix of buf that is a proper
// prefix of some pattern.
func (r *redactor) partialTail(buf []byte) int {
	best := 0
	for _, p := range r.pats {
		for l := min(len(p)-1, len(buf)); l > best; l-- {
			if buf[len(buf)-l] == p[0] && bytes.Equal(buf[len(buf)-l:], p[:l]) {
				best = l
				break
			}
		}
	}
	return best
}

// maskBody is a response body with every pattern masked as it streams. Its
// memory is bounded by the read size plus twice the longest pattern, and
// comes from the gateway's buffer pool: a fresh 32 KiB per response was
// most of the gateway's allocation, and so of its GC work. When pad is set
// (the upstream declared a Content-Length), the body ends with as many
// spaces as masking removed, so that the length stays what the header
// says. onEOF runs once the upstream body has ended (trailers are then
// known).
type maskBody struct {
	src         io.ReadCloser
	r           *redactor
	pool        *bufPool
	pending     []byte // input not yet released
	out         []byte // masked output not yet returned
	outOff      int
	in, emitted int64
	pad         bool
	padLeft     int64
	done        bool
	err         error
	onEOF       func()
	// short: the last read from the upstream returned less than asked and
	// more is to come, so the upstream may be slow: what was read should
	// reach the client now (respWriter flushes).
	short bool
}

// minRead is the least free room a read into pending is given.
const minRead = 4 << 10

func newMaskBody(src io.ReadCloser, r *redactor, pool *bufPool, pad bool, onEOF func()) *maskBody {
	return &maskBody{src: src, r: r, pool: pool, pad: pad, onEOF: onEOF, pending: pool.Get()[:0], out: pool.Get()[:0]}
}

func (b *maskBody) Read(p []byte) (int, error) {
	for {
		if b.outOff < len(b.out) {
			n := copy(p, b.out[b.outOff:])
			b.outOff += n
			b.emitted += int64(n)
			return n, nil
		}
		if b.done {
			b.release()
			if b.padLeft > 0 {
				n := int(min(int64(len(p)), b.padLeft))
				for i := range p[:n] {
					p[i] = ' '
				}
				b.padLeft -= int64(n)
				b.emitted += int64(n)
				return n, nil
			}
			return 0, b.err
		}
		// Read into the free end of pending, after the tail kept from
		// the last read (shorter than the longest pattern).
		if cap(b.pending)-len(b.pending) < minRead {
			b.pending = slices.Grow(b.pending, minRead+len(b.pending))
		}
		n, err := b.src.Read(b.pending[len(b.pending):cap(b.pending)])
		b.short = err == nil && n < cap(b.pending)-len(b.pending)
		b.in += int64(n)
		b.pending = b.pending[:len(b.pending)+n]
		final := err != nil
		b.out, b.outOff = b.out[:0], 0
		var used int
		b.out, used = b.r.mask(b.pending, b.out, final)
		rest := copy(b.pending, b.pending[used:])
		b.pending = b.pending[:rest]
		if final {
			b.done = true
			b.err = err
			if err == io.EOF {
				if b.pad {
					b.padLeft = b.in - (b.emitted + int64(len(b.out)))
				}
				if b.onEOF != nil {
					b.onEOF()
				}
			}
			// pending is empty now; out is released once read.
			b.pool.Put(b.pending)
			b.pending = nil
		}
	}
}

// release returns out to the pool once the body has ended and all of it
// was read. Only Read calls it: the proxy never reads and closes a body
// at once, but a buffer must never be in the pool while in use.
func (b *maskBody) release() {
	if b.out != nil {
		b.pool.Put(b.out)
		b.out, b.outOff = nil, 0
	}
}

func (b *maskBody) Close() error { return b.src.Close() }
