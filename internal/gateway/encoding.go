package gateway

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The gateway masks exactly the bytes the client will decode, so it must
// know the response's content codings: all of them, from every
// Content-Encoding line and every element of each comma-separated list,
// in any case, with any whitespace. identity and empty elements change
// nothing. One gzip (or x-gzip) it decodes, and the client gets the
// decoded body without Content-Encoding and with no declared length.
// Everything else it could not fully decode and mask — codings stacked,
// br, deflate, zstd, compress, names it does not know — is refused with
// 502 and never forwarded: an undecoded body would carry the credential
// past the masker to any client that decodes it.

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
// it: no coding, or one gzip (decoded here); anything else is an
// encodingError. A response without a body keeps its headers, except that
// a gzip Content-Encoding goes, as on the decoded bodies the gateway sends.
func decodeBody(resp *http.Response) error {
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
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		resp.Body.Close()
		return &encodingError{"malformed gzip body"}
	}
	resp.Body = &gunzipBody{zr: zr, src: resp.Body}
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	resp.Uncompressed = true
	return nil
}

// gunzipBody is a response body as gzip decodes it (every member of a
// multi-member stream, as clients do). A corrupt stream ends the body with
// an error, and the proxy then aborts the response.
type gunzipBody struct {
	zr  *gzip.Reader
	src io.ReadCloser
}

func (b *gunzipBody) Read(p []byte) (int, error) { return b.zr.Read(p) }
func (b *gunzipBody) Close() error               { return b.src.Close() }

// dropFramingTrailers removes from trailers the fields that say how the
// body is to be decoded or framed (RFC 9110 section 6.5.1 forbids them
// there): a client that honoured a late Content-Encoding would decode bytes
// the gateway masked as something else.
func dropFramingTrailers(t http.Header) {
	for _, k := range []string{"Content-Encoding", "Content-Length", "Content-Range", "Content-Type", "Transfer-Encoding", "Trailer"} {
		delete(t, k)
	}
}
