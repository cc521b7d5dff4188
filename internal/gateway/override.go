package gateway

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// Method overrides: many web frameworks run a method other than the
// request line's when a request names one. Rails/Rack, Symfony/Laravel,
// Express's method-override, ASP.NET and Spring's HiddenHttpMethodFilter
// read it from a header (X-HTTP-Method-Override and relatives; CGI-style
// servers map "_" and "-" in header names alike), from a `_method` query or
// form parameter (Salesforce's REST API: `_HttpMethod`; PHP also turns "."
// and " " in parameter names into "_"), from a field of a multipart form,
// or from a top-level `_method` member of a JSON body (Laravel, Express
// with a body getter). The gateway finds every method a request names in
// any of these places, so that the policy can allow or refuse each one. A
// body it cannot inspect fully is refused, never forwarded unchecked.

// overrideError is a request the override checks refuse: its status
// (400, 413 or 415) and a reason that never quotes a header or body value
// longer than a method.
type overrideError struct {
	status int
	reason string
}

func (e *overrideError) Error() string { return e.reason }

func badOverride(format string, a ...any) *overrideError {
	return &overrideError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// headerKey folds a header name as CGI-style servers do: case-insensitive,
// "_" and "-" alike.
func headerKey(k string) string {
	return strings.ReplaceAll(strings.ToLower(k), "_", "-")
}

// appendHeaderKey appends headerKey(k) to dst. The checks that fold every
// header of every request fold into a buffer on their stack: for an ASCII
// name (every name net/http passes on) string() of the result then
// allocates nothing either, as long as it does not escape.
func appendHeaderKey(dst []byte, k string) []byte {
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			return append(dst, headerKey(k)...)
		}
	}
	for i := 0; i < len(k); i++ {
		dst = append(dst, foldKeyByte(k[i]))
	}
	return dst
}

// foldKeyByte folds one ASCII byte of a header name as headerKey does.
func foldKeyByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

// isOverrideHeader reports whether a header (by headerKey) names a method
// for some framework to run instead of the request's.
func isOverrideHeader(k string) bool {
	switch k {
	case "x-http-method-override", "x-http-method", "x-method-override", "x-forwarded-method", "x-original-method":
		return true
	}
	return strings.Contains(k, "method-override")
}

// paramKey folds a form, query or JSON parameter name the way the most
// lenient framework reads it: PHP stops at a NUL, drops leading spaces,
// turns " " and "." into "_" and takes "a[…]" as an array named "a"; Rack
// 2 drops leading "[" and "]" and the "]" after the name ("[_method]",
// "]_method" and "_method]" are _method), as qs (Express) does "[_method]";
// case is ignored and "-" is taken as "_" so that header-named fields
// (ASP.NET MVC reads X-HTTP-Method-Override from forms and queries too)
// fold with the rest.
func paramKey(k string) string {
	if i := strings.IndexByte(k, 0); i >= 0 {
		k = k[:i]
	}
	k = strings.TrimLeft(strings.TrimLeft(k, " "), "[]")
	if i := strings.IndexAny(k, "[]"); i > 0 {
		k = k[:i]
	}
	k = strings.ToLower(k)
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '.', '-':
			return '_'
		}
		return r
	}, k)
}

// isOverrideParam reports whether a parameter (by paramKey) names a method:
// also Salesforce's _HttpMethod, which its REST API runs instead of a
// POST's (?_HttpMethod=PATCH, ?_HttpMethod=DELETE).
func isOverrideParam(k string) bool {
	switch k {
	case "_method", "x_http_method", "x_http_method_override", "x_method_override", "__method__", "_httpmethod":
		return true
	}
	return strings.Contains(k, "method_override")
}

// overrideValues turns the value of an override field into the methods a
// framework could run: the whole value, or each comma-separated element
// (Express takes the first of a list), uppercased as the frameworks do
// (Unicode-aware, as Java's toUpperCase is). An empty value names none; a
// value that is not an HTTP method is refused rather than guessed at.
func overrideValues(v string, out []string) ([]string, error) {
	for _, e := range strings.Split(v, ",") {
		e = strings.Trim(e, " \t\r\n")
		if e == "" {
			continue
		}
		m := strings.ToUpper(e)
		if !isMethodToken(m) {
			return out, badOverride("a method override names %q, which is not an HTTP method", truncate(e, 32))
		}
		out = append(out, m)
	}
	return out, nil
}

// isMethodToken: an RFC 9110 token (as net/http reads one), of at most 32
// characters.
func isMethodToken(s string) bool {
	return len(s) <= 32 && httpguts.ValidHeaderFieldName(s)
}

// headerOverrides returns the methods the request's override headers name,
// under any spelling.
func headerOverrides(h http.Header) ([]string, error) {
	var out []string
	var err error
	var buf [64]byte
	for k, vs := range h {
		if !isOverrideHeader(string(appendHeaderKey(buf[:0], k))) {
			continue
		}
		for _, v := range vs {
			if out, err = overrideValues(v, out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// formOverrides returns the methods a URL-encoded text (a query string or
// a form body) names. Pairs are split on "&" and on ";" (older Rack and
// Python), "+" is a space, and a malformed escape stays as written, as PHP
// leaves it.
func formOverrides(text string, out []string) ([]string, error) {
	var err error
	for text != "" {
		var pair string
		if i := strings.IndexAny(text, "&;"); i >= 0 {
			pair, text = text[:i], text[i+1:]
		} else {
			pair, text = text, ""
		}
		k, v, _ := strings.Cut(pair, "=")
		if !isOverrideParam(paramKey(formUnescape(k))) {
			continue
		}
		if out, err = overrideValues(formUnescape(v), out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// formUnescape decodes "+", %XX and (as ASP.NET's UrlDecode does) %uXXXX;
// a "%" followed by neither is kept as it is.
func formUnescape(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case c == '%' && i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') &&
			isHex(s[i+2]) && isHex(s[i+3]) && isHex(s[i+4]) && isHex(s[i+5]):
			r := rune(unhex(s[i+2]))<<12 | rune(unhex(s[i+3]))<<8 | rune(unhex(s[i+4]))<<4 | rune(unhex(s[i+5]))
			b = utf8.AppendRune(b, r)
			i += 5
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// bodyKind is the set of ways frameworks could read a request body for
// parameters; a body some read one way and others another is checked as
// each.
type bodyKind int

const (
	bodyOpaque    bodyKind = 0 // no framework reads parameters from it
	bodyForm      bodyKind = 1
	bodyJSON      bodyKind = 2
	bodyMultipart bodyKind = 4
)

// classifyBody says how a body with these Content-Type values may be read.
// The media type is taken as the frameworks take it, not by substrings of
// the whole value (a parameter "x=json" must not hide a form): Rack, Rails,
// PHP and Tomcat cut it at the first ";" or "," (PHP at a space too) and
// ignore case, so a form is application/x-www-form-urlencoded there, or a
// POST with no type (Rack), and multipart is multipart/* there. JSON is a
// media type containing "json", or any type containing "/json" or "+json"
// (Laravel's isJson looks at the whole value, parameters included). Each
// reading that applies is checked, so a body that does not parse as all of
// them is refused.
func classifyBody(method string, ctypes []string) (bodyKind, string, error) {
	if len(ctypes) > 1 {
		return 0, "", badOverride("more than one Content-Type header")
	}
	ct := ""
	if len(ctypes) == 1 {
		ct = strings.ToLower(strings.TrimSpace(ctypes[0]))
	}
	mt := ct
	if i := strings.IndexAny(mt, ";, \t"); i >= 0 {
		mt = mt[:i]
	}
	var kind bodyKind
	switch {
	case mt == "application/x-www-form-urlencoded", mt == "" && method == http.MethodPost:
		kind |= bodyForm
	case strings.HasPrefix(mt, "multipart/"):
		kind |= bodyMultipart
	}
	if strings.Contains(mt, "json") || strings.Contains(ct, "/json") || strings.Contains(ct, "+json") {
		kind |= bodyJSON
	}
	if kind&(bodyForm|bodyJSON) != 0 {
		if err := checkCharset(ct); err != nil {
			return 0, "", err
		}
	}
	if kind&bodyMultipart == 0 {
		return kind, "", nil
	}
	// The boundary is case-sensitive: take it from the header as sent.
	b, err := multipartBoundary(ctypes[0])
	if err != nil {
		return 0, "", err
	}
	return kind, b, nil
}

// multipartBoundary returns the boundary of a multipart Content-Type when
// every parser reads the same one. PHP takes the text after the first
// "boundary" substring and its "=", unquoted, up to ";" or ","; Rack the
// last "boundary=" up to `"`, ";" or ","; Go the boundary parameter. So
// "boundary" must appear once, as the parameter name followed by "=", and
// its value hold none of those characters nor white space.
func multipartBoundary(ct string) (string, error) {
	refused := badOverride("a multipart Content-Type without exactly one plain boundary parameter")
	for i := 0; i < len(ct); i++ {
		if ct[i] >= utf8.RuneSelf {
			return "", refused // so that lower-casing keeps byte offsets
		}
	}
	lower := strings.ToLower(ct)
	i := strings.Index(lower, "boundary=")
	if i < 0 || strings.Count(lower, "boundary") != 1 {
		return "", refused
	}
	_, params, err := mime.ParseMediaType(ct)
	b := params["boundary"]
	if err != nil || b == "" || strings.ContainsAny(b, "\";, \t") {
		return "", refused
	}
	v := ct[i+len("boundary="):] // as PHP reads it
	if q, ok := strings.CutPrefix(v, `"`); ok {
		v, _, _ = strings.Cut(q, `"`)
	} else if j := strings.IndexAny(v, ";,"); j >= 0 {
		v = v[:j]
	}
	if v != b {
		return "", refused
	}
	return b, nil
}

// checkCharset refuses text in a charset where "_method" would not be the
// ASCII bytes the gateway looks for (UTF-16 and UTF-32 JSON are read by
// Express's body-parser).
func checkCharset(ct string) error {
	i := strings.Index(ct, "charset=")
	if i < 0 {
		return nil
	}
	cs := ct[i+len("charset="):]
	if j := strings.IndexAny(cs, "; ,\t"); j >= 0 {
		cs = cs[:j]
	}
	switch strings.Trim(cs, `"'`) {
	case "utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "windows-1252":
		return nil
	}
	return &overrideError{http.StatusUnsupportedMediaType, fmt.Sprintf("a request body in charset %q cannot be checked for a method override", truncate(cs, 32))}
}

// decodeRequestBody undoes the request's Content-Encoding (gzip or deflate, as
// Express's body-parser does) within max bytes.
func decodeRequestBody(raw []byte, encodings []string, max int64) ([]byte, error) {
	var codings []string
	for _, v := range encodings {
		for _, c := range strings.Split(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	if len(codings) == 0 {
		return raw, nil
	}
	if len(codings) > 1 {
		return nil, &overrideError{http.StatusUnsupportedMediaType, "a request body with more than one content coding cannot be checked for a method override"}
	}
	var r io.Reader
	switch codings[0] {
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, badOverride("the gzip request body cannot be read")
		}
		r = zr
	case "deflate":
		if zr, err := zlib.NewReader(bytes.NewReader(raw)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(raw))
		}
	default:
		return nil, &overrideError{http.StatusUnsupportedMediaType, fmt.Sprintf("a request body in content coding %q cannot be checked for a method override", truncate(codings[0], 32))}
	}
	out, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, badOverride("the %s request body cannot be read", codings[0])
	}
	if int64(len(out)) > max {
		return nil, tooLarge(max)
	}
	return out, nil
}

func tooLarge(max int64) *overrideError {
	return &overrideError{http.StatusRequestEntityTooLarge, fmt.Sprintf(
		"a form, JSON or multipart request body over %d bytes cannot be checked for a method override (_method and the like); send a smaller body", max)}
}

// bodyOverrides returns the methods a (decoded) body names, read in each
// way of kind.
func bodyOverrides(kind bodyKind, boundary string, body []byte) ([]string, error) {
	var out []string
	if kind&bodyForm != 0 {
		m, err := formOverrides(string(body), nil)
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	if kind&bodyJSON != 0 {
		m, err := jsonOverrides(body)
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	if kind&bodyMultipart != 0 {
		m, err := multipartOverrides(body, boundary)
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

var errJSON = badOverride("the JSON request body cannot be parsed to check it for a method override")

// jsonOverrides returns the methods named by the top-level override
// members of a JSON document (a string, or strings in an array; any other
// value is ignored, as the frameworks ignore it). A body that is not
// exactly one JSON value is refused: the gateway would not know what the
// upstream reads.
func jsonOverrides(body []byte) ([]string, error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(body) {
		return nil, badOverride("the JSON request body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, errJSON
	}
	var out []string
	if tok == json.Delim('{') {
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, errJSON
			}
			k, _ := kt.(string)
			if !isOverrideParam(paramKey(k)) {
				if err := skipJSON(dec); err != nil {
					return nil, errJSON
				}
				continue
			}
			vt, err := dec.Token()
			if err != nil {
				return nil, errJSON
			}
			switch v := vt.(type) {
			case string:
				if out, err = overrideValues(v, out); err != nil {
					return nil, err
				}
			case json.Delim:
				if v == '[' {
					for dec.More() {
						et, err := dec.Token()
						if err != nil {
							return nil, errJSON
						}
						if s, ok := et.(string); ok {
							if out, err = overrideValues(s, out); err != nil {
								return nil, err
							}
						} else if d, ok := et.(json.Delim); ok && (d == '[' || d == '{') {
							if err := skipOpened(dec); err != nil {
								return nil, errJSON
							}
						}
					}
				}
				if err := skipOpened(dec); err != nil {
					return nil, errJSON
				}
			}
		}
		if _, err := dec.Token(); err != nil { // the closing brace
			return nil, errJSON
		}
	} else if d, ok := tok.(json.Delim); ok && d == '[' {
		if err := skipOpened(dec); err != nil {
			return nil, errJSON
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errJSON
	}
	return out, nil
}

// skipJSON skips the next value.
func skipJSON(dec *json.Decoder) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); ok && (d == '{' || d == '[') {
		return skipOpened(dec)
	}
	return nil
}

// skipOpened skips to the end of the object or array just opened.
func skipOpened(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
	}
	return nil
}

var errMultipart = badOverride("the multipart request body cannot be parsed to check it for a method override")

// multipartOverrides returns the methods named by the override fields of
// a multipart body, read raw and, where a part declares a transfer
// encoding, decoded too. A body it cannot parse strictly is refused, and
// so is one where a Content-Disposition or Content-ID line mentioning a
// method appears outside the parts it parsed (a boundary another parser
// would read differently).
func multipartOverrides(body []byte, boundary string) ([]string, error) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out []string
	seen := 0
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errMultipart
		}
		if len(p.Header[textproto.CanonicalMIMEHeaderKey("Content-Disposition")]) > 1 {
			return nil, errMultipart
		}
		// Rack names a part by its Content-ID when the Content-Disposition
		// gives it no name Rack reads, or there is none; its patterns find
		// "Content-ID:" and "Content-Disposition:" anywhere in the part's
		// head (X-Content-Disposition too, whichever comes first). Every
		// such name counts as well as the Content-Disposition's.
		var names []string
		for k, vs := range p.Header {
			lk := strings.ToLower(k)
			id, cd := strings.HasSuffix(lk, "content-id"), strings.HasSuffix(lk, "content-disposition")
			if !id && !cd {
				continue
			}
			for _, v := range vs {
				if namesMethod([]byte(k + ":" + v)) {
					seen++
				}
				if id {
					names = append(names, v)
					continue
				}
				_, params, err := mime.ParseMediaType(v)
				if err != nil {
					return nil, errMultipart
				}
				names = append(names, params["name"])
				if names, err = dispositionNames(v, names); err != nil {
					return nil, err
				}
			}
		}
		if !slices.ContainsFunc(names, func(n string) bool { return isOverrideParam(paramKey(n)) }) {
			continue
		}
		v, err := io.ReadAll(p)
		if err != nil {
			return nil, errMultipart
		}
		if out, err = overrideValues(string(v), out); err != nil {
			return nil, err
		}
		if strings.EqualFold(strings.TrimSpace(p.Header.Get("Content-Transfer-Encoding")), "quoted-printable") {
			qp, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(v)))
			if err != nil {
				return nil, errMultipart
			}
			if out, err = overrideValues(string(qp), out); err != nil {
				return nil, err
			}
		}
	}
	if rawNamingHeaders(body) != seen {
		return nil, badOverride("the multipart request body names a method field outside the parts the gateway can read")
	}
	return out, nil
}

// dispositionNames appends to names every name a parser could read from a
// Content-Disposition value v besides its name parameter. Rack reads the
// name with a regular expression, not by parameters: the last "; name="
// of the line (Rack 2.2 and 3.0: /Content-Disposition:.*;\s*name=(VALUE)/,
// greedy), the first (Rack 3.1), or in older Rack any "name=" after white
// space; inside another parameter's quoted value too (`name="x";
// foo="; name=_method"` is _method there). PHP reads parameters, but
// takes single quotes as quotes too (name='_method'). So each "name", in
// any case, after ";" or white space and before "=", names a candidate:
// its quoted text (either quote) or the text up to the next quote or ";",
// and that text up to the first character a token cannot hold.
//
// More than maxDispositionNames candidates are refused: each is read on to
// the next quote or ";", so "name=" repeated in one long quoted value cost
// work and memory in the square of its length (~390 MB for 64 KiB).
func dispositionNames(v string, names []string) ([]string, error) {
	found := 0
	for i := 0; i+len("name") <= len(v); i++ {
		if !strings.EqualFold(v[i:i+len("name")], "name") {
			continue
		}
		if i == 0 || (v[i-1] != ';' && v[i-1] != ' ' && v[i-1] != '\t') {
			continue // "filename", or not a parameter
		}
		k := i + len("name")
		for k < len(v) && (v[k] == ' ' || v[k] == '\t') {
			k++
		}
		if k == len(v) || v[k] != '=' {
			continue
		}
		if found++; found > maxDispositionNames {
			return nil, badOverride("a multipart part's Content-Disposition names a field more than %d times; it cannot be checked for a method override", maxDispositionNames)
		}
		rest := strings.TrimLeft(v[k+1:], " \t")
		if rest != "" && (rest[0] == '"' || rest[0] == '\'') {
			rest = rest[1:] // PHP takes single quotes as quotes too
		}
		if j := strings.IndexAny(rest, `"';`); j >= 0 {
			rest = rest[:j]
		}
		names = append(names, rest)
		if j := strings.IndexAny(rest, " \t()<>,:\\/[]?="); j >= 0 {
			names = append(names, rest[:j])
		}
	}
	return names, nil
}

// maxDispositionNames bounds the names one Content-Disposition may give
// (a field's is one; Rack's and PHP's readings add a few).
const maxDispositionNames = 16

// rawNamingHeaders counts the lines of body, however the parts are
// delimited, that hold a Content-Disposition header (X-Content-Disposition
// too: Rack's pattern is unanchored) mentioning "method",
// or hold "Content-ID" and mention it (Rack's name for a part without
// one). A Content-Disposition header runs on over the lines after it that
// start with a space or tab or have no ":": PHP joins such a line to the
// header before it with nothing between (name="_me, then thod", is
// _method).
func rawNamingHeaders(body []byte) int {
	n := 0
	var cd []byte // the Content-Disposition header being read, its lines joined
	in := false
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if in && len(line) > 0 && (line[0] == ' ' || line[0] == '\t' || bytes.IndexByte(line, ':') < 0) {
			cd = append(cd, bytes.TrimLeft(line, " \t")...)
			continue
		}
		if in && namesMethod(cd) {
			n++
		}
		line = bytes.TrimLeft(line, " \t")
		in = hasFold(line, "content-disposition")
		if in {
			cd = append(cd[:0], line...)
		} else if hasFold(line, "content-id") && namesMethod(line) {
			n++
		}
	}
	if in && namesMethod(cd) {
		n++
	}
	return n
}

// hasFold reports whether b holds the lower-case ASCII s, in any case,
// without allocating (it runs on every line of a body).
func hasFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		j := 0
		for ; j < len(s); j++ {
			c := b[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != s[j] {
				break
			}
		}
		if j == len(s) {
			return true
		}
	}
	return false
}

// namesMethod reports whether a header mentions "method", in any case and
// with any spaces or tabs within the word.
func namesMethod(h []byte) bool {
	h = bytes.ToLower(h)
	h = bytes.ReplaceAll(bytes.ReplaceAll(h, []byte(" "), nil), []byte("\t"), nil)
	return bytes.Contains(h, []byte("method"))
}

// inspectBody reads the request body when some framework could read a
// method override from it, checks it within max bytes, and leaves r.Body
// ready to forward exactly the bytes read. It returns the methods named.
func inspectBody(r *http.Request, max int64) ([]string, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	kind, boundary, err := classifyBody(r.Method, r.Header.Values("Content-Type"))
	if err != nil || kind == bodyOpaque {
		return nil, err
	}
	if r.ContentLength > max {
		return nil, tooLarge(max)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, &overrideError{http.StatusBadRequest, "the request body could not be read"}
	}
	if int64(len(raw)) > max {
		return nil, tooLarge(max)
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{bytes.NewReader(raw), r.Body}
	body, err := decodeRequestBody(raw, r.Header.Values("Content-Encoding"), max)
	if err != nil {
		return nil, err
	}
	out, err := bodyOverrides(kind, boundary, body)
	if err != nil || len(body) == len(raw) && (len(raw) == 0 || &body[0] == &raw[0]) {
		return out, err // no coding undone: raw is what was read
	}
	return rawBodyOverrides(kind, boundary, raw, out)
}

// rawBodyOverrides appends the methods a body with a Content-Encoding names
// as most frameworks read it: as it comes, the coding not undone (Rack,
// PHP, Tomcat and Go do not; Express's body-parser does, and the decoded
// body is read for it). A gzip header's comment or file name field holds
// text of the sender's choosing ("&_method=DELETE&"), which they parse as
// part of the form. As a form; as multipart where the raw bytes hold the
// boundary, refused when they cannot be parsed and mention a method field
// (coded bytes that merely fail to parse name nothing); never as JSON,
// which coded bytes cannot be.
func rawBodyOverrides(kind bodyKind, boundary string, raw []byte, out []string) ([]string, error) {
	var err error
	if kind&bodyForm != 0 {
		if out, err = formOverrides(string(raw), out); err != nil {
			return nil, err
		}
	}
	if kind&bodyMultipart != 0 && bytes.Contains(raw, []byte("--"+boundary)) {
		m, err := multipartOverrides(raw, boundary)
		if err != nil && rawNamingHeaders(raw) > 0 {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

// asOverrideError maps any error of the checks to its status and reason.
func asOverrideError(err error) (int, string) {
	var oe *overrideError
	if errors.As(err, &oe) {
		return oe.status, oe.reason
	}
	return http.StatusBadRequest, err.Error()
}

// overrides returns every method the request names besides its own: in
// headers, in the query string and in a body some framework would read.
func (g *Gateway) overrides(r *http.Request) ([]string, error) {
	out, err := headerOverrides(r.Header)
	if err != nil {
		return nil, err
	}
	if out, err = formOverrides(r.URL.RawQuery, out); err != nil {
		return nil, err
	}
	fromBody, err := inspectBody(r, g.cfg.MaxInspectedBody)
	if err != nil {
		return nil, err
	}
	return append(out, fromBody...), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
