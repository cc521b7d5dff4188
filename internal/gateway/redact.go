package gateway

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mayfly-sh/mayfly/internal/mask"
)

// The gateway masks the upstream credential and the job token in every
// response (headers, bodies, trailers, WebSocket frames) with the masker of
// job logs, internal/mask: one implementation of every form SPEC section 8
// lists (raw, lines, base64 at every alignment, hex, percent- and
// JSON-escaping, \u escapes, UTF-16), so that the gateway misses no form
// the job side masks. A Matcher is built once per credential and token
// (a few milliseconds) and kept; its fast table is bounded (matcherTable)
// so that many live tokens fit in memory.

// matcherTable bounds each cached Matcher's table of resolved transitions.
const matcherTable = 256 << 10

// maxMatcherBytes bounds the memory of the cached Matchers together.
const maxMatcherBytes = 128 << 20

// secretValues returns the values derived from an upstream secret that must
// never reach a client: the value itself and, when it is standard base64
// (a Basic credential), what it decodes to and the password in it, when
// those are long enough to mask.
func secretValues(v []byte) [][]byte {
	out := [][]byte{bytes.Clone(v)}
	if dec, err := base64.StdEncoding.DecodeString(string(v)); err == nil && len(dec) >= mask.MinSecretLen {
		out = append(out, dec)
		if _, pass, ok := bytes.Cut(dec, []byte(":")); ok && len(pass) >= mask.MinSecretLen {
			out = append(out, pass)
		}
	}
	return out
}

// redactor is what masks one credential and one job token in responses.
type redactor struct {
	m *mask.Matcher
	// lower: the raw values in lower case, for header names, which the
	// HTTP client has put into canonical case.
	lower [][]byte
}

func newRedactor(secrets [][]byte) (*redactor, error) {
	m, err := mask.NewMatcherWith(secrets, mask.MatcherOptions{TableBytes: matcherTable})
	if err != nil {
		return nil, err
	}
	r := &redactor{m: m}
	for _, s := range secrets {
		r.lower = append(r.lower, bytes.ToLower(s))
	}
	return r, nil
}

// maskHeader masks every value of h in place and drops every header whose
// name holds a secret, in any case. Each name and value is masked as a
// whole stream, as a body is (maskBody): a form cut off by its end is
// masked when at least mask.MinSecretLen bytes of it came, so that an
// upstream that truncates what it echoes leaks no more in a header than in
// a body.
func (r *redactor) maskHeader(h http.Header) {
	for k, vs := range h {
		if r.m.MaskStringTail(k, mask.MinSecretLen) != k || r.nameHolds(k) {
			delete(h, k)
			continue
		}
		for i, v := range vs {
			vs[i] = r.m.MaskStringTail(v, mask.MinSecretLen)
		}
	}
}

func (r *redactor) nameHolds(k string) bool {
	if len(k) < mask.MinSecretLen {
		return false
	}
	// Every response header's name comes here: lowered on the stack for
	// an ASCII name (net/http passes on no other).
	var buf [64]byte
	lk := buf[:0]
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= utf8.RuneSelf {
			lk = []byte(strings.ToLower(k))
			break
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lk = append(lk, c)
	}
	for _, s := range r.lower {
		if bytes.Contains(lk, s) {
			return true
		}
	}
	return false
}

// maskBody is a response body with every form masked as it streams
// (mask.Stream: memory bounded by the read size plus the longest form).
// Its buffers come from the gateway's pool: a fresh 32 KiB per response
// was most of the gateway's allocation, and so of its GC work. When pad is
// set (the upstream declared a Content-Length), the body ends with as many
// spaces as masking removed, so that the length stays what the header
// says. onEOF runs once the upstream body has ended (trailers are then
// known). A form cut off by the end of the body is masked when at least
// mask.MinSecretLen bytes of it came.
type maskBody struct {
	src     io.ReadCloser
	st      *mask.Stream
	pool    *bufPool
	in      []byte // read buffer
	out     []byte // masked output not yet returned
	outOff  int
	read    int64
	emitted int64
	pad     bool
	padLeft int64
	done    bool
	err     error
	onEOF   func()
	// short: the last read from the upstream returned less than asked and
	// more is to come, so the upstream may be slow: what was read should
	// reach the client now (respWriter flushes).
	short bool
}

// minRead is the least room a read from the upstream is given.
const minRead = 4 << 10

func newMaskBody(src io.ReadCloser, m *mask.Matcher, pool *bufPool, pad bool, onEOF func()) *maskBody {
	return &maskBody{src: src, st: m.NewStream(mask.StreamOptions{}), pool: pool, pad: pad, onEOF: onEOF,
		in: pool.Get(), out: pool.Get()[:0]}
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
		// Read no more than out can take with what the stream holds, so
		// that out keeps its pooled memory.
		room := cap(b.out) - b.st.Held()
		if room < minRead {
			b.out = slices.Grow(b.out[:0], b.st.Held()+minRead)
			room = minRead
		}
		want := min(cap(b.in), room)
		n, err := b.src.Read(b.in[:want])
		b.short = err == nil && n < want
		b.read += int64(n)
		b.out = b.st.Mask(b.out[:0], b.in[:n])
		b.outOff = 0
		if err != nil {
			b.out = b.st.Flush(b.out, mask.MinSecretLen)
			b.done = true
			b.err = err
			if err == io.EOF {
				if b.pad {
					b.padLeft = b.read - (b.emitted + int64(len(b.out)))
				}
				if b.onEOF != nil {
					b.onEOF()
				}
			}
			// The read buffer is done with; out is released once read.
			b.pool.Put(b.in)
			b.in = nil
		}
	}
}

// drained reports whether everything masked so far has been read.
func (b *maskBody) drained() bool { return b.outOff >= len(b.out) }

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
