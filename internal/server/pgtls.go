package server

import (
	"crypto/tls"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// unverifiedPostgresHosts names the hosts of dsn that the store would reach
// over the network without checking the server's certificate: sslmode
// disable, allow, prefer (pgx's default when the DSN and PGSSLMODE name
// none) or require without a root certificate. Anyone on the path could
// then read the connection's password and rows, or change them. A Unix
// socket or a loopback host is not on a network. A DSN pgx cannot read
// gives nil: opening the store reports it.
func unverifiedPostgresHosts(dsn string) []string {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil
	}
	var out []string
	add := func(host string, tc *tls.Config) {
		if strings.HasPrefix(host, "/") || host == "localhost" {
			return
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return
		}
		// verify-ca skips Go's own check (no host name) for its own
		// VerifyPeerCertificate; only require, prefer and allow skip both.
		if tc != nil && (!tc.InsecureSkipVerify || tc.VerifyPeerCertificate != nil) {
			return
		}
		for _, h := range out {
			if h == host {
				return
			}
		}
		out = append(out, host)
	}
	add(c.Host, c.TLSConfig)
	for _, f := range c.Fallbacks {
		add(f.Host, f.TLSConfig)
	}
	return out
}
