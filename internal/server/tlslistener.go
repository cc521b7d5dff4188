package server

import (
	"crypto/tls"
	"net"
)

func tlsListener(ln net.Listener, c *tls.Config) net.Listener { return tls.NewListener(ln, c) }
