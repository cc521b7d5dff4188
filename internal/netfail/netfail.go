// Package netfail names what went wrong in a failed HTTP exchange without
// quoting the failure. Go's transport quotes a malformed answer's line in
// its error, and a peer that echoes request headers there (a broken
// proxy's error page) puts the credential the request carried into every
// error, log line, audit entry and stored row built from that text. It
// never returns any of the failure's own text.
package netfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
)

// Error is a failure reduced to its kind. It unwraps to the failure, so
// that errors.Is still finds a context's end or a timeout; its text is
// the kind alone.
type Error struct {
	Kind string
	err  error
}

func (e *Error) Error() string { return e.Kind }
func (e *Error) Unwrap() error { return e.err }

// Describe returns err reduced to its kind (nil for nil).
func Describe(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: kind(err), err: err}
}

func kind(err error) string {
	var (
		ne  net.Error
		dns *net.DNSError
		op  *net.OpError
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
		cv  *tls.CertificateVerificationError
		rh  tls.RecordHeaderError
		al  tls.AlertError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.As(err, &dns):
		return "the host name did not resolve"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci), errors.As(err, &cv):
		return "the TLS certificate was not accepted"
	// A constant text of net/http (no type to match), quoting nothing.
	case errors.As(err, &rh), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "the server does not speak TLS"
	case errors.As(err, &al):
		return "the TLS handshake was refused"
	case errors.As(err, &op) && op.Op == "dial":
		return "could not connect"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection closed early"
	}
	return "the connection broke or the answer was not valid HTTP"
}
