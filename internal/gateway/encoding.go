package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"net/http"
	"strings"
	"sync"
)

// The gateway masks exactly the bytes the client will decode, so it must
// know the response's content codings: all of them, from every
// Content-Encoding line and every element of each comma-separated list,
// in any case, with any whitespace. identity and empty elements change
// nothing. One gzip (or x-gzip) it decodes and masks; a client whose
// Accept-Encoding takes gzip gets the masked body gzip-encoded again
// (gzipBody), any other the decoded body without Content-Encoding; neither
// with a declared length.
// Everything else it could not fully decode and mask — codings stacked,
// br, deflate, zstd, compress, names it does not know — is refused with
// 502 and never forwarded: an undecoded body would carry the credential
// past the masker to any client that decodes it.

//
// Decoding is bounded: a few KiB of gzip can decode to GiBs (a
// decompression bomb), each byte of which the gateway would decode, mask
// and maybe encode again, and send. Past its first gzipFree bytes decoded,
// a body that has decoded to more than maxRatio times the bytes read of it
// is cut (gunzipBody): the client's copy ends with an error, the audit
// entry's outcome says why.

// DefaultMaxGzipRatio is the default of Config.MaxGzipRatio. gzip cannot
// exceed about 1032:1 (zeros); text and JSON come at 3-20:1, identical
// records repeated at a few hundred to one, bombs near the maximum.
const DefaultMaxGzipRatio = 100

// gzipFree is what a gzip body may decode to before its ratio counts:
// small answers that compress very well are common and cheap.
const gzipFree = 1 << 20

// acceptGzip is the Accept-Encoding sent upstream, whatever the client
// asked for.
var acceptGzip = []string{"gzip"}

// encodingError refuses a response the gateway cannot decode. why is for
// the client and the audit log; it names only codings from knownCodings,
// never a value the upstream chose (which could hold a secret).
type encodingError struct{ why string }

func (e *encodingError) Error() string {
	return "gateway: upstream response the gateway cannot inspect: " + e.why
}

// knownCodings are the registered content codings (IANA HTTP Content
// Coding Registry) that may be named in a refusal.
var knownCodings = map[string]bool{
	"gzip": true, "x-gzip": true, "deflate": true, "br": true, "zstd": true,
	"compress": true, "x-compress": true, "dcb": true, "dcz": true, "aes128gcm": true, "exi": true,
	"pack200-gzip": true,
}

// contentCodings returns the content codings of h, in the order applied,
// without identity and empty elements, lower-cased.
func contentCodings(h http.Header) []string {
	var out []string
	for _, line := range h.Values("Content-Encoding") {
		for el := range strings.SplitSeq(line, ",") {
			el = strings.ToLower(strings.Trim(el, " \t"))
			if el != "" && el != "identity" {
				out = append(out, el)
			}
		}
	}
	return out
}

// codingName is c as it may appear in a refusal.
func codingName(c string) string {
	if knownCodings[c] {
		return c
	}
	return "unknown"
}

// decodeBody makes resp's body what the client would decode, or refuses
// it: no coding, or one gzip (decoded here, at most maxRatio times its
// size past gzipFree; maxRatio <= 0: no cap); anything else is an
// encodingError. A response without a body keeps its headers, except that
// a gzip Content-Encoding goes, as on the decoded bodies the gateway sends.
func decodeBody(resp *http.Response, maxRatio int) error {
	codings := contentCodings(resp.Header)
	hasBody := resp.Body != nil && resp.Body != http.NoBody && resp.ContentLength != 0
	switch {
	case len(codings) == 0:
		resp.Header.Del("Content-Encoding")
		return nil
	case len(codings) > 1:
		if !hasBody {
			return nil
		}
		names := make([]string, len(codings))
		for i, c := range codings {
			names[i] = codingName(c)
		}
		resp.Body.Close()
		return &encodingError{"stacked content codings " + strings.Join(names, ", ")}
	case codings[0] != "gzip" && codings[0] != "x-gzip":
		if !hasBody {
			return nil
		}
		resp.Body.Close()
		return &encodingError{fmt.Sprintf("content coding %s is not decoded by the gateway", codingName(codings[0]))}
	}
	resp.Header.Del("Content-Encoding")
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		resp.Header.Del("Content-Length") // the decoded length is not known
	}
	if !hasBody {
		return nil
	}
	if resp.StatusCode == http.StatusPartialContent {
		// A range of the encoded bytes cannot be decoded on its own.
		resp.Body.Close()
		return &encodingError{"a range of a gzip body"}
	}
	b := &gunzipBody{src: countedBody{ReadCloser: resp.Body}, ratio: int64(max(maxRatio, 0))}
	zr, err := gzip.NewReader(&b.src)
	if err != nil {
		resp.Body.Close()
		return &encodingError{"malformed gzip body"}
	}
	b.zr = zr
	resp.Body = b
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	resp.Uncompressed = true
	return nil
}

// gunzipBody is a response body as gzip decodes it (every member of a
// multi-member stream, as clients do). A corrupt stream, or one decoding to
// more than ratio times what was read of it once past gzipFree, ends the
// body with an error, and the proxy then aborts the response.
type gunzipBody struct {
	zr    *gzip.Reader
	src   countedBody
	out   int64 // bytes decoded
	ratio int64 // 0: no cap
	cut   bool  // ended for its ratio
}

// countedBody counts the bytes read of an encoded body.
type countedBody struct {
	io.ReadCloser
	n int64
}

func (c *countedBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// errGzipRatio ends a gzip body that decodes to too much.
var errGzipRatio = errors.New("gateway: gzip body decodes to more than the gateway's ratio allows")

func (b *gunzipBody) Read(p []byte) (int, error) {
	if b.cut {
		return 0, errGzipRatio
	}
	n, err := b.zr.Read(p)
	b.out += int64(n)
	if b.ratio > 0 && b.out > gzipFree && b.out > b.ratio*b.src.n {
		// These bytes are not passed on: the body ends here.
		b.cut = true
		return 0, errGzipRatio
	}
	return n, err
}

func (b *gunzipBody) Close() error { return b.src.Close() }

// dropFramingTrailers removes from trailers the fields that say how the
// body is to be decoded or framed (RFC 9110 section 6.5.1 forbids them
// there): a client that honoured a late Content-Encoding would decode bytes
// the gateway masked as something else.
func dropFramingTrailers(t http.Header) {
	for _, k := range []string{"Content-Encoding", "Content-Length", "Content-Range", "Content-Type", "Transfer-Encoding", "Trailer"} {
		delete(t, k)
	}
}

// singleGzip reports whether h names exactly one content coding, gzip: the
// one coding decodeBody decodes.
func singleGzip(h http.Header) bool {
	c := contentCodings(h)
	return len(c) == 1 && (c[0] == "gzip" || c[0] == "x-gzip")
}

// acceptsGzip reports whether a client's Accept-Encoding lines take gzip
// (RFC 9110 section 12.5.3): gzip or x-gzip, or else "*", with a qvalue
// other than 0. When in doubt (a malformed qvalue) it says no: the client
// then gets the decoded body, which every client reads.
func acceptsGzip(h http.Header) bool {
	named, star := 0, 0 // 0 not mentioned, 1 accepted, -1 refused
	for _, line := range h.Values("Accept-Encoding") {
		for el := range strings.SplitSeq(line, ",") {
			name, params, _ := strings.Cut(el, ";")
			name = strings.ToLower(strings.Trim(name, " \t"))
			ok := true
			if params != "" {
				k, v, found := strings.Cut(params, "=")
				ok = found && strings.EqualFold(strings.Trim(k, " \t"), "q") && positiveQ(strings.Trim(v, " \t"))
			}
			verdict := 1
			if !ok {
				verdict = -1
			}
			switch name {
			case "gzip", "x-gzip":
				if named >= 0 {
					named = verdict
				}
			case "*":
				if star >= 0 {
					star = verdict
				}
			}
		}
	}
	if named != 0 {
		return named > 0
	}
	return star > 0
}

// positiveQ reports whether v is a well-formed qvalue above 0:
// "0" ["." 0*3DIGIT] or "1" ["." 0*3"0"].
func positiveQ(v string) bool {
	whole, frac, dot := strings.Cut(v, ".")
	if len(frac) > 3 || (dot && len(whole) != 1) {
		return false
	}
	for _, c := range []byte(frac) {
		if c < '0' || c > '9' || (whole == "1" && c != '0') {
			return false
		}
	}
	switch whole {
	case "1":
		return true
	case "0":
		return strings.Trim(frac, "0") != ""
	}
	return false
}

// addVary adds Accept-Encoding to h's Vary unless it is there: the body now
// depends on it.
func addVary(h http.Header) {
	for _, line := range h.Values("Vary") {
		for el := range strings.SplitSeq(line, ",") {
			if el = strings.Trim(el, " \t"); el == "*" || strings.EqualFold(el, "Accept-Encoding") {
				return
			}
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// gzipBody gzip-encodes the masked body (the masker's output: nothing it
// replaced reaches the encoder) for a client that accepts gzip, at
// BestSpeed. What the masker has released is compressed and flushed when
// the upstream pauses, so a slow stream reaches the client as it comes. A
// failed upstream body is not closed as a complete gzip stream: the error
// goes to the proxy, which aborts the response.
type gzipBody struct {
	src  *maskBody
	zw   *gzip.Writer
	pool *sync.Pool // of *gzip.Writer
	bufs *bufPool
	in   []byte       // from bufs
	out  bytes.Buffer // compressed, not yet returned
	done bool
	err  error
}

func newGzipBody(src *maskBody, pool *sync.Pool, bufs *bufPool) *gzipBody {
	b := &gzipBody{src: src, pool: pool, bufs: bufs, in: bufs.Get()}
	if zw, ok := pool.Get().(*gzip.Writer); ok {
		zw.Reset(&b.out)
		b.zw = zw
	} else {
		b.zw, _ = gzip.NewWriterLevel(&b.out, gzip.BestSpeed) // a valid level: no error
	}
	return b
}

func (b *gzipBody) Read(p []byte) (int, error) {
	for {
		if b.out.Len() > 0 {
			return b.out.Read(p)
		}
		if b.done {
			return 0, b.err
		}
		n, err := b.src.Read(b.in)
		b.zw.Write(b.in[:n]) // into b.out: cannot fail
		switch {
		case err == io.EOF:
			b.zw.Close()
			b.finish(err)
		case err != nil:
			b.finish(err)
		case b.src.short && b.src.drained():
			b.zw.Flush()
		}
	}
}

// finish records the end of the body and returns the encoder and the read
// buffer to their pools (only Read calls it, as maskBody.release).
func (b *gzipBody) finish(err error) {
	b.done, b.err = true, err
	b.zw.Reset(io.Discard)
	b.pool.Put(b.zw)
	b.bufs.Put(b.in)
	b.zw, b.in = nil, nil
}

func (b *gzipBody) Close() error { return b.src.Close() }
