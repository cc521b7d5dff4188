// Package mask owns the masker: it replaces every occurrence of a secret in
// a byte stream, in each of the encodings listed by Forms, with "***".
//
// A Matcher is built once from the secrets (a single Aho-Corasick automaton
// over every form of every secret, and a filter of the forms' leading
// 8-byte grams that lets a long input skip the text where no form can
// start; see skip.go) and is then immutable and safe to share.
// MaskBytes and MaskString mask a whole value (MaskStringTail also a form
// cut off at its end, as a stream's Flush does); NewWriter wraps an io.Writer
// for a stream (job output); NewStream gives a stream for a caller that does
// its own I/O (the gateway's bodies, and with KeepLength its WebSocket
// frames). It is the one masking implementation of both the job side and the
// gateway, so that neither misses a form the other masks.
//
// What the stream masker guarantees:
//
//   - Every literal occurrence of a form is masked, however the stream is
//     split into Writes. Overlapping or nested matches are masked as their
//     union; each maximal run becomes one replacement (two matches that only
//     touch give two).
//   - A secret interrupted by '\r' bytes or by CSI escape sequences (colour
//     codes ESC[...m, erase and cursor codes; see normThread) is also masked:
//     matching also runs over the stream with those removed, so a multi-line
//     secret printed with "\r\n" line ends, or with a colour change in the
//     middle, is caught. So is a base64 form wrapped into lines of 60, 64 or
//     76 characters (Ruby, PEM, MIME, base64(1)): a '\n' or "\r\n" ending a
//     run of exactly that many base64 characters is removed the same way
//     (wrap.go), also with a CI log's timestamp after the line end
//     (stamp.go). So is a secret in a hex dump (xxd, hexdump -C, od -A x
//     -t x1z, od -x, hexdump) that its lines cut in pieces: its hex, and
//     its bytes in the text column beside it (dump.go), also with a CI
//     log's timestamp before each line.
//     The masked range runs from the first to the last byte of the match,
//     so escape codes and line ends inside it are dropped with it.
//   - Output is held back only while it could still be part of a match: at
//     most the longest form minus one byte (plus, while a match is being
//     followed across removed '\r', escape and line-end bytes, those
//     bytes, bounded at 8 times the longest form plus 256; and a piece's
//     final '=' or "=\r", which may begin a quoted-printable soft line
//     break that the next piece ends). Everything
//     before that is written at once, without waiting for a line end. Held
//     bytes are written when Options.Idle passes without input (50 ms by
//     default), on Flush and on Close: a prompt without a newline still
//     shows. On the idle pause a held beginning of a form of MinSecretLen
//     bytes or more is masked (a checksummed token's prefix can give the
//     whole back), one that removed bytes interrupt too; a shorter one
//     shows, and a secret split there is masked
//     from the pause on, its first bytes (fewer than MinSecretLen) written
//     before it.
//   - A stream that begins inside a form (a ranged download, tail -c, a
//     log resumed at an offset) has the form's tail masked when it is
//     MinSecretLen bytes or more; its start is held while it may still be
//     one (at most the longest form), and only there (head.go). Flush,
//     Close and the idle pause cut the stream as its end does.
//   - Memory is bounded: the masker never holds more than the above,
//     whatever it is fed.
//
// Percent-encoding and JSON escaping are masked as the encoders listed in
// forms.go (percentSafe, jsonStyles) write them, each escaping a character
// the same way wherever it occurs. A value escaped in a way none of them
// writes is not masked: some occurrences of a character escaped and others
// not, hex digits of mixed case within one value (beyond PHP's), a subset
// of PHP's JSON_HEX_* flags other than TAG alone or all four, or escaped
// twice. Listing every mix instead would give 2^n forms for n punctuation
// bytes.
//
// It never logs, stores or returns a secret, and it does not judge what is
// secret: that is the caller's choice (SPEC section 8).
package mask

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"time"
)

// DefaultReplacement replaces each masked run.
const DefaultReplacement = "***"

// DefaultIdle is how long held bytes wait for more input before they are
// written anyway.
const DefaultIdle = 50 * time.Millisecond

// ErrShortSecret refuses a secret shorter than MinSecretLen bytes.
var ErrShortSecret = errors.New("mask: secret shorter than 8 characters would mask common words; refusing")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("mask: write to closed masking writer")

// Options tune a Writer.
type Options struct {
	// Idle is how long held bytes wait for more input; 0 means DefaultIdle,
	// a negative value disables the timer (held bytes then wait for the next
	// Write, Flush or Close).
	Idle time.Duration
	// Replacement replaces each masked run; "" means DefaultReplacement.
	Replacement string
}

// Matcher finds every form of a set of secrets. It is immutable and safe
// for concurrent use.
type Matcher struct {
	a *automaton
}

// MatcherOptions tune NewMatcherWith.
type MatcherOptions struct {
	// TableBytes bounds the automaton's table of fully resolved
	// transitions (the fast path); 0 means 4 MiB. States beyond it are
	// walked byte by byte, which costs only while several bytes of some
	// form have been seen. A long-lived process that keeps many Matchers
	// (the gateway, one per job token) gives a smaller bound.
	TableBytes int
}

// NewMatcher builds a Matcher for secrets. Every secret must be at least
// MinSecretLen bytes long (ErrShortSecret otherwise). No secrets gives a
// Matcher that masks nothing.
func NewMatcher(secrets [][]byte) (*Matcher, error) {
	return NewMatcherWith(secrets, MatcherOptions{})
}

// NewMatcherWith is NewMatcher with options.
func NewMatcherWith(secrets [][]byte, opts MatcherOptions) (*Matcher, error) {
	seen := map[string]bool{}
	var patterns [][]byte
	add := func(p []byte, minLen int) {
		if len(p) >= minLen && !seen[string(p)] {
			seen[string(p)] = true
			patterns = append(patterns, p)
		}
	}
	for _, s := range secrets {
		if len(s) < MinSecretLen {
			return nil, ErrShortSecret
		}
		for _, f := range Forms(s) {
			// Every form: those Forms cuts from the value (lines, inner
			// base64) are MinSecretLen long or more, and a whole form
			// shorter than the value (UTF-16 of 3-byte characters, 6
			// bytes at the least) spells all of it.
			add(f, 1)
			// The normalising thread never sees '\r' or escape codes, so
			// it looks for the form without them; what removing them
			// leaves must still be long enough not to mask common text.
			add(normalize(f), MinSecretLen)
		}
	}
	budget := denseBudget
	if opts.TableBytes > 0 {
		budget = max(opts.TableBytes/4, 1)
	}
	return &Matcher{a: build(patterns, budget)}, nil
}

// Size is about how many bytes of memory the Matcher holds.
func (m *Matcher) Size() int { return m.a.size() }

// MaskString is MaskBytes for a string (a header value, say). It returns s
// itself, without allocating, when nothing in it can match.
func (m *Matcher) MaskString(s string) string { return m.MaskStringTail(s, 0) }

// MaskStringTail is MaskString for a value that is a whole stream (a
// header value from a proxy's upstream): a form cut off by its end is
// masked too when at least tail bytes of it came, as Stream.Flush masks
// one at the end of a body (tail 0: never). It returns s itself, without
// allocating, when nothing in it can match.
func (m *Matcher) MaskStringTail(s string, tail int) string {
	if !suspect(m.a, s, tail) {
		return s
	}
	b := []byte(s)
	sc := newScanner(m.a, DefaultReplacement)
	if tail > 0 {
		sc.startHead()
	}
	sc.scan(b)
	sc.markTail(tail)
	if len(sc.spans) == 0 {
		return s
	}
	return string(sc.emit(make([]byte, 0, len(b)), b, sc.pos))
}

// Stream masks one stream for a caller that does its own reads and writes
// (a proxy's bodies and frames): it appends the masked output to the
// caller's buffer rather than writing it, and never waits on a timer. It is
// not safe for concurrent use. Its guarantees are those of Writer.
type Stream struct {
	s  *scanner
	sc scanner // s's memory: one allocation per Stream
}

// StreamOptions tune a Stream.
type StreamOptions struct {
	// Replacement replaces each masked run; "" means DefaultReplacement.
	Replacement string
	// KeepLength replaces every masked byte with '*' instead, so that the
	// output is exactly as long as the input (framed data).
	KeepLength bool
}

// NewStream returns a Stream at the start of a stream.
func (m *Matcher) NewStream(opts StreamOptions) *Stream {
	repl := opts.Replacement
	if repl == "" {
		repl = DefaultReplacement
	}
	st := &Stream{sc: scanner{a: m.a, repl: repl, keep: opts.KeepLength}}
	st.s = &st.sc
	st.s.startHead()
	return st
}

// Mask takes p, the next bytes of the stream, and appends to dst the output
// that no later byte can change. The rest is held (see Held).
func (st *Stream) Mask(dst, p []byte) []byte {
	return st.s.feed(dst, p)
}

// Flush appends every held byte to dst, as at the end of the stream: a held
// beginning of a form at least tail bytes long is masked (tail 0: never),
// so that a secret cut off by the end of the stream does not show. The
// stream may go on; a form that then continues is masked from there on.
func (st *Stream) Flush(dst []byte, tail int) []byte {
	dst = st.s.drainCarry(dst)
	st.s.markTail(tail)
	return st.s.emit(dst, nil, st.s.pos)
}

// Held is the number of bytes taken but not yet appended to any output.
func (st *Stream) Held() int { return int(st.s.pos-st.s.done) + st.s.nCarry }

// MaxHeld bounds Held: the longest form, plus the bound on bytes held while
// a match is followed across removed '\r' and escape bytes (and a
// timestamp after a wrap newline, read to its end), plus the two bytes
// that may begin a soft line break split between two pieces.
func (m *Matcher) MaxHeld() int { return 9*m.a.maxLen + 256 + stampMax + 2 }

// MaskBytes returns b with every form of every secret replaced by
// DefaultReplacement. When nothing matches it returns b itself.
func (m *Matcher) MaskBytes(b []byte) []byte {
	s := newScanner(m.a, DefaultReplacement)
	s.scan(b)
	if len(s.spans) == 0 {
		return b
	}
	return s.emit(make([]byte, 0, len(b)), b, s.pos)
}

// chunkSize bounds the output built per underlying write.
const chunkSize = 64 << 10

// Writer masks what is written to it and writes the result to the
// underlying writer. It is safe for concurrent use; each Write is masked as
// one piece of the stream. Errors from the underlying writer are sticky.
type Writer struct {
	mu     sync.Mutex
	s      *scanner
	w      io.Writer
	idle   time.Duration
	timer  *time.Timer
	armed  bool
	last   time.Time
	err    error
	closed bool
	out    []byte
}

// NewWriter returns a masking writer over w.
func (m *Matcher) NewWriter(w io.Writer, opts Options) *Writer {
	repl := opts.Replacement
	if repl == "" {
		repl = DefaultReplacement
	}
	idle := opts.Idle
	if idle == 0 {
		idle = DefaultIdle
	}
	s := newScanner(m.a, repl)
	s.startHead()
	return &Writer{s: s, w: w, idle: idle}
}

// Write masks p. It returns len(p) unless the Writer is closed or the
// underlying writer failed (now or before).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	n := len(p)
	for len(p) > 0 {
		chunk := p[:min(len(p), chunkSize)]
		p = p[len(chunk):]
		w.out = w.s.feed(w.out[:0], chunk)
		if err := w.writeOut(); err != nil {
			return n, err
		}
	}
	w.arm()
	return n, nil
}

// Flush writes every held byte now.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// Close flushes and stops the idle timer. Further Writes fail; the
// underlying writer is not closed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	err := w.flushLocked()
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	return err
}

func (w *Writer) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	// A pause, Flush and Close cut the stream as its end does: a held
	// beginning of a form of MinSecretLen bytes or more is masked, since a
	// checksummed token's prefix gives the whole back (mfy_: its last 6
	// characters are the public CRC of the 30 before). A shorter one, a
	// prompt, shows.
	w.out = w.s.drainCarry(w.out[:0])
	w.s.markTail(MinSecretLen)
	w.out = w.s.emit(w.out, nil, w.s.pos)
	return w.writeOut()
}

func (w *Writer) writeOut() error {
	if len(w.out) == 0 {
		return nil
	}
	_, err := w.w.Write(w.out)
	if err != nil {
		w.err = err
	}
	return err
}

// arm starts the idle timer if bytes are held.
func (w *Writer) arm() {
	if w.idle < 0 || w.s.done >= w.s.pos && w.s.nCarry == 0 {
		return
	}
	w.last = time.Now()
	if w.armed {
		return
	}
	w.armed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(w.idle, w.onIdle)
	} else {
		w.timer.Reset(w.idle)
	}
}

func (w *Writer) onIdle() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || !w.armed {
		return
	}
	if el := time.Since(w.last); el < w.idle {
		w.timer.Reset(w.idle - el)
		return
	}
	w.armed = false
	_ = w.flushLocked() // the error is sticky: the next call reports it
}

// normalize removes '\r', wrap newlines and CSI sequences from p, as the
// normalising thread does from the stream.
func normalize(p []byte) []byte {
	if bytes.IndexByte(p, '\r') < 0 && bytes.IndexByte(p, esc) < 0 && !hasWrap(p) {
		return p
	}
	var out []byte
	for i := 0; i < len(p); {
		switch {
		case p[i] == '\r':
			i++
			continue
		case p[i] == '\n' && ((wrapCarry{}).isWrap(p, i) || qpBreak(p, i) >= 0):
			// A wrap newline, and a CI log's timestamp after it (stamp.go).
			i++
			w, _ := stampScan(p[i:min(len(p), i+stampMax)])
			i += w
			continue
		case p[i] == '=' && (i+1 < len(p) && p[i+1] == '\n' || i+2 < len(p) && p[i+1] == '\r' && p[i+2] == '\n'):
			i++ // a quoted-printable soft line break
			continue
		case p[i] == esc && i+1 < len(p) && p[i+1] == '[':
			j := i + 2
			for j < len(p) && j-i-2 < csiMax && p[j] >= 0x20 && p[j] <= 0x3f {
				j++
			}
			if j < len(p) && p[j] >= 0x40 && p[j] <= 0x7e {
				i = j + 1
				continue
			}
		}
		out = append(out, p[i])
		i++
	}
	return out
}
