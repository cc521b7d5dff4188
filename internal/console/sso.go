package console

import (
	"crypto/subtle"
	"net/http"

	"github.com/mayfly-sh/mayfly/internal/sso"
)

// SSOAuth is Auth over the server's SSO sessions: the API checks the
// session cookie and a state-changing request's CSRF token before the
// console sees the request, and puts the caller in its context.
type SSOAuth struct{}

// Caller is the session's human (sso.CallerFrom).
func (SSOAuth) Caller(r *http.Request) (Caller, bool) {
	c, ok := sso.CallerFrom(r.Context())
	if !ok || c.Name == "" {
		return Caller{}, false
	}
	return Caller{Name: c.Name, Role: c.Role}, true
}

// CSRFToken is the session's CSRF token.
func (SSOAuth) CSRFToken(r *http.Request) string {
	c, _ := sso.CallerFrom(r.Context())
	return c.CSRF
}

// CheckCSRF checks the form's token again (the API did first), in
// constant time.
func (SSOAuth) CheckCSRF(r *http.Request) bool {
	c, ok := sso.CallerFrom(r.Context())
	if !ok || c.CSRF == "" {
		return false
	}
	got := r.PostFormValue(sso.CSRFField)
	if got == "" {
		got = r.Header.Get(sso.CSRFHeader)
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(c.CSRF)) == 1
}

// SignIn sends the browser to /ui/login.
func (SSOAuth) SignIn(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}
