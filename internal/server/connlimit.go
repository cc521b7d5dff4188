package server

import (
	"net"
	"net/netip"
	"sync"

	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/ratelimit"
)

// DefaultMaxConnsPerAddress is limits.max_conns_per_address unset: room
// for a large CI fleet behind one NAT address (token_burst lets 1,000
// runners start at once, each holding a connection or two), while one
// address cannot hold the node's descriptors and memory with idle
// connections.
const DefaultMaxConnsPerAddress = 2048

// capListener bounds the connections one source address (an IPv6 /64,
// as the rate limits count) holds open at once: past max, a new one is
// closed as soon as it is accepted, before any TLS handshake. The peers
// in exempt (trusted proxies, through which many clients come) are not
// counted.
type capListener struct {
	net.Listener
	// exempt decides as it does whose X-Forwarded-For is believed: a
	// peer's zone (fe80::1%eth0) or mapping dropped.
	exempt *clientip.Resolver
	open   *ratelimit.Concurrent
}

func newCapListener(inner net.Listener, max int, exempt []netip.Prefix) net.Listener {
	if max <= 0 {
		return inner
	}
	return &capListener{Listener: inner, exempt: clientip.New(exempt), open: ratelimit.NewConcurrent(max)}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || l.exempt.Trusted(ap.Addr()) {
			return c, nil
		}
		key := clientip.RateKey(ap.Addr())
		if !l.open.Enter(key) {
			c.Close()
			continue
		}
		return &cappedConn{Conn: c, release: func() { l.open.Leave(key) }}, nil
	}
}

// cappedConn gives its place back once, when it is closed.
type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes the half-close on (framingConn asks for it).
func (c *cappedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
