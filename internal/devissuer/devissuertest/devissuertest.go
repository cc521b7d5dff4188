// Package devissuertest starts a dev issuer on a loopback port for tests
// that need a real OIDC issuer (discovery, JWKS, minted ID tokens). It is
// for tests only.
package devissuertest

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
)

// Start serves a new dev issuer on 127.0.0.1 until the test ends.
func Start(t testing.TB) *devissuer.Issuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := devissuer.New(devissuer.Options{URL: "http://" + ln.Addr().String()})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: iss.Handler()}}
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}
