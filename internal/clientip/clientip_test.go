package clientip

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestAddr(t *testing.T) {
	r := New([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("::ffff:192.168.1.0/120"), // mapped form, taken as 192.168.1.0/24
		netip.MustParsePrefix("fd00::/8"),
	})
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"direct", "203.0.113.5:1234", nil, "203.0.113.5"},
		{"direct ignores xff", "203.0.113.5:1234", []string{"1.2.3.4"}, "203.0.113.5"},
		{"mapped remote unmapped", "[::ffff:203.0.113.5]:1234", nil, "203.0.113.5"},
		{"v6 remote", "[2001:db8::1]:443", nil, "2001:db8::1"},
		{"v6 zone dropped", "[fe80::1%eth0]:443", nil, "fe80::1"},
		{"remote without port", "203.0.113.5", nil, "203.0.113.5"},
		{"bad remote", "garbage", nil, ""},
		{"empty remote", "", nil, ""},
		{"trusted proxy, no xff", "10.1.1.1:1", nil, "10.1.1.1"},
		{"trusted proxy, client", "10.1.1.1:1", []string{"198.51.100.7"}, "198.51.100.7"},
		{"spoofed left part ignored", "10.1.1.1:1", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"chain of trusted", "10.1.1.1:1", []string{"6.6.6.6, 198.51.100.7, 10.2.2.2, 10.3.3.3"}, "198.51.100.7"},
		{"several headers", "10.1.1.1:1", []string{"6.6.6.6", "198.51.100.7", "10.2.2.2"}, "198.51.100.7"},
		{"mapped trusted proxy", "[::ffff:192.168.1.9]:1", []string{"198.51.100.7"}, "198.51.100.7"},
		{"mapped client unmapped", "10.1.1.1:1", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"hop with port", "10.1.1.1:1", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"v6 hop with port", "10.1.1.1:1", []string{"[2001:db8::7]:5555"}, "2001:db8::7"},
		{"v6 hop bracketed", "10.1.1.1:1", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"garbage hop stops at proxy", "10.1.1.1:1", []string{"6.6.6.6, nonsense"}, "10.1.1.1"},
		{"garbage left of client", "10.1.1.1:1", []string{"nonsense, 198.51.100.7"}, "198.51.100.7"},
		{"garbage after trusted hop", "10.1.1.1:1", []string{"6.6.6.6, junk, 10.2.2.2"}, "10.2.2.2"},
		{"all trusted: leftmost", "10.1.1.1:1", []string{"10.9.9.9, 10.2.2.2"}, "10.9.9.9"},
		{"empty elements", "10.1.1.1:1", []string{" , 198.51.100.7 ,, "}, "198.51.100.7"},
		{"empty header", "10.1.1.1:1", []string{""}, "10.1.1.1"},
		{"v6 trusted", "[fd00::1]:1", []string{"2001:db8::9"}, "2001:db8::9"},
		{"untrusted v6 near trusted", "[fe00::1]:1", []string{"2001:db8::9"}, "fe00::1"},
		{"too many hops", "10.1.1.1:1", []string{strings.Repeat("10.0.0.1,", 100) + "10.0.0.2"}, "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
			for _, v := range tt.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			got := r.Addr(req)
			if tt.want == "" {
				if got.IsValid() {
					t.Fatalf("Addr = %v, want invalid", got)
				}
				return
			}
			if got != netip.MustParseAddr(tt.want) {
				t.Fatalf("Addr = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNilAndEmptyTrustNothing(t *testing.T) {
	req := &http.Request{RemoteAddr: "10.1.1.1:1", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}
	var nilR *Resolver
	for _, r := range []*Resolver{nilR, New(nil), {}} {
		if got := r.Addr(req); got != netip.MustParseAddr("10.1.1.1") {
			t.Fatalf("Addr = %v", got)
		}
	}
}

// A trusted_proxies prefix written IPv4-mapped is its IPv4 prefix; one
// shorter than /96 has no IPv4 meaning, and masked it would be a native
// IPv6 prefix (::ffff:10.0.0.0/8 is ::/8, holding ::1): it trusts nothing.
func TestMappedTrustedPrefixes(t *testing.T) {
	tests := []struct {
		prefix, peer string
		trusted      bool
	}{
		{"::ffff:10.0.0.0/104", "10.1.2.3", true},
		{"::ffff:10.0.0.0/104", "11.1.2.3", false},
		{"::ffff:10.0.0.5/128", "::ffff:10.0.0.5", true},
		{"::ffff:10.0.0.0/8", "::1", false},
		{"::ffff:10.0.0.0/8", "::a00:1", false},
		{"::ffff:10.0.0.0/8", "10.1.2.3", false},
		{"::ffff:0.0.0.0/1", "2001:db8::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+" "+tt.peer, func(t *testing.T) {
			r := New([]netip.Prefix{netip.MustParsePrefix(tt.prefix)})
			if got := r.Trusted(netip.MustParseAddr(tt.peer)); got != tt.trusted {
				t.Fatalf("Trusted(%s) = %v, want %v", tt.peer, got, tt.trusted)
			}
		})
	}
}

func FuzzAddr(f *testing.F) {
	f.Add("10.1.1.1:1", "1.2.3.4, 10.2.2.2")
	f.Add("[::ffff:10.1.1.1]:1", "[2001:db8::1]:80")
	f.Add("1.2.3.4:5", "x")
	r := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	f.Fuzz(func(t *testing.T, remote, xff string) {
		req := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		a := r.Addr(req)
		if !a.IsValid() {
			return
		}
		if a.Is4In6() || a.Zone() != "" {
			t.Fatalf("not normalised: %v", a)
		}
		// The answer is the peer itself, or the peer is trusted and the
		// answer appears in the header.
		peer, ok := parseHop(remote)
		if !ok {
			t.Fatalf("valid answer %v from unparsable remote %q", a, remote)
		}
		if !r.Trusted(peer) && a != peer {
			t.Fatalf("believed xff from untrusted peer %v", peer)
		}
	})
}

// Per-address limits count an IPv6 client by its /64, an IPv4 one by its
// address; the same address in any of its forms is one key, and an IPv6
// address made of an IPv4 one counts as that.
func TestRateKey(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		// A /64 of 6to4 (2002::/16) is one of the 65,536 that one IPv4
		// address owns; one of the NAT64 prefix (64:ff9b::/96) holds
		// every IPv4 address: both count as the IPv4 address inside.
		{"2002:c000:207::1", "192.0.2.7"},
		{"2002:c000:207:ffff::1", "192.0.2.7"},
		{"2002:c000:208::1", "192.0.2.8"},
		{"64:ff9b::192.0.2.7", "192.0.2.7"},
		{"64:ff9b::192.0.2.8", "192.0.2.8"},
		{"64:ff9b:0:0:1::1", "64:ff9b::/64"},
		{"2003:c000:207::1", "2003:c000:207::/64"},
	}
	for _, tt := range tests {
		if got := RateKey(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("RateKey(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if got := RateKey(netip.Addr{}); got == RateKey(netip.MustParseAddr("192.0.2.7")) {
		t.Errorf("no address shares a key with an address: %q", got)
	}
}

// parseHop tries the form a hop looks like first; its answer is the one
// of trying the address before the address with a port, and a request's
// RemoteAddr ("addr:port") is parsed without allocating.
func FuzzParseHop(f *testing.F) {
	for _, s := range []string{"127.0.0.1:40000", "[::1]:443", "::1", "1.2.3.4", "[2001:db8::1]", "[::ffff:1.2.3.4]:5",
		"fe80::1%eth0", "[fe80::1%eth0]:80", "1:2", "::ffff:1.2.3.4", "x", ""} {
		f.Add(s)
	}
	addrFirst := func(s string) (netip.Addr, bool) {
		if a, err := netip.ParseAddr(s); err == nil {
			return norm(a), true
		}
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return norm(ap.Addr()), true
		}
		if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
				return norm(a), true
			}
		}
		return netip.Addr{}, false
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := parseHop(s)
		if b, okb := addrFirst(s); a != b || ok != okb {
			t.Fatalf("parseHop(%q) = %v, %v; address first: %v, %v", s, a, ok, b, okb)
		}
	})
}

func TestParseRemoteAddrAllocatesNothing(t *testing.T) {
	for _, s := range []string{"127.0.0.1:40000", "[2001:db8::1]:443"} {
		if n := testing.AllocsPerRun(100, func() { _, _ = parseHop(s) }); n != 0 {
			t.Errorf("parseHop(%q): %.0f allocations, want 0", s, n)
		}
	}
}
