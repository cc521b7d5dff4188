package sso

import (
	"context"
	"errors"
	"net/url"
	"slices"
)

// Names the browser sees. The session cookie is __Host- prefixed when the
// server is reached over https (Secure, Path=/, no Domain: it cannot be
// set or read by another host), plain on a loopback http test server.
const (
	CookieSecure      = "__Host-mayfly_session"
	CookiePlain       = "mayfly_session"
	LoginCookieSecure = "__Host-mayfly_login"
	LoginCookiePlain  = "mayfly_login"
	// CSRFHeader carries the session's CSRF token on every state-changing
	// request made with the cookie (fetch); CSRFField is the same in a
	// form post.
	CSRFHeader = "X-CSRF-Token"
	CSRFField  = "csrf"
)

// SessionCookie is the session cookie's name for a server reached over
// https (secure) or not.
func SessionCookie(secure bool) string {
	if secure {
		return CookieSecure
	}
	return CookiePlain
}

// LoginCookie is the prefix of the login cookies' names (LoginCookieFor).
func LoginCookie(secure bool) string {
	if secure {
		return LoginCookieSecure
	}
	return LoginCookiePlain
}

// LoginCookieFor binds the sign-in of state to the browser that started
// it. Its name holds the state's first characters: two sign-ins started in
// one browser (two tabs) each keep their own, rather than the second's
// replacing the first's and both failing. Its value, not its name, is the
// binding.
func LoginCookieFor(secure bool, state string) string {
	return LoginCookie(secure) + "_" + state[:min(len(state), loginCookieKey)]
}

// loginCookieKey is how many of a state's characters name its cookie (48
// random bits: sign-ins under way in one browser do not collide).
const loginCookieKey = 8

// MaxLoginCookies bounds the login cookies a browser holds: a sign-in
// started with this many under way clears them (those sign-ins then fail)
// rather than growing the browser's cookies without end.
const MaxLoginCookies = 4

// Caller is a human signed in with a session, as a request's context
// carries it (the API puts it there for /ui/ requests).
type Caller struct {
	Name    string // "oidc:" and the user's email (or username, or sub)
	Role    string // admin, operator or auditor
	Session string // the session's public id ("ses_…"), never its value
	Via     string // "browser" or "cli"
	// CSRF is the session's CSRF token: render it into the page (a meta
	// tag or a hidden form field "csrf") and send it as the X-CSRF-Token
	// header with every state-changing fetch.
	CSRF string
}

// Has reports whether the caller's role is role or stronger.
func (c Caller) Has(role string) bool {
	have, want := slices.Index(roleOrder, c.Role), slices.Index(roleOrder, role)
	return have >= 0 && want >= 0 && have >= want
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the signed-in caller of a request's context.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Callback is what the provider sends to the redirect URL.
type Callback struct {
	Code, State string
	// Error is the provider's error code (access_denied…), already made
	// safe to show; empty on success.
	Error string
	// Issuer is the iss parameter (RFC 9207), empty when the provider
	// sent none; RP.CheckIssuer judges it.
	Issuer string
}

// Bounds on callback parameters: generous for any provider's codes.
const (
	maxCode   = 4096
	maxState  = 256
	maxIssuer = 2048
)

// ErrCallback is a callback that is not one this server could have asked
// for.
var ErrCallback = errors.New("malformed sign-in callback")

// ParseCallback reads a callback's query strictly: one state, one code or
// one error, and at most one iss, each bounded.
func ParseCallback(q url.Values) (Callback, error) {
	one := func(k string, max int) (string, error) {
		vs := q[k]
		switch {
		case len(vs) == 0:
			return "", nil
		case len(vs) > 1 || len(vs[0]) > max:
			return "", ErrCallback
		}
		return vs[0], nil
	}
	var c Callback
	var err error
	if c.State, err = one("state", maxState); err != nil || c.State == "" {
		return Callback{}, ErrCallback
	}
	if c.Code, err = one("code", maxCode); err != nil {
		return Callback{}, err
	}
	e, err := one("error", 256)
	if err != nil {
		return Callback{}, err
	}
	c.Error = safeCode(e)
	if c.Issuer, err = one("iss", maxIssuer); err != nil {
		return Callback{}, err
	}
	if c.Code == "" && c.Error == "" {
		return Callback{}, ErrCallback
	}
	for i := 0; i < len(c.State); i++ {
		if ch := c.State[i]; !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return Callback{}, ErrCallback
		}
	}
	return c, nil
}
