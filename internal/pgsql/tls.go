package pgsql

import (
	"crypto/tls"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// UnverifiedHosts names the hosts of c that are reached over the network
// without checking the server's certificate: sslmode disable, allow, prefer
// (pgx's default when neither the DSN nor PGSSLMODE names one) or require
// without a root certificate. Anyone on the path could then read and
// change what the connection carries. A Unix socket or a loopback host is
// not on a network.
func UnverifiedHosts(c *pgconn.Config) []string {
	var out []string
	add := func(host string, tc *tls.Config) {
		if strings.HasPrefix(host, "/") || host == "localhost" || slices.Contains(out, host) {
			return
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return
		}
		// verify-ca turns Go's own check off (it would check the host
		// name) for a VerifyPeerCertificate of its own; require, prefer
		// and allow turn it off for nothing.
		if tc != nil && (!tc.InsecureSkipVerify || tc.VerifyPeerCertificate != nil) {
			return
		}
		out = append(out, host)
	}
	add(c.Host, c.TLSConfig)
	for _, f := range c.Fallbacks {
		add(f.Host, f.TLSConfig)
	}
	return out
}
