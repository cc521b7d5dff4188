package server

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// One address may hold only so many connections open at once (idle TLS
// connections cost the node descriptors and memory): past the cap a new
// one is closed at once, a closed one gives its place back, and a trusted
// proxy, through which many clients come, is not counted. Real
// connections, plain and TLS, through the server's listener.
func TestConnectionsPerAddressAreCapped(t *testing.T) {
	const max = 3
	for _, withTLS := range []bool{false, true} {
		for _, tc := range []struct {
			name   string
			exempt []netip.Prefix
		}{
			{"capped", nil},
			{"trusted proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		} {
			name := tc.name + map[bool]string{false: "/plain", true: "/tls"}[withTLS]
			t.Run(name, func(t *testing.T) {
				f := startFraming(t, withTLS, framingOptions{maxConns: max, exempt: tc.exempt})
				dial := func() net.Conn {
					var c net.Conn
					var err error
					if withTLS {
						c, err = tls.Dial("tcp", f.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
					} else {
						c, err = net.Dial("tcp", f.addr)
					}
					if err != nil {
						// A TLS dial to a connection closed at once fails
						// in its handshake: refused, as wanted.
						return nil
					}
					t.Cleanup(func() { c.Close() })
					return c
				}
				served := func(c net.Conn) bool {
					if c == nil {
						return false
					}
					// A bound on waiting, not a measurement.
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Write([]byte(okGet)); err != nil {
						return false
					}
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						return false
					}
					resp.Body.Close()
					return resp.StatusCode == 200
				}
				var held []net.Conn
				for i := range max {
					c := dial()
					if !served(c) {
						t.Fatalf("connection %d of %d not served", i+1, max)
					}
					held = append(held, c)
				}
				extra := dial()
				if got := served(extra); got != (tc.exempt != nil) {
					t.Fatalf("connection %d from one address served: %v, want %v", max+1, got, tc.exempt != nil)
				}
				if tc.exempt != nil {
					return
				}
				// One closed: its place comes back once the server sees it.
				held[0].Close()
				deadline := time.Now().Add(5 * time.Second)
				for !served(dial()) {
					if time.Now().After(deadline) {
						t.Fatal("a closed connection's place was not given back")
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
	}
}

// A trusted proxy is not counted however its peer address is written: a
// link-local one comes with its zone (fe80::1%eth0), which a prefix never
// holds as such. Real connections over a link-local address of this host
// (skipped where there is none).
func TestTrustedLinkLocalProxyIsNotCapped(t *testing.T) {
	addr := linkLocal(t)
	for _, tc := range []struct {
		name    string
		exempt  []netip.Prefix
		accepts int
	}{
		{"not trusted: capped", nil, 1},
		{"fe80::/10 trusted", []netip.Prefix{netip.MustParsePrefix("fe80::/10")}, 3},
		{"the address trusted", []netip.Prefix{netip.PrefixFrom(addr.WithZone(""), 128)}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
			if err != nil {
				t.Skipf("listen on %v: %v", addr, err)
			}
			l := newCapListener(inner, 1, tc.exempt)
			defer l.Close()
			got := make(chan net.Conn, 3)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					got <- c
				}
			}()
			for range 3 {
				// The listener's address has lost the zone a dial needs.
				c, err := net.Dial("tcp", netip.AddrPortFrom(addr, uint16(inner.Addr().(*net.TCPAddr).Port)).String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			n := 0
			// A bound on waiting for the accepts, not a measurement.
			deadline := time.After(2 * time.Second)
		wait:
			for n < 3 {
				select {
				case c := <-got:
					defer c.Close()
					n++
				case <-deadline:
					break wait
				}
			}
			if n != tc.accepts {
				t.Fatalf("%d of 3 connections from %v accepted, want %d", n, addr, tc.accepts)
			}
		})
	}
}

// linkLocal is a link-local IPv6 address of this host, with its zone.
func linkLocal(t *testing.T) netip.Addr {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Skip(err)
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Is6() && ip.IsLinkLocalUnicast() {
					return ip.WithZone(ifc.Name)
				}
			}
		}
	}
	t.Skip("no link-local IPv6 address")
	return netip.Addr{}
}
