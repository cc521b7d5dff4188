package gateway

import (
	"net/http"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/sso"
)

// The gateway shares its origin with the console and the cookie-signed-in
// API (one listener), so a browser sends the console's cookies with every
// /gw/ request. They are mayfly's own credentials: no upstream may read
// them.

// ownCookie reports whether a cookie name is one of mayfly's (session or
// login), with or without a __Host- or __Secure- prefix, in any case:
// matching too much only keeps a cookie from an upstream.
func ownCookie(name string) bool {
	name = strings.Trim(name, " \t")
	for _, p := range []string{"__Host-", "__Secure-"} {
		if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
			name = name[len(p):]
			break
		}
	}
	// The login cookies' names go on past their prefix
	// (sso.LoginCookieFor).
	return strings.EqualFold(name, sso.CookiePlain) ||
		len(name) >= len(sso.LoginCookiePlain) && strings.EqualFold(name[:len(sso.LoginCookiePlain)], sso.LoginCookiePlain)
}

// dropOwnCookies removes mayfly's cookies from a request's Cookie headers
// and keeps the others, in order (an upstream may use its own).
func dropOwnCookies(h http.Header) {
	var kept []string
	dropped := false
	for _, v := range h["Cookie"] {
		for part := range strings.SplitSeq(v, ";") {
			name, _, _ := strings.Cut(part, "=")
			if part = strings.Trim(part, " \t"); part == "" {
				continue
			}
			if ownCookie(name) {
				dropped = true
				continue
			}
			kept = append(kept, part)
		}
	}
	switch {
	case !dropped:
	case len(kept) == 0:
		delete(h, "Cookie")
	default:
		h["Cookie"] = []string{strings.Join(kept, "; ")}
	}
}

// dropOwnSetCookies removes an upstream's Set-Cookie headers that would
// set one of mayfly's cookies on mayfly's origin: one could replace the
// console's session with a session the upstream chose (fixation), or end
// the admin's. Also in a nameless cookie ("=mayfly_session=v"), which a
// browser sends back as its bare value, read as mayfly_session=v. The
// cookies it keeps are made host-only (hostOnly).
func dropOwnSetCookies(h http.Header) {
	vs := h["Set-Cookie"]
	if len(vs) == 0 {
		return
	}
	var kept []string
	for _, v := range vs {
		pair, _, _ := strings.Cut(v, ";")
		pair = strings.Trim(pair, " \t")
		if rest, ok := strings.CutPrefix(pair, "="); ok {
			pair = rest
		}
		name, _, _ := strings.Cut(pair, "=")
		if !ownCookie(name) {
			kept = append(kept, hostOnly(v))
		}
	}
	if len(kept) == 0 {
		delete(h, "Set-Cookie")
		return
	}
	h["Set-Cookie"] = kept
}

// hostOnly removes every Domain attribute of a Set-Cookie value. With one
// naming a parent of mayfly's host ("example.com" for mayfly.example.com),
// a browser would keep the upstream's cookie for every site under that
// domain: the upstream would set cookies on other origins (a session fixed
// on a sibling application) through mayfly's. Attribute names are matched
// as browsers match them (RFC 6265 section 5.2: any case, spaces and tabs
// trimmed).
func hostOnly(v string) string {
	_, attrs, ok := strings.Cut(v, ";")
	if !ok || !containsFold(attrs, "domain") {
		return v
	}
	parts := strings.Split(v, ";")
	out := parts[:1]
	for _, a := range parts[1:] {
		name, _, _ := strings.Cut(a, "=")
		if !strings.EqualFold(strings.Trim(name, " \t"), "domain") {
			out = append(out, a)
		}
	}
	return strings.Join(out, ";")
}

// containsFold reports whether s holds the lower-case ASCII sub in any
// case, without allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// scopeCookies maps the Path attributes of an upstream's Set-Cookie
// headers into its gateway route ("/gw/api"): every upstream answers on
// mayfly's one origin, so a cookie for the upstream's "/" (a session)
// would be sent by a browser or a client's cookie jar with the requests to
// every other upstream, one upstream's credential handed to another. base
// is the path of the upstream's url (without a trailing "/"): its own
// paths start with it. A Path that is not a path (no leading "/"), or none,
// makes a browser use the path the cookie was set on up to its last "/":
// inside the route already, but for the route itself (atRoot: "/gw/api",
// the upstream's root) "/gw", every upstream's; there the route is set.
func scopeCookies(h http.Header, route, base string, atRoot bool) {
	vs := h["Set-Cookie"]
	for i, v := range vs {
		_, attrs, ok := strings.Cut(v, ";")
		if !ok || !containsFold(attrs, "path") {
			if atRoot {
				vs[i] = v + "; Path=" + route
			}
			continue
		}
		parts := strings.Split(v, ";")
		// The last Path attribute is the cookie's (RFC 6265 section 5.3);
		// one that is not a path ("Path=x", "Path=", a bare "Path") means
		// the default path, also after one that was a path.
		changed, lastIsPath := false, false
		for j := 1; j < len(parts); j++ {
			name, val, _ := strings.Cut(parts[j], "=")
			name = strings.Trim(name, " \t")
			if !strings.EqualFold(name, "path") {
				continue
			}
			p := strings.Trim(val, " \t")
			lastIsPath = strings.HasPrefix(p, "/")
			if !lastIsPath {
				continue
			}
			switch {
			case base == "":
			case p == base || strings.HasPrefix(p, base+"/"):
				p = p[len(base):]
			default:
				p = "/" // the upstream's whole host: the whole route
			}
			parts[j] = " " + name + "=" + route + p
			changed = true
		}
		if changed {
			v = strings.Join(parts, ";")
		}
		if atRoot && !lastIsPath {
			v += "; Path=" + route
		}
		vs[i] = v
	}
}
