package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// An upstream's answer may name URLs that a client goes to on its own: a
// redirect's or a 201's Location, Content-Location, Refresh (browsers
// follow it like a redirect), and the targets of Link (an API's next
// page). Each is mapped onto the gateway's URL of the
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
//     host) straight to the upstream, and learn its address;
//   - one on the gateway's own host outside the route (mayfly's API and
//     console, another upstream's route: the client would take its mayfly
//     token there) is dropped too, one on the route is passed;
//   - a URL of any other origin, or of another scheme (mailto:), is
//     passed unchanged: the upstream chose to send the client there (an
//     archive download, a signed storage URL), a mayfly token is useless
//     there, and clients drop Authorization on a redirect to another host.
//
// URLs are read as browsers read them (browserURL), so that none a browser
// would take to the upstream, or out of the route, passes.

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
				out = append(out, m)
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
	if !strings.EqualFold(hostName(abs.Hostname()), hostName(base.Hostname())) {
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
// another upstream's route, where the client's mayfly token works.
func (f *forwarding) outOfRoute(abs *url.URL) bool {
	pub, err := url.Parse(f.g.cfg.PublicURL(f.r))
	if err != nil || !strings.EqualFold(hostName(abs.Hostname()), hostName(pub.Hostname())) {
		return err != nil
	}
	if abs.Scheme != pub.Scheme || urlPort(abs) != urlPort(pub) {
		return true
	}
	route := f.g.cfg.Prefix + f.up.Name
	p := abs.EscapedPath()
	return p != route && !strings.HasPrefix(p, route+"/")
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
		switch {
		case !keep:
			changed = true
			continue
		case m != target:
			changed = true
			l = "<" + m + ">" + l[end+1:]
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

// splitLinks splits a Link header value at the commas between links: not
// those inside a <target> or a quoted parameter.
func splitLinks(v string) []string {
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
		case c == '<':
			inTarget = true
		case c == '"':
			inQuote = true
		case c == ',':
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

// hostName is a host name as origins compare it: without a trailing dot.
func hostName(h string) string { return strings.TrimSuffix(h, ".") }

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
