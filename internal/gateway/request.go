package gateway

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// isPathOverrideHeader reports whether a header (by headerKey: case and
// "_"/"-" folded) names a path or URL for an upstream to serve instead of
// the request's: IIS URL Rewrite, Symfony and Zend (X-Original-URL,
// X-Rewrite-URL), nginx and Envoy conventions (X-Original-URI,
// X-Envoy-Original-Path, Traefik's X-Replaced-Path, the X-Override-URL of
// bypass lists), the X-Forwarded-URI/-Path/-Prefix family that some
// frameworks use to rebuild the request URL, and the script-name headers
// that set SCRIPT_NAME and cut it off the path (the Flask/Django
// "ReverseProxied" middleware's X-Script-Name, a raw SCRIPT_NAME header
// that gunicorn before 22 took).
func isPathOverrideHeader(k string) bool {
	switch k {
	case "x-forwarded-uri", "x-forwarded-url", "x-forwarded-path", "x-forwarded-prefix", "x-request-uri", "x-request-url",
		"x-script-name", "x-forwarded-script-name", "script-name":
		return true
	}
	if !strings.HasPrefix(k, "x-") {
		return false
	}
	if !strings.Contains(k, "original") && !strings.Contains(k, "rewrite") &&
		!strings.Contains(k, "override") && !strings.Contains(k, "replaced") {
		return false
	}
	return strings.HasSuffix(k, "-url") || strings.HasSuffix(k, "-uri") || strings.HasSuffix(k, "-path")
}

// isProxyAssertedHeader reports whether a header (by headerKey) is one a
// proxy in front of a server sets to tell it who the client is: its address
// (X-Real-IP, True-Client-IP, the X-Forwarded-* family beyond the four
// httputil.ReverseProxy drops), its TLS client certificate
// (X-Forwarded-Client-Cert, X-SSL-Client-*, IIS ARR's X-ARR-ClientCert),
// or the user an authenticating proxy signed in (Remote-User, Kubernetes'
// X-Remote-*, Gitea's and Grafana's X-WEBAUTH-USER, the X-Forwarded-User
// of Jenkins and oauth2-proxy, X-Auth-Request-*). The gateway is that proxy
// to its upstreams and sets none of them; from a job, one would have the
// upstream take the request as another address's or user's than the
// credential's. The method overrides among them are checked, and pass.
func isProxyAssertedHeader(k string) bool {
	switch k {
	case "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-cluster-client-ip",
		"x-original-forwarded-for", "x-host", "x-original-host", "x-forwarded",
		"remote-user", "x-remote-user", "x-remote-group", "x-authenticated-user", "x-arr-clientcert":
		return true
	}
	if isOverrideHeader(k) {
		return false
	}
	for _, p := range [...]string{"x-forwarded-", "x-remote-extra-", "x-webauth-", "x-auth-request-",
		"x-ssl-client", "ssl-client-", "x-client-cert", "x-client-verify"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// hopByHop are the names a request's Connection header may list: the close
// option and the hop-by-hop headers (RFC 9110 section 7.6.1, those
// httputil.ReverseProxy drops in any case, and RFC 9113's HTTP2-Settings of
// an h2c upgrade, which badUpgrade refuses).
var hopByHop = map[string]bool{
	"close": true, "keep-alive": true, "upgrade": true, "te": true, "transfer-encoding": true,
	"trailer": true, "connection": true, "proxy-connection": true, "proxy-authorization": true,
	"proxy-authenticate": true, "http2-settings": true,
}

// connectionListsEndToEnd reports whether the Connection header lists a
// header that is not hop-by-hop. The reverse proxy drops every header
// listed there, after the checks have read the request: with Content-Type
// or Content-Encoding listed, the upstream would parse a body other than
// the one checked (a form holding _method). Such a request is refused
// rather than its listed headers stripped before the checks: stripping
// would have to come before every read of the headers (source address,
// token, DPoP) and change what each means, and no client needs to list an
// end-to-end header there.
func connectionListsEndToEnd(h http.Header) bool {
	for _, v := range h["Connection"] {
		for n := range strings.SplitSeq(v, ",") {
			// Trimmed as the proxy trims it before dropping the header.
			if n = textproto.TrimString(n); n != "" && !hopByHop[strings.ToLower(n)] {
				return true
			}
		}
	}
	return false
}

// tokenHeader returns the name of a header other than Authorization,
// Proxy-Authorization and DPoP that holds the job token tok, or "". The
// proxy drops such a header after the checks have read it, so that the
// token never reaches the upstream: with the token in Content-Type, the
// upstream would get a POST without one, a form to Rack (_method and all),
// after the checks took its body as opaque. Such a request is refused.
func tokenHeader(h http.Header, tok string) string {
	for k, vs := range h {
		switch k {
		case "Authorization", "Proxy-Authorization", "Dpop":
			continue
		}
		for _, v := range vs {
			if strings.Contains(v, tok) {
				return k
			}
		}
	}
	return ""
}

// reservedHeaders are headers whose other spellings ("_" for "-") must not
// reach an upstream beside the gateway's own: a CGI-style server would
// read X_Foo as X-Foo, so a client could send a second credential or
// framing header under the gateway's.
var reservedHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "dpop": true,
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
	"upgrade": true, "te": true, "trailer": true, "keep-alive": true, "proxy-connection": true,
	"forwarded": true, "x-forwarded-for": true, "x-forwarded-host": true, "x-forwarded-proto": true,
	"x-real-ip": true,
}

// scrubHeaders removes from a request going upstream every path-override
// and proxy-asserted header under any spelling, and every header that
// spells a reserved one (or the credential's header, credKey) differently.
func scrubHeaders(h http.Header, credKey string) {
	var buf [64]byte
	for k := range h {
		n := string(appendHeaderKey(buf[:0], k))
		switch {
		case isPathOverrideHeader(n), isProxyAssertedHeader(n):
			delete(h, k)
		case (reservedHeaders[n] || n == credKey) && strings.IndexByte(k, '_') >= 0:
			// Spelled with "_": the only way n differs from k in lower case.
			delete(h, k)
		}
	}
}

// urlHasToken reports whether a request target carries a checksum-valid
// mayfly token (a job or admin token) in any form a server or its logs
// could turn back into one: as sent, percent-decoded (%XX and ASP.NET's
// %uXXXX, as often as it still changes, "+" as a space or not), as UTF-16
// (NULs dropped), or inside a base64 or hex run. A target still changing
// after maxURLDecodes decodings is taken to carry one: no client encodes a
// URL that often, and each decoding is work.
func urlHasToken(target string) bool {
	if len(target) < token.JobLen {
		return false // no form of a token is shorter
	}
	s := target
	for range maxURLDecodes {
		if tokenIn(s) {
			return true
		}
		if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
			return false
		}
		if strings.IndexByte(s, '+') >= 0 && tokenIn(formUnescape(strings.ReplaceAll(s, "+", "%2B"))) {
			return true
		}
		d := formUnescape(s)
		if d == s {
			return false
		}
		s = d
	}
	return true
}

const maxURLDecodes = 8

func tokenIn(s string) bool {
	if strings.IndexByte(s, 0) >= 0 && tokenIn(strings.ReplaceAll(s, "\x00", "")) {
		return true
	}
	return strings.Contains(s, "mfy") && len(token.Find([]byte(s))) > 0 || encodedToken(s)
}

// encodedToken looks for a token in every base64 (both alphabets, any
// alignment) and hex run of s long enough to hold one.
func encodedToken(s string) bool {
	const minB64 = (token.JobLen*4 + 2) / 3 // 40 bytes: 54 characters
	if len(s) < minB64 {
		return false
	}
	for _, run := range runs(s, isB64) {
		if len(run) < minB64 {
			continue
		}
		// One alphabet for both: a token is encoded with one or the other.
		run = strings.NewReplacer("-", "+", "_", "/").Replace(run)
		for off := 0; off < 4; off++ {
			r := run[off:]
			if len(r)%4 == 1 {
				r = r[:len(r)-1]
			}
			if b, err := base64.RawStdEncoding.DecodeString(r); err == nil && len(token.Find(b)) > 0 {
				return true
			}
		}
	}
	for _, run := range runs(s, isHex) {
		if len(run) < 2*token.JobLen {
			continue
		}
		for off := 0; off < 2; off++ {
			r := run[off:]
			if b, err := hex.DecodeString(r[:len(r)/2*2]); err == nil && len(token.Find(b)) > 0 {
				return true
			}
		}
	}
	return false
}

func isB64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
}

// runs returns the maximal runs of s whose bytes satisfy in.
func runs(s string, in func(byte) bool) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && in(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = append(out, s[start:i])
			start = -1
		}
	}
	return out
}
