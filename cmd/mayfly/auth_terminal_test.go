package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
)

// What mayfly auth prints of the server's answers (the name and role of
// the session, the identity provider's device prompt, whoami's name)
// reaches the terminal as one line of text: a control character in it (an
// escape sequence that retitles the window, writes the clipboard or
// hides what follows) is not written out as it came.
func TestAuthPrintsNoControlCharacters(t *testing.T) {
	const evil = "\x1b]52;c;cm0gLXJmIH4K\x07\x1b[2J\r"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var v any
		switch r.URL.Path {
		case "/v1/auth/config":
			v = apitype.AuthConfig{SignIn: true, Device: true}
		case "/v1/auth/device":
			v = apitype.DeviceStart{DeviceCode: "dev", UserCode: "ABCD" + evil, VerificationURI: "https://idp.example/device" + evil,
				VerificationURIComplete: "https://idp.example/device?c=ABCD" + evil, Interval: 1, ExpiresIn: 60}
		case "/v1/auth/device/token":
			v = apitype.SessionToken{SessionToken: "mfys_" + strings.Repeat("a", 43), Name: "oidc:mallory" + evil, Role: "admin" + evil,
				Session: "ses_0123456789abcdef", ExpiresAt: time.Now().Add(time.Hour)}
		case "/v1/auth/whoami":
			v = apitype.WhoAmI{Name: "oidc:mallory" + evil, Role: "admin" + evil}
		default:
			w.WriteHeader(404)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("MAYFLY_SESSION_FILE", filepath.Join(t.TempDir(), "sessions.json"))
	t.Setenv(envToken, "")
	for _, args := range [][]string{
		{"auth", "login", "--device", "--addr", srv.URL},
		{"auth", "whoami", "--addr", srv.URL},
	} {
		stdout, stderr, code := runCLI(t, "", args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		if strings.ContainsAny(stdout+stderr, "\x1b\x07\r") {
			t.Errorf("%v wrote control characters: %q %q", args, stdout, stderr)
		}
		if !strings.Contains(stdout, "oidc:mallory") {
			t.Errorf("%v: no name in %q", args, stdout)
		}
	}
}
