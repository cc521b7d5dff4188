package server

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// TestSSORedirectPathRefused: an admin_oidc.redirect_url whose path the
// server answers already, or that the router cannot take as one path, is
// a configuration error at start (one line), never a panic: the callback
// is registered as a route, and a route that conflicts with another, or
// is not a clean path, panicked in http.ServeMux. A path ending in "/" or
// holding a {wildcard} would take a whole subtree of GET requests (the
// console's pages) for the callback.
func TestSSORedirectPathRefused(t *testing.T) {
	ctx := context.Background()
	iss := devissuertest.Start(t)
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/ui/callback", true},
		{"/oauth2/callback", true},
		{"/healthz", false},
		{"/readyz", false},
		{"/metrics", false},
		{"/ui/login", false},
		{"/ui/logout", false},
		{"/", false},
		{"/ui/", false},
		{"/ui/cb/", false},
		{"/ui/{x}", false},
		{"/ui/%7Bx%7D", false},
		{"/ui/{", false},
		{"/ui//cb", false},
		{"/ui/./cb", false},
		{"/ui/../cb", false},
		{"/ui/a%20b", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			// A data dir each: a panic leaves its server's lock held.
			dir := filepath.Join(t.TempDir(), "data")
			if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
				t.Fatal(err)
			}
			cfg := Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0", AdminOIDC: devissuertest.AdminOIDC(iss, "http://127.0.0.1:1")}
			cfg.AdminOIDC.RedirectURL = "http://127.0.0.1:1" + tc.path
			var srv *Server
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("%s: panic: %v", tc.path, p)
					}
				}()
				srv, err = New(ctx, cfg, NewLogger(io.Discard, "json", "info"))
			}()
			if err == nil {
				srv.Close(ctx)
			}
			if tc.ok != (err == nil) {
				t.Fatalf("%s: %v, want ok %v", tc.path, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "redirect_url") {
				t.Fatalf("%s: %v does not name redirect_url", tc.path, err)
			}
		})
	}
}
