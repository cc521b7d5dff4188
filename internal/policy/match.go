package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

const (
	maxPatternLen  = 2048
	maxPatternSegs = 128
)

// Rule is one allow rule: any of Methods on any of Paths. Build one with
// CompileRule (Parse does); a Rule written as a literal matches nothing.
type Rule struct {
	Methods []string // uppercase; "*" means the ordinary methods (starMethod); GET allows HEAD too
	Paths   []string // patterns as written

	anyMethod bool
	pats      []pathPattern
}

type segKind uint8

const (
	segLit segKind = iota // compared exactly
	segOne                // "*": one non-empty segment
	segAny                // "**": any number of segments, including none
)

type segment struct {
	kind segKind
	lit  string
}

// pathPattern is a compiled path pattern: a literal prefix of whole
// segments, then the rest segment by segment.
type pathPattern struct {
	prefix string    // "/a/b" for "/a/b/*/c", "" when the pattern starts with a wildcard or is "/"
	segs   []segment // what follows the prefix
	exact  bool      // no wildcard: the path must equal prefix (root: "")
}

// CompileRule checks and compiles one allow rule.
func CompileRule(methods, paths []string) (Rule, error) {
	r := Rule{Methods: slices.Clone(methods), Paths: slices.Clone(paths)}
	if len(methods) == 0 {
		return Rule{}, errors.New("no methods")
	}
	if len(paths) == 0 {
		return Rule{}, errors.New("no paths")
	}
	star := slices.Contains(methods, "*")
	for _, m := range methods {
		if err := checkMethod(m, star); err != nil {
			return Rule{}, err
		}
		if m == "*" {
			r.anyMethod = true
		}
	}
	for _, p := range paths {
		pp, err := compilePath(p)
		if err != nil {
			return Rule{}, err
		}
		r.pats = append(r.pats, pp)
	}
	return r, nil
}

func compilePath(p string) (pathPattern, error) {
	switch {
	case p == "":
		return pathPattern{}, errors.New("empty path")
	case p[0] != '/':
		return pathPattern{}, fmt.Errorf("path %q must start with /", p)
	case len(p) > maxPatternLen:
		return pathPattern{}, fmt.Errorf("path is longer than %d characters", maxPatternLen)
	case p == "/":
		return pathPattern{exact: true}, nil
	case strings.HasSuffix(p, "/"):
		return pathPattern{}, fmt.Errorf("path %q ends with /: write %q (a request's trailing / is ignored) or %q", p, strings.TrimRight(p, "/"), p+"**")
	}
	parts := strings.Split(p[1:], "/")
	if len(parts) > maxPatternSegs {
		return pathPattern{}, fmt.Errorf("path has more than %d segments", maxPatternSegs)
	}
	var segs []segment
	for _, s := range parts {
		switch {
		case s == "":
			return pathPattern{}, fmt.Errorf("path %q has an empty segment (//)", p)
		case s == "." || s == "..":
			return pathPattern{}, fmt.Errorf("path %q has a %q segment", p, s)
		case s == "**":
			if len(segs) > 0 && segs[len(segs)-1].kind == segAny {
				continue // "**/**" is "**"
			}
			segs = append(segs, segment{kind: segAny})
		case s == "*":
			segs = append(segs, segment{kind: segOne})
		case strings.Contains(s, "*"):
			return pathPattern{}, fmt.Errorf("path %q: * and ** stand only as a whole segment", p)
		case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return pathPattern{}, fmt.Errorf("path %q has control characters", p)
		default:
			segs = append(segs, segment{kind: segLit, lit: s})
		}
	}
	var pp pathPattern
	k := 0
	for k < len(segs) && segs[k].kind == segLit {
		pp.prefix += "/" + segs[k].lit
		k++
	}
	pp.segs = segs[k:]
	pp.exact = len(pp.segs) == 0
	return pp, nil
}

// Allow says whether the grant lets method on path through, and which of its
// rules (index into Rules) does. path must be decoded and cleaned (start
// with "/"); one trailing "/" is ignored and a path with ".", ".." or empty
// segments is never allowed. Methods are compared exactly, but GET allows
// HEAD too (ImpliesHead). It does not allocate.
func (g *Grant) Allow(method, path string) (rule int, ok bool) {
	s, ok := normPath(path)
	if !ok {
		return -1, false
	}
	for i := range g.Rules {
		if g.Rules[i].match(method, s) {
			return i, true
		}
	}
	return -1, false
}

// Match says whether this rule allows method on path (same path rules as
// Grant.Allow).
func (r *Rule) Match(method, path string) bool {
	s, ok := normPath(path)
	return ok && r.match(method, s)
}

// ImpliesHead says whether the rule allows HEAD only because it lists GET
// (RFC 9110 9.3.2: HEAD is GET without the content, so who may GET a path
// may learn its headers; registry clients HEAD every manifest and blob
// before they pull it). Plans and reports say so.
func (r *Rule) ImpliesHead() bool { return impliesHead(r.Methods) }

func impliesHead(methods []string) bool {
	return slices.Contains(methods, "GET") && !slices.Contains(methods, "HEAD") && !slices.Contains(methods, "*")
}

// starMethod says whether "*" allows method: RFC 9110's methods but
// CONNECT and TRACE, PATCH, and WebDAV's (RFC 4918), whose second resource
// the gateway checks. Anything else only by name: TRACE (and IIS's TRACK)
// echoes the request back, the injected credential with it, CONNECT asks
// for a tunnel, and a method nobody listed is one nobody thought about.
func starMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
		"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK":
		return true
	}
	return false
}

func (r *Rule) match(method, s string) bool {
	if !(r.anyMethod && starMethod(method)) && !slices.Contains(r.Methods, method) && !(method == "HEAD" && r.ImpliesHead()) {
		return false
	}
	for i := range r.pats {
		if r.pats[i].match(s) {
			return true
		}
	}
	return false
}

// normPath checks a request path and returns it without a trailing "/", the
// root as "". It refuses ".", ".." and empty segments.
func normPath(p string) (string, bool) {
	if p == "" || p[0] != '/' {
		return "", false
	}
	if p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	// every segment starts after a '/'
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		switch p[i+1 : j] {
		case "", ".", "..":
			return "", false
		}
		i = j
	}
	return p, true
}

// match: s is a normalised path ("" for the root, else "/a/b").
func (pp *pathPattern) match(s string) bool {
	if pp.exact {
		return s == pp.prefix
	}
	if pp.prefix != "" {
		if len(s) < len(pp.prefix) || s[:len(pp.prefix)] != pp.prefix {
			return false
		}
		s = s[len(pp.prefix):]
		if s != "" && s[0] != '/' {
			return false // the prefix ended inside a segment
		}
	}
	return matchSegs(pp.segs, s)
}

// matchSegs matches segments against s ("/x/y…", "" for none) with the
// classic single-backtrack wildcard algorithm: only the last "**" seen ever
// takes more segments, which is enough because "**" matches any sequence.
func matchSegs(segs []segment, s string) bool {
	pi, off := 0, 0
	starPi, starOff := -1, 0
	n := len(s)
	for {
		if pi < len(segs) {
			sg := &segs[pi]
			if sg.kind == segAny {
				starPi, starOff = pi, off
				pi++
				continue
			}
			if off < n {
				end := nextSlash(s, off+1)
				seg := s[off+1 : end]
				if sg.kind == segOne && seg != "" || sg.kind == segLit && seg == sg.lit {
					pi++
					off = end
					continue
				}
			}
		} else if off == n {
			return true
		}
		if starPi < 0 || starOff >= n {
			return false
		}
		starOff = nextSlash(s, starOff+1) // "**" takes one more segment
		off, pi = starOff, starPi+1
	}
}

func nextSlash(s string, from int) int {
	if i := strings.IndexByte(s[from:], '/'); i >= 0 {
		return from + i
	}
	return len(s)
}

// Match says whether an identity matches this entry: issuer is the policy's
// name of the issuer that verified the ID token, claims its claims as
// strings. Every claim line must be present with one of its values.
func (w *Who) Match(issuer string, claims map[string]string) bool {
	if issuer != w.Issuer {
		return false
	}
	for k, vals := range w.Claims {
		v, ok := claims[k]
		if !ok || !slices.Contains(vals, v) {
			return false
		}
	}
	return true
}

// SourceAllowed says whether addr is within source_cidrs; true when there
// are none. IPv4-mapped IPv6 addresses count as IPv4; zones are ignored.
func (w *Who) SourceAllowed(addr netip.Addr) bool {
	if len(w.SourceCIDRs) == 0 {
		return true
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range w.SourceCIDRs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// IssuersByURL returns the issuers whose url is iss (several when they
// differ by audience), in name order.
func (p *Policy) IssuersByURL(iss string) []*Issuer {
	var out []*Issuer
	for _, name := range sortedKeys(p.Issuers) {
		if p.Issuers[name].URL == iss {
			out = append(out, p.Issuers[name])
		}
	}
	return out
}
