package dpop

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// Origins says where this server is reached, so that a proof's htu is
// compared with a URL the server knows to be its own: never with one the
// client made up. A proof made for https://evil.example/… and relayed with
// "Host: evil.example" must not match.
//
// The zero value knows only the connection's own address (and "localhost"
// when that address is a loopback one). It is safe for concurrent use once
// built.
type Origins struct {
	// Public, when set, is the one scheme://host[:port] clients use
	// (public_url, e.g. behind a proxy): every proof must name it.
	Public string
	// Names are the server's other names: its TLS certificate's DNS names
	// and IP addresses. A wildcard name is ignored (another service under
	// the same wildcard is not us).
	Names []string
}

// Of returns the scheme://host[:port] a proof for r must name in its htu.
// Without Public it is the request's Host when that Host names this server
// (the address of the connection's local end, one of Names, or localhost on
// a loopback connection) on the port the connection reached, and otherwise
// the connection's local address: a Host the server does not own then
// matches no proof. It returns "" (no proof matches) when r carries no
// local address.
func (o *Origins) Of(r *http.Request) string {
	if o.Public != "" {
		return strings.TrimRight(o.Public, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return ""
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return ""
	}
	local = netip.AddrPortFrom(local.Addr().Unmap().WithZone(""), local.Port())
	if h, ok := o.owns(r.Host, scheme, local); ok {
		return scheme + "://" + h
	}
	return scheme + "://" + local.String()
}

// owns reports whether host (a Host header) names this server on the local
// port, and if so returns it rebuilt as host:port (the Host itself is never
// echoed).
func (o *Origins) owns(host, scheme string, local netip.AddrPort) (string, bool) {
	h, ok := o.ownsName(host, scheme, local)
	if !ok {
		return "", false
	}
	return net.JoinHostPort(h, strconv.Itoa(int(local.Port()))), true
}

// ownsName returns the canonical name or address host names when it is
// this server's on the local port.
func (o *Origins) ownsName(host, scheme string, local netip.AddrPort) (string, bool) {
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		// No port: the scheme's default.
		name, port = host, "80"
		if scheme == "https" {
			port = "443"
		}
		name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	}
	if port != strconv.Itoa(int(local.Port())) || name == "" {
		return "", false
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		ip = ip.Unmap()
		if ip.Zone() != "" {
			return "", false
		}
		if ip == local.Addr() {
			return ip.String(), true
		}
		for _, n := range o.Names {
			if a, err := netip.ParseAddr(n); err == nil && a.Unmap() == ip {
				return ip.String(), true
			}
		}
		return "", false
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "localhost" && local.Addr().IsLoopback() {
		return name, true
	}
	for _, n := range o.Names {
		if !strings.Contains(n, "*") && strings.EqualFold(strings.TrimSuffix(n, "."), name) {
			return name, true
		}
	}
	return "", false
}
