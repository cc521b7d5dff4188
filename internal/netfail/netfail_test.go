package netfail

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
)

func TestDescribeNamesTheKindAndQuotesNothing(t *testing.T) {
	const planted = "ghp_PLANTEDechoedCredential0123456789ab" // mayfly:allow
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"canceled", context.Canceled, "canceled"},
		{"deadline", context.DeadlineExceeded, "timed out"},
		{"net timeout", &net.OpError{Op: "read", Err: timeoutErr{}}, "timed out"},
		{"no such host", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: planted + ".example"}}, "the host name did not resolve"},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "connection refused"},
		{"unreachable", &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, "could not connect"},
		{"unknown CA", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "the TLS certificate was not accepted"},
		{"wrong host", x509.HostnameError{Host: planted, Certificate: &x509.Certificate{}}, "the TLS certificate was not accepted"},
		{"plain HTTP answer", errors.New("http: server gave HTTP response to HTTPS client"), "the server does not speak TLS"},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, "the server does not speak TLS"},
		{"TLS alert", tls.AlertError(42), "the TLS handshake was refused"},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, "the connection closed early"},
		{"EOF", io.EOF, "the connection closed early"},
		{"truncated", io.ErrUnexpectedEOF, "the connection closed early"},
		// What Go's transport says of an answer whose header block holds
		// the request's Authorization on a line without a colon.
		{"malformed echo", fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", errors.New(`malformed MIME header: missing colon: "you sent token `+planted+`"`)),
			"the connection broke or the answer was not valid HTTP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// As the HTTP client returns it: with the URL, which may
			// carry a secret of its own.
			in := &url.Error{Op: "Post", URL: "https://api.example/hook/" + planted, Err: tt.err}
			got := Describe(in)
			if got.Error() != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
			if strings.Contains(got.Error(), planted) {
				t.Errorf("the description quotes the failure: %q", got)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("Describe(%v) does not unwrap to it", in)
			}
		})
	}
	if Describe(nil) != nil {
		t.Error("Describe(nil) is not nil")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
