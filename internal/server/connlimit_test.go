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
