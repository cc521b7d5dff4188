package gateway

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/mask"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// An upstream's answer may name URLs that a client goes to on its own: a
// redirect's or a 201's Location, Content-Location, Refresh (browsers
// follow it like a redirect), and the targets and anchors of Link (an
// API's next page). Each is mapped onto the gateway's URL of the
// route (fitURLs), so that a client following it stays in the gateway:
//
//   - a URL on the upstream's origin (the route's url: scheme, host and
//     port) under the route's base path becomes PublicURL + /gw/{upstream}
//     + the rest of its path, query and fragment kept; relative references
//     are resolved against the URL the upstream was sent first, so that
//     "/x" or "../x" land under the route rather than the gateway's root
//     (where mayfly's own API and console are);
//   - one on the upstream's host that the route cannot reach (another
//     scheme or port, or outside the base path), an http(s) URL without
//     "//" (which browsers read against the page's scheme), and one that
//     cannot be parsed are dropped: a client would take its headers (its
//     mayfly token among them: Go and curl keep Authorization for the same
//     host) straight to the upstream, and learn its address. One under
//     another upstream's url on the same host is not mapped onto that
//     route either: a grant is per route, so the job may have no scope
//     there, or one this upstream should not steer it to;
//   - one on the gateway's own host outside the route (mayfly's API and
//     console, another upstream's route: the client would take its mayfly
//     token there) is dropped too, one on the route is passed;
//   - a URL of any other origin, or of another scheme (mailto:), is
//     passed unchanged: the upstream chose to send the client there (an
//     archive download, a signed storage URL), a mayfly token is useless
//     there, and clients drop Authorization on a redirect to another host.
//
// URLs are read as browsers read them (browserURL), and their hosts
// compared as clients compare them (sameHost), so that none a browser
// would take to the upstream, or out of the route, passes; a host the
// gateway cannot place (non-ASCII, which IDNA maps) is dropped.

// urlHeaders are the response headers fitURLs maps.
var urlHeaders = [...]string{"Location", "Content-Location", "Refresh", "Link"}

// fitURLs maps the URLs of h (an upstream's response header) onto the
// route, or drops them. Nothing to do, nothing allocated.
func (f *forwarding) fitURLs(h http.Header) {
	for _, k := range urlHeaders {
		vs, ok := h[k]
		if !ok {
			continue
		}
		out := make([]string, 0, len(vs))
		for _, v := range vs {
			var m string
			var keep bool
			switch k {
			case "Refresh":
				m, keep = f.mapRefresh(v)
			case "Link":
				m, keep = f.mapLinks(v)
			default:
				m, keep = f.mapURL(v)
			}
			if keep {
				// Masked again: read as a browser reads it (a tab or line
				// end removed), the URL may spell a secret it did not.
				out = append(out, f.red.m.MaskStringTail(m, mask.MinSecretLen))
			}
		}
		if len(out) == 0 {
			delete(h, k)
		} else {
			h[k] = out
		}
	}
}

// mapURL maps v, a URL reference of the upstream's answer, onto the route;
// keep is false when it must be dropped.
func (f *forwarding) mapURL(v string) (mapped string, keep bool) {
	bv := browserURL(v)
	ref, err := url.Parse(bv)
	if err != nil {
		return "", false
	}
	if ref.Scheme != "" && ref.Scheme != "http" && ref.Scheme != "https" {
		return v, true // not a network location of the upstream's
	}
	if ref.Opaque != "" {
		return "", false // "http:host/x": read against the page's scheme
	}
	base := f.base
	sent := url.URL{Scheme: base.Scheme, Host: base.Host, Path: base.Path + f.clean,
		RawPath: base.EscapedPath() + policy.EscapePath(f.clean), RawQuery: f.r.URL.RawQuery}
	abs := sent.ResolveReference(ref)
	same, known := sameHost(abs.Hostname(), base.Hostname())
	if !known {
		return "", false // a host the gateway cannot place: it may be the upstream's or mayfly's
	}
	if !same {
		if f.outOfRoute(abs) {
			return "", false // the gateway's own host, out of the route
		}
		if bv != v {
			// As a browser reads it, not as the client may: curl and
			// Python take "https://a.example\@b.example/" for b's.
			return abs.String(), true
		}
		return v, true // another origin's (or this very route's)
	}
	if abs.Scheme != base.Scheme || urlPort(abs) != urlPort(base) {
		return "", false // the upstream's host, out of the route's reach
	}
	p, bp := abs.EscapedPath(), base.EscapedPath()
	rest, ok := strings.CutPrefix(p, bp)
	if !ok || rest != "" && rest[0] != '/' {
		return "", false // outside the route's base path
	}
	if rest == "" {
		rest = "/"
	}
	var b strings.Builder
	b.WriteString(f.g.cfg.PublicURL(f.r))
	b.WriteString(f.g.cfg.Prefix)
	b.WriteString(f.up.Name)
	b.WriteString(rest)
	if abs.ForceQuery || abs.RawQuery != "" {
		b.WriteByte('?')
		b.WriteString(abs.RawQuery)
	}
	if abs.Fragment != "" {
		b.WriteByte('#')
		b.WriteString(abs.EscapedFragment())
	}
	return b.String(), true
}

// outOfRoute reports whether abs is on the gateway's own host (whatever
// its scheme or port: Go's client keeps Authorization for the same host)
// but not on this route of its origin: mayfly's API and console, or
// another upstream's route, where the client's mayfly token works. The
// gateway's own host is public_url's, and also the one the client reached
// it by (its Host) where that is another: an internal name beside a
// proxy's public one, or, without public_url, a name the server does not
// know as its own.
func (f *forwarding) outOfRoute(abs *url.URL) bool {
	pub, err := url.Parse(f.g.cfg.PublicURL(f.r))
	if err != nil {
		return true
	}
	if same, known := sameHost(abs.Hostname(), pub.Hostname()); !known {
		return true
	} else if same {
		return abs.Scheme != pub.Scheme || urlPort(abs) != urlPort(pub) || !f.onRoute(abs)
	}
	// The scheme the client used is unknown behind a proxy: abs's own
	// gives the Host's port when it names none.
	in := url.URL{Scheme: abs.Scheme, Host: f.r.Host}
	if same, known := sameHost(abs.Hostname(), in.Hostname()); !same {
		return !known
	}
	return urlPort(abs) != urlPort(&in) || !f.onRoute(abs)
}

// onRoute reports whether abs's path is under this route's prefix.
func (f *forwarding) onRoute(abs *url.URL) bool {
	route := f.g.cfg.Prefix + f.up.Name
	p := abs.EscapedPath()
	return p == route || strings.HasPrefix(p, route+"/")
}

// mapRefresh maps the URL of a Refresh header ("5; url=…") as mapURL
// does, read as the HTML standard's declarative refresh reads it; one it
// cannot read is dropped.
func (f *forwarding) mapRefresh(v string) (string, bool) {
	delay, target, ok := parseRefresh(v)
	if !ok {
		return "", false
	}
	if target == "" {
		return v, true // reloads the same page
	}
	m, keep := f.mapURL(target)
	if !keep {
		return "", false
	}
	if m == target {
		return v, true
	}
	return delay + "; url=" + m, true
}

// mapLinks maps the target of each link of a Link header value (RFC 8288:
// `<uri>; param=…, <uri>; …`) as mapURL does (pagination: GitHub's and
// GitLab's APIs name their next page so), dropping the links it would
// drop, and one without a <target>; keep is false when none is left.
func (f *forwarding) mapLinks(v string) (string, bool) {
	var out []string
	changed := false
	for _, l := range splitLinks(v) {
		l = strings.TrimSpace(l)
		end := strings.IndexByte(l, '>')
		if !strings.HasPrefix(l, "<") || end < 0 {
			changed = true
			continue
		}
		target := l[1:end]
		m, keep := f.mapURL(target)
		params, pkeep := f.mapAnchor(l[end+1:])
		switch {
		case !keep || !pkeep:
			changed = true
			continue
		case m != target || params != l[end+1:]:
			changed = true
			l = "<" + m + ">" + params
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return "", false
	}
	if !changed {
		return v, true
	}
	return strings.Join(out, ", "), true
}

// mapAnchor maps the anchor parameters among a link's parameters (RFC
// 8288 section 3.2: the link's context, a URL resolved as its target is)
// as mapURL does; keep is false when one must be dropped, and its link
// with it: without its anchor the link would say something else.
func (f *forwarding) mapAnchor(params string) (string, bool) {
	segs := splitOutside(params, ';', false)
	changed := false
	for i, seg := range segs {
		name, val, ok := strings.Cut(seg, "=")
		tn := strings.TrimSpace(name)
		if !ok || !strings.EqualFold(tn, "anchor") {
			continue
		}
		v := unquote(strings.TrimSpace(val))
		m, keep := f.mapURL(v)
		if !keep {
			return "", false
		}
		lead := name[:len(name)-len(strings.TrimLeft(name, " \t"))]
		if q := lead + tn + "=" + quote(m); q != seg {
			segs[i], changed = q, true
		}
	}
	if !changed {
		return params, true
	}
	return strings.Join(segs, ";"), true
}

// unquote is a parameter's value: a quoted-string's content unescaped, or
// the token itself.
func unquote(v string) string {
	if !strings.HasPrefix(v, `"`) {
		return v
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && i+1 < len(v):
			i++
			b.WriteByte(v[i])
		case c == '"':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// quote is v as a quoted-string.
func quote(v string) string {
	if !strings.ContainsAny(v, `"\`) {
		return `"` + v + `"`
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// splitLinks splits a Link header value at the commas between links: not
// those inside a <target> or a quoted parameter.
func splitLinks(v string) []string { return splitOutside(v, ',', true) }

// splitOutside splits v at each sep outside a quoted string, and outside a
// <target> when targets.
func splitOutside(v string, sep byte, targets bool) []string {
	var parts []string
	inTarget, inQuote, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case inTarget:
			inTarget = c != '>'
		case c == '<' && targets:
			inTarget = true
		case c == '"':
			inQuote = true
		case c == sep:
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	return append(parts, v[start:])
}

// parseRefresh splits a Refresh value into its delay and URL (empty: the
// page itself), following the HTML standard's "shared declarative refresh
// steps"; ok is false when a browser would ignore it.
func parseRefresh(v string) (delay, target string, ok bool) {
	i := skipSpace(v, 0)
	start := i
	for i < len(v) && ('0' <= v[i] && v[i] <= '9' || v[i] == '.') {
		i++
	}
	if i == start {
		return "", "", false
	}
	delay = v[start:i]
	if i == len(v) {
		return delay, "", true
	}
	if c := v[i]; c != ';' && c != ',' && !isSpace(c) {
		return "", "", false
	}
	i = skipSpace(v, i)
	if i < len(v) && (v[i] == ';' || v[i] == ',') {
		i++
	}
	i = skipSpace(v, i)
	rest := v[i:]
	// An optional "url =" (any case), then an optional quote.
	if len(rest) >= 3 && strings.EqualFold(rest[:3], "url") {
		j := skipSpace(rest, 3)
		if j < len(rest) && rest[j] == '=' {
			rest = rest[skipSpace(rest, j+1):]
		}
	}
	if rest != "" && (rest[0] == '\'' || rest[0] == '"') {
		q := rest[0]
		rest = rest[1:]
		if k := strings.IndexByte(rest, q); k >= 0 {
			rest = rest[:k]
		}
	}
	return delay, rest, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// browserURL is v as a browser's URL parser reads it (the WHATWG URL
// standard, for http and https): leading and trailing controls and spaces
// trimmed, tabs and newlines removed, and before the query "\" read as "/"
// and "%2e" as "." (a dot segment).
func browserURL(v string) string {
	v = strings.TrimFunc(v, func(r rune) bool { return r <= ' ' })
	if strings.ContainsAny(v, "\t\n\r") {
		v = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(v)
	}
	head, tail := v, ""
	if i := strings.IndexAny(v, "?#"); i >= 0 {
		head, tail = v[:i], v[i:]
	}
	if strings.Contains(head, `\`) || strings.Contains(head, "%2") {
		head = strings.NewReplacer(`\`, "/", "%2e", ".", "%2E", ".").Replace(head)
	}
	return head + tail
}

// sameHost reports whether hosts a and b (url.URL.Hostname: unbracketed,
// percent-decoded) name the same host as clients read them: names without
// case or trailing dots, addresses in any form a browser or curl reads
// (hostID). known is false when either is one the gateway cannot place,
// which callers treat as the same host (deny by default).
func sameHost(a, b string) (same, known bool) {
	if strings.EqualFold(a, b) {
		return true, true // the common case: nothing parsed, nothing allocated
	}
	an, aa, aok := hostID(a)
	bn, ba, bok := hostID(b)
	switch {
	case !aok || !bok:
		return false, false
	case aa.IsValid() || ba.IsValid():
		return aa == ba, true
	}
	return strings.EqualFold(an, bn), true
}

// hostID is host h as clients compare it: an address (IPv6 canonical and
// IPv4-mapped ones as IPv4; IPv4 in the WHATWG URL standard's forms,
// "2130706433", "0x7f.1", "0177.0.0.1", "127.1", which browsers and curl
// connect to as 127.0.0.1), or else a name without trailing dots (to be
// compared without case). ok is false for a host the gateway cannot place:
// a non-ASCII one (IDNA maps "ｍａｙｆｌｙ。test" or "may\u00adfly.test"
// to "mayfly.test", and the gateway carries no IDNA tables), or one a
// browser reads as an IPv4 address that is none ("127.0.0.256"), which
// other clients may still resolve to one.
func hostID(h string) (name string, addr netip.Addr, ok bool) {
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			return "", netip.Addr{}, false
		}
	}
	if strings.IndexByte(h, ':') >= 0 {
		if i := strings.IndexByte(h, '%'); i >= 0 {
			h = h[:i] // a zone: the same address for this purpose
		}
		a, err := netip.ParseAddr(h)
		return "", a.Unmap(), err == nil
	}
	// WHATWG drops one trailing dot; more, and browsers look the name up
	// (and fail), while resolvers may drop them: the same host either way.
	name = strings.TrimRight(h, ".")
	if !endsInNumber(name) {
		return name, netip.Addr{}, true
	}
	addr, ok = parseIPv4(name)
	return "", addr, ok
}

// endsInNumber reports whether a browser reads name as an IPv4 address:
// its last label is decimal digits or "0x" and hex digits (WHATWG's "ends
// in a number").
func endsInNumber(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	digits, hex := last, false
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		digits, hex = last[2:], true
	}
	for i := 0; i < len(digits); i++ {
		if c := digits[i]; !('0' <= c && c <= '9' || hex && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')) {
			return false
		}
	}
	return true
}

// parseIPv4 reads name as the WHATWG IPv4 parser does (inet_aton's forms):
// one to four parts, each decimal, octal after a leading "0" or hex after
// "0x"; the last fills the bytes the others leave. ok is false where a
// browser fails.
func parseIPv4(name string) (netip.Addr, bool) {
	var parts [4]uint64
	n := 0
	for rest := name; ; {
		part, tail, more := strings.Cut(rest, ".")
		if n == len(parts) {
			return netip.Addr{}, false
		}
		v, ok := ipv4Number(part)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if !more {
			break
		}
		rest = tail
	}
	var v uint64
	for i := 0; i < n-1; i++ {
		if parts[i] > 255 {
			return netip.Addr{}, false
		}
		v = v<<8 | parts[i]
	}
	width := 8 * uint(5-n) // bits the last part fills
	if parts[n-1] >= 1<<width {
		return netip.Addr{}, false
	}
	v = v<<width | parts[n-1]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// ipv4Number reads one part of an IPv4 address as WHATWG's "IPv4 number
// parser" does; values past 32 bits fail.
func ipv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		s, base = s[2:], 16
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		var d uint64
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		if v = v*base + d; v > 0xFFFFFFFF {
			return 0, false
		}
	}
	return v, true
}

// urlPort is u's port, the scheme's default when it names none.
func urlPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}
