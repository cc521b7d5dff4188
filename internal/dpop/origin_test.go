package dpop

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
)

func TestOriginsOf(t *testing.T) {
	named := &Origins{Names: []string{"mayfly.example", "*.example", "192.0.2.7", "2001:db8::1", "Upper.Example."}}
	tests := []struct {
		name  string
		o     *Origins
		local string // "" = no local address in the context
		host  string
		tls   bool
		want  string
	}{
		{"own address", &Origins{}, "127.0.0.1:8443", "127.0.0.1:8443", true, "https://127.0.0.1:8443"},
		{"plain http", &Origins{}, "127.0.0.1:8080", "127.0.0.1:8080", false, "http://127.0.0.1:8080"},
		{"forged host", &Origins{}, "127.0.0.1:8443", "evil.example", true, "https://127.0.0.1:8443"},
		{"forged host with our port", &Origins{}, "127.0.0.1:8443", "evil.example:8443", true, "https://127.0.0.1:8443"},
		{"our address, other port", &Origins{}, "127.0.0.1:8443", "127.0.0.1:9999", true, "https://127.0.0.1:8443"},
		{"localhost on loopback", &Origins{}, "127.0.0.1:8443", "LocalHost:8443", true, "https://localhost:8443"},
		{"localhost off loopback", &Origins{}, "10.1.2.3:8443", "localhost:8443", true, "https://10.1.2.3:8443"},
		{"ipv6 loopback", &Origins{}, "[::1]:8443", "[::1]:8443", true, "https://[::1]:8443"},
		{"v4-mapped local", &Origins{}, "[::ffff:10.0.0.5]:8443", "10.0.0.5:8443", true, "https://10.0.0.5:8443"},
		{"v4-mapped host", &Origins{}, "10.0.0.5:8443", "[::ffff:10.0.0.5]:8443", true, "https://10.0.0.5:8443"},
		{"bracketed v4 host", &Origins{}, "10.0.0.5:8443", "[10.0.0.5]:8443", true, "https://10.0.0.5:8443"},
		{"zone in host", &Origins{}, "[fe80::1]:8443", "[fe80::1%25eth0]:8443", true, "https://[fe80::1]:8443"},
		{"certificate name", named, "10.0.0.5:8443", "mayfly.example:8443", true, "https://mayfly.example:8443"},
		{"certificate name, default port", named, "10.0.0.5:443", "MAYFLY.example", true, "https://mayfly.example:443"},
		{"certificate name, no port but not 443", named, "10.0.0.5:8443", "mayfly.example", true, "https://10.0.0.5:8443"},
		{"certificate name with trailing dot", named, "10.0.0.5:8443", "upper.example:8443", true, "https://upper.example:8443"},
		{"certificate ip", named, "10.0.0.5:8443", "192.0.2.7:8443", true, "https://192.0.2.7:8443"},
		{"certificate ipv6", named, "10.0.0.5:8443", "[2001:db8::1]:8443", true, "https://[2001:db8::1]:8443"},
		{"wildcard name is not ours", named, "10.0.0.5:8443", "evil.example:8443", true, "https://10.0.0.5:8443"},
		{"literal wildcard host", named, "10.0.0.5:8443", "*.example:8443", true, "https://10.0.0.5:8443"},
		{"empty host", named, "10.0.0.5:8443", "", true, "https://10.0.0.5:8443"},
		{"public url wins", &Origins{Public: "https://mayfly.example.com/"}, "127.0.0.1:8443", "127.0.0.1:8443", false, "https://mayfly.example.com"},
		{"no local address", &Origins{}, "", "127.0.0.1:8443", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/x", nil)
			r.Host = tt.host
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if tt.local != "" {
				a, err := net.ResolveTCPAddr("tcp", tt.local)
				if err != nil {
					t.Fatal(err)
				}
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, a))
			}
			if got := tt.o.Of(r); got != tt.want {
				t.Fatalf("Of = %q, want %q", got, tt.want)
			}
		})
	}
}

// Whatever Host a client sends, the origin names this server: its own
// address or localhost, on the port the connection reached.
func FuzzOriginsOf(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8443", "evil.example", "localhost:8443", "[::ffff:127.0.0.1]:8443", "[::1]:8443",
		"127.0.0.1", "LOCALHOST:8443", "localhost.:8443", "127.0.0.1:08443", "[127.0.0.1]:8443", "127.0.0.1:8443@evil", ""} {
		f.Add(s)
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}
	f.Fuzz(func(t *testing.T, host string) {
		r, _ := http.NewRequest("GET", "/x", nil)
		r.Host = host
		r.TLS = &tls.ConnectionState{}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		got := (&Origins{}).Of(r)
		u, err := url.Parse(got + "/")
		if err != nil || u.Scheme != "https" || u.Port() != "8443" || u.User != nil || u.Path != "/" {
			t.Fatalf("Of(Host %q) = %q", host, got)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
			if ip.Unmap() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("Of(Host %q) = %q: another address", host, got)
			}
		} else if u.Hostname() != "localhost" {
			t.Fatalf("Of(Host %q) = %q: another name", host, got)
		}
	})
}
