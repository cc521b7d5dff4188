// Package clientip owns one question: which address is the caller of an
// HTTP request. It takes the connection's peer address (RemoteAddr) and
// believes X-Forwarded-For only when that peer is a trusted proxy (the
// server config's trusted_proxies, SPEC section 1 and 5).
//
// X-Forwarded-For is walked from right to left: each hop a trusted proxy
// appended is skipped, and the first address that is not a trusted proxy
// is the client. Anything left of it was written by the client and is never
// believed. An unparsable hop stops the walk at the trusted proxy that
// handed it over (the client could have written it). When every hop is a
// trusted proxy the leftmost is taken. IPv4-mapped IPv6 addresses are
// unmapped and zones dropped, so that "::ffff:10.0.0.1" and "10.0.0.1" are
// one address everywhere.
//
// It never trusts a header from a peer that is not listed, and it does not
// read the RFC 7239 Forwarded header (proxies that only write that are not
// supported; list them only once they write X-Forwarded-For).
package clientip

import (
	"net/http"
	"net/netip"
	"strings"
)

// maxHops bounds the X-Forwarded-For entries examined.
const maxHops = 64

// Resolver finds the client address of requests. The zero value and a nil
// *Resolver trust no proxy. It is immutable and safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that believes X-Forwarded-For from peers within
// trustedProxies. IPv4-mapped prefixes are taken as IPv4; invalid prefixes,
// and mapped ones shorter than /96, are ignored.
func New(trustedProxies []netip.Prefix) *Resolver {
	r := &Resolver{}
	for _, p := range trustedProxies {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				// No IPv4 prefix: masked, it is a native IPv6 one
				// (::ffff:0.0.0.0/1 is ::/1, every global address)
				// that the writer never meant to trust.
				continue
			}
			a, bits = a.Unmap(), bits-96
		}
		np, err := a.WithZone("").Prefix(bits)
		if err == nil {
			r.trusted = append(r.trusted, np)
		}
	}
	return r
}

// Trusted reports whether addr is a trusted proxy.
func (r *Resolver) Trusted(addr netip.Addr) bool {
	if r == nil || !addr.IsValid() {
		return false
	}
	addr = norm(addr)
	for _, p := range r.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Addr returns the client address of req, or the zero netip.Addr when
// RemoteAddr is not an address (callers then refuse whatever needs one).
func (r *Resolver) Addr(req *http.Request) netip.Addr {
	remote, ok := parseHop(req.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !r.Trusted(remote) {
		return remote
	}
	vals := req.Header.Values("X-Forwarded-For")
	client := remote
	hops := 0
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			var hop string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				hop, v = v[j+1:], v[:j]
			} else {
				hop, v = v, ""
			}
			hop = strings.TrimSpace(hop)
			if hop == "" {
				continue // "a, , b": empty list elements are allowed (RFC 9110 #rule)
			}
			if hops++; hops > maxHops {
				return client
			}
			a, ok := parseHop(hop)
			if !ok {
				return client
			}
			if !r.Trusted(a) {
				return a
			}
			client = a
		}
	}
	return client
}

// RateKey is what a per-address limit counts addr under: an IPv4 address
// itself, an IPv6 address its /64. One IPv6 host is commonly handed a whole
// /64 (SLAAC, RFC 7421), so keyed by the full address it would find a fresh
// bucket at each of 2^64 addresses. An IPv6 address made of an IPv4 one
// counts as that IPv4 address: by /64, the holder of one IPv4 address
// would have 65,536 buckets in its 6to4 /48, and every IPv4 client of a
// NAT64 translator would share one.
func RateKey(addr netip.Addr) string {
	addr = norm(addr)
	if v4, ok := embeddedIPv4(addr); ok {
		return v4.String()
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// embeddedIPv4 is the IPv4 address a 6to4 (2002:V4::/48, RFC 3056) or
// well-known-prefix NAT64 (64:ff9b::V4, RFC 6052) address is made of.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case b[0] == 0x20 && b[1] == 0x02:
		return netip.AddrFrom4([4]byte(b[2:6])), true
	case [12]byte(b[:12]) == [12]byte{0x00, 0x64, 0xff, 0x9b}:
		return netip.AddrFrom4([4]byte(b[12:])), true
	}
	return netip.Addr{}, false
}

// parseHop parses "addr", "addr:port", "[v6]:port" or "[v6]".
func parseHop(s string) (netip.Addr, bool) {
	// No string is both an address and an address with a port: try first
	// the form s looks like, since a failed parse allocates its error and
	// every request's RemoteAddr is "addr:port".
	withPort := strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1
	if withPort {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return norm(ap.Addr()), true
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return norm(a), true
	}
	if !withPort {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return norm(ap.Addr()), true
		}
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return norm(a), true
		}
	}
	return netip.Addr{}, false
}

func norm(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
