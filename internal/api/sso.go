package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/ratelimit"
	"github.com/mayfly-sh/mayfly/internal/sso"
)

// Human sign-in (admin_oidc): the browser's /ui/login → provider →
// callback → session cookie, the CLI's loopback and device flows, and the
// session checks every control-plane request made with a session gets.

// loginData is what a sign-in under way keeps between /ui/login and its
// callback (no secret: the PKCE verifier and nonce are derived from the
// state under the server's key).
type loginData struct {
	Binding string `json:"b"` // hash of the browser's login cookie
	// A CLI's loopback sign-in: where to send the one-time code, its PKCE
	// challenge and its own state.
	CLIPort      int    `json:"p,omitempty"`
	CLIChallenge string `json:"c,omitempty"`
	CLIState     string `json:"s,omitempty"`
}

// cliCodeData is what a CLI's one-time code stands for until the CLI
// trades it (with its PKCE verifier) for a session.
type cliCodeData struct {
	Name, Subject, Issuer, Role string
	Challenge                   string
}

func (a *API) ssoRoutes(h func(string, http.HandlerFunc)) {
	if a.cfg.SSO == nil || a.cfg.Sessions == nil {
		return
	}
	h("GET /ui/login", a.uiLogin)
	h("GET "+a.cfg.SSO.CallbackPath(), a.uiCallback)
	h("POST /ui/logout", a.uiLogout)
	h("POST /v1/auth/cli/token", a.cliToken)
	h("POST /v1/auth/device", a.deviceStart)
	h("POST /v1/auth/device/token", a.deviceToken)
	h("POST /v1/auth/logout", a.apiLogout)
	h("GET /v1/auth/config", a.authConfig)
	h("/ui/", a.ui)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// pageStyle is the sign-in pages' one style sheet, inline: their CSP
// admits it by its hash (pageCSP), not every inline style.
const pageStyle = `body{font:16px system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}`

// pageCSP is the sign-in pages' Content-Security-Policy: no script, the
// one style above, nothing framing them, forms posting back here.
var pageCSP = func() string {
	h := sha256.Sum256([]byte(pageStyle))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

// page writes a small HTML page (no script, nothing from the request but
// what the template escapes).
var pageTmpl = template.Must(template.New("p").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mayfly — {{.Title}}</title>
{{if .Refresh}}<meta http-equiv="refresh" content="0;url={{.Refresh}}">{{end}}
<style>` + pageStyle + `</style></head>
<body><h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Link}}<p><a href="{{.Link}}">{{.LinkText}}</a></p>{{end}}
{{if .CSRF}}<form method="post" action="/ui/logout"><input type="hidden" name="csrf" value="{{.CSRF}}"><button type="submit">Sign out</button></form>{{end}}
</body></html>
`))

type pageData struct {
	Title, Text, Link, LinkText, Refresh, CSRF string
}

func writePage(w http.ResponseWriter, status int, p pageData) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", pageCSP)
	hd.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: under no-referrer a form post sends
	// "Origin: null", which the session check refuses.
	hd.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, p)
}

// refuseSignIn records a refused sign-in and answers it with a page that
// says why (never a code, state or token).
func (a *API) refuseSignIn(w http.ResponseWriter, r *http.Request, status int, reason, text string, rf authority.Refusal) {
	src := a.cfg.ClientAddr(r)
	if a.tooManyRefusals(w, src, true) {
		return
	}
	rf.Reason, rf.Status, rf.Source = reason, status, src
	if err := a.cfg.Sessions.Refuse(r.Context(), rf); err != nil {
		a.cfg.Logger.Error("sign-in refusal not recorded", "err", err)
		writePage(w, http.StatusServiceUnavailable, pageData{Title: "Unavailable", Text: "The server cannot record sign-ins right now; nothing was done."})
		return
	}
	writePage(w, status, pageData{Title: "Sign-in refused", Text: text, Link: "/ui/login", LinkText: "Sign in again"})
}

// gate applies the control plane's network and mTLS checks to a sign-in
// endpoint, like admin() does.
func (a *API) gate(w http.ResponseWriter, r *http.Request) bool {
	src := a.cfg.ClientAddr(r)
	if !a.adminAllowed(src) {
		a.refuseSignIn(w, r, http.StatusForbidden, authority.DeniedNetwork, "The control plane is not reachable from your address.", authority.Refusal{})
		return false
	}
	if a.cfg.AdminClientCAs != nil && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		a.refuseSignIn(w, r, http.StatusForbidden, authority.DeniedNoCert, "The control plane needs a client certificate.", authority.Refusal{})
		return false
	}
	return true
}

// gateAPI is gate for the CLI's sign-in endpoints: JSON refusals.
func (a *API) gateAPI(w http.ResponseWriter, r *http.Request) bool {
	src := a.cfg.ClientAddr(r)
	if !a.adminAllowed(src) {
		writeErrorBody(w, http.StatusForbidden, apitype.Error{Error: "forbidden", Description: "the control plane is not reachable from " + src.String() + " (not in the server's admin_cidrs)", Check: apitype.CheckNetwork})
		return false
	}
	if a.cfg.AdminClientCAs != nil && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		writeErrorBody(w, http.StatusForbidden, apitype.Error{Error: "forbidden", Description: "admin calls need a client certificate from the server's admin client CA, and none was presented", Check: apitype.CheckClientCertificate})
		return false
	}
	return true
}

func (a *API) cookie(name, value string, maxAge time.Duration, sameSite http.SameSite) *http.Cookie {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: a.cfg.SSO.Secure(), SameSite: sameSite}
	if maxAge > 0 {
		c.MaxAge = int(maxAge / time.Second)
	} else {
		c.MaxAge = -1
	}
	return c
}

// uiLogin starts a sign-in: a state (whose hash is kept, once), a login
// cookie binding it to this browser, and a redirect to the provider with
// the nonce and PKCE challenge derived from the state. With cli_port,
// cli_challenge and cli_state it is a CLI's loopback sign-in.
func (a *API) uiLogin(w http.ResponseWriter, r *http.Request) {
	if !a.gate(w, r) {
		return
	}
	// Each start stores a sign-in state: bounded per address.
	if a.tooMany(w, a.signInRL, a.cfg.ClientAddr(r), true, "too many sign-ins started from this address") {
		return
	}
	var d loginData
	q := r.URL.Query()
	if p := q.Get("cli_port"); p != "" {
		port, err := strconv.Atoi(p)
		ch, st := q.Get("cli_challenge"), q.Get("cli_state")
		if err != nil || port < 1024 || port > 65535 || len(ch) != 43 || !urlSafe(ch) || len(st) < 16 || len(st) > 128 || !urlSafe(st) {
			writePage(w, http.StatusBadRequest, pageData{Title: "Bad sign-in request", Text: "cli_port must be 1024-65535, cli_challenge an S256 PKCE challenge and cli_state 16-128 URL-safe characters."})
			return
		}
		d.CLIPort, d.CLIChallenge, d.CLIState = port, ch, st
	}
	state, err := authority.RandomString(32)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	bind, err := authority.RandomString(32)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d.Binding = sha(bind)
	authURL, err := a.cfg.SSO.AuthURL(r.Context(), state, a.cfg.Sessions.Derive("nonce", state), a.cfg.Sessions.Derive("pkce", state))
	if err != nil {
		a.cfg.Logger.Warn("sign-in: identity provider unreachable", "err", err)
		a.refuseSignIn(w, r, http.StatusServiceUnavailable, authority.RefusedIdPDown, "The identity provider cannot be reached right now; try again shortly.",
			authority.Refusal{Issuer: a.cfg.SSO.Config().Issuer})
		return
	}
	b, _ := json.Marshal(d)
	if err := a.cfg.Sessions.PutLogin(r.Context(), state, authority.LoginState, b); err != nil {
		a.fail(w, r, err)
		return
	}
	// One cookie per sign-in under way, a few at most: clear them all
	// when there are as many as that (their sign-ins fail).
	var under []string
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, sso.LoginCookie(a.cfg.SSO.Secure())+"_") && !slices.Contains(under, c.Name) {
			under = append(under, c.Name)
		}
	}
	if len(under) >= sso.MaxLoginCookies {
		for _, name := range under {
			http.SetCookie(w, a.cookie(name, "", 0, http.SameSiteLaxMode))
		}
	}
	// Lax, not Strict: the provider's redirect back is a cross-site
	// navigation, on which a Strict cookie would not be sent.
	http.SetCookie(w, a.cookie(sso.LoginCookieFor(a.cfg.SSO.Secure(), state), bind, authority.LoginTTL, http.SameSiteLaxMode))
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

func urlSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
			return false
		}
	}
	return true
}

// uiCallback finishes a sign-in: the state must be one this server gave
// this browser and not used yet; the code is traded (with the derived
// verifier) for an ID token whose nonce must be the derived one; the user
// must map to a role. Then a session cookie (browser) or a one-time code
// sent to the CLI's loopback listener.
func (a *API) uiCallback(w http.ResponseWriter, r *http.Request) {
	if !a.gate(w, r) {
		return
	}
	iss := a.cfg.SSO.Config().Issuer
	cb, err := sso.ParseCallback(r.URL.Query())
	if err != nil {
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedState, "This sign-in link is not one this server made.", authority.Refusal{Issuer: iss})
		return
	}
	raw, err := a.cfg.Sessions.TakeLogin(r.Context(), cb.State, authority.LoginState)
	if errors.Is(err, authority.ErrNoLogin) {
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedState, "This sign-in is unknown, was already used or took too long.", authority.Refusal{Issuer: iss})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var d loginData
	if err := json.Unmarshal(raw, &d); err != nil {
		a.fail(w, r, err)
		return
	}
	// The state was one this server made (taken above): its cookie's name
	// is a valid one.
	loginName := sso.LoginCookieFor(a.cfg.SSO.Secure(), cb.State)
	http.SetCookie(w, a.cookie(loginName, "", 0, http.SameSiteLaxMode))
	lc, _ := r.Cookie(loginName)
	if lc == nil || subtle.ConstantTimeCompare([]byte(sha(lc.Value)), []byte(d.Binding)) != 1 {
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedBinding, "This sign-in was started in another browser.", authority.Refusal{Issuer: iss})
		return
	}
	// RFC 9207, error answers too: the iss of another authorization
	// server means its code (or error) is not our provider's.
	if err := a.cfg.SSO.CheckIssuer(r.Context(), cb.Issuer); errors.Is(err, sso.ErrIssuer) {
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedIssuer, "This sign-in's answer names another identity provider than this server's.",
			authority.Refusal{Issuer: iss, Why: cb.Issuer})
		return
	} else if err != nil {
		a.refuseExchange(w, r, err, sso.Identity{})
		return
	}
	if cb.Error != "" {
		a.refuseSignIn(w, r, http.StatusForbidden, authority.RefusedIdPError, "The identity provider did not sign you in ("+cb.Error+").",
			authority.Refusal{Issuer: iss, Why: cb.Error})
		return
	}
	id, err := a.cfg.SSO.Exchange(r.Context(), cb.Code, a.cfg.Sessions.Derive("pkce", cb.State), a.cfg.Sessions.Derive("nonce", cb.State))
	if !a.endStronger(w, r, id, err) {
		return
	}
	if err != nil {
		a.refuseExchange(w, r, err, id)
		return
	}
	who := authority.SignedIn{Name: id.Name, Subject: id.Subject, Issuer: id.Issuer, Role: id.Role}
	if d.CLIPort != 0 {
		code, err := authority.RandomString(32)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		b, _ := json.Marshal(cliCodeData{Name: who.Name, Subject: who.Subject, Issuer: who.Issuer, Role: who.Role, Challenge: d.CLIChallenge})
		if err := a.cfg.Sessions.PutLogin(r.Context(), code, authority.LoginCLICode, b); err != nil {
			a.fail(w, r, err)
			return
		}
		// Asked, not redirected: whoever made the sign-in link chose the
		// port and the PKCE challenge, so a link from someone listening on
		// this machine would otherwise get this user's session from a
		// provider that signs its users in without asking.
		port := strconv.Itoa(d.CLIPort)
		writePage(w, http.StatusOK, pageData{Title: "Sign in the mayfly command line?",
			Text: "Signed in as " + who.Name + " (" + who.Role + "). A program on port " + port + " of this computer asks for this sign-in. " +
				"Continue only if you have just run mayfly auth login yourself; a sign-in link you were sent would give your session to whoever sent it.",
			Link: "http://127.0.0.1:" + port + "/callback?code=" + code + "&state=" + d.CLIState, LinkText: "Sign in the command line on port " + port})
		return
	}
	value, row, err := a.cfg.Sessions.Create(r.Context(), who, authority.ViaBrowser, a.cfg.ClientAddr(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	http.SetCookie(w, a.cookie(sso.SessionCookie(a.cfg.SSO.Secure()), value, time.Until(row.ExpiresAt), http.SameSiteStrictMode))
	// A page that moves on by itself rather than a redirect: the browser
	// arrived here from the provider (cross-site), and would not send the
	// Strict cookie on a redirect that continues that navigation.
	writePage(w, http.StatusOK, pageData{Title: "Signed in", Text: "Signed in as " + who.Name + " (" + who.Role + ").", Refresh: "/ui/", Link: "/ui/", LinkText: "Continue"})
}

// endStronger ends, after a sign-in the provider vouched for (a role, or
// none: ErrUnmapped), the user's sessions of a stronger role than it now
// maps them to. It reports false when it has answered (a store failure).
func (a *API) endStronger(w http.ResponseWriter, r *http.Request, id sso.Identity, err error) bool {
	if err != nil && !errors.Is(err, sso.ErrUnmapped) {
		return true
	}
	if _, err := a.cfg.Sessions.EndStronger(r.Context(), id.Subject, id.Role, a.cfg.ClientAddr(r)); err != nil {
		a.fail(w, r, err)
		return false
	}
	return true
}

// refuseExchange answers a failed code exchange, device poll or ID token
// check with its reason.
func (a *API) refuseExchange(w http.ResponseWriter, r *http.Request, err error, id sso.Identity) {
	rf := authority.Refusal{Issuer: a.cfg.SSO.Config().Issuer, Name: id.Name, Subject: id.Subject}
	switch {
	case errors.Is(err, sso.ErrIdPDown):
		a.cfg.Logger.Warn("sign-in: identity provider unreachable", "err", err)
		a.refuseSignIn(w, r, http.StatusServiceUnavailable, authority.RefusedIdPDown, "The identity provider cannot be reached right now; try again shortly.", rf)
	case errors.Is(err, sso.ErrCode):
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedCode, "The identity provider refused this sign-in's code (used already, or not for this server).", rf)
	case errors.Is(err, sso.ErrNonce):
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedNonce, "The identity provider's answer is not for this sign-in.", rf)
	case errors.Is(err, sso.ErrUnmapped):
		a.refuseSignIn(w, r, http.StatusForbidden, authority.RefusedUnmapped,
			"You are signed in at the identity provider as "+id.Name+", but nothing in admin_oidc.roles gives you a role here. Ask an admin to map your "+a.cfg.SSO.Config().ClaimName()+".", rf)
	default:
		a.cfg.Logger.Warn("sign-in: ID token refused", "err", err)
		a.refuseSignIn(w, r, http.StatusBadRequest, authority.RefusedIDToken, "The identity provider's ID token is not valid for this server.", rf)
	}
}

// sessionFrom finds the session a request presents: an "mfys_" bearer
// (the CLI) or the session cookie (a browser). found is false when it
// presents none.
type presented struct {
	value  string
	cookie bool
}

func (a *API) presentedSession(r *http.Request) (presented, bool) {
	if a.cfg.Sessions == nil || a.cfg.SSO == nil {
		return presented{}, false
	}
	if b := bearer(r); strings.HasPrefix(b, authority.SessionPrefix) {
		return presented{value: b}, true
	}
	if bearer(r) != "" {
		return presented{}, false
	}
	c, err := r.Cookie(sso.SessionCookie(a.cfg.SSO.Secure()))
	if err != nil || c.Value == "" {
		return presented{}, false
	}
	return presented{value: c.Value, cookie: true}, true
}

// sessionCaller authenticates a presented session, and for a cookie on a
// state-changing request, its CSRF token and origin. ok false: denied
// (status, reason, description), already recorded by the caller of deny.
func (a *API) sessionCaller(r *http.Request, p presented) (c caller, row authority.Session, status int, reason, desc string, err error) {
	row, err = a.cfg.Sessions.Authenticate(r.Context(), p.value)
	switch {
	case errors.Is(err, authority.ErrExpired):
		return caller{}, row, http.StatusUnauthorized, authority.DeniedSessionExpiry, "your session expired at " + row.ExpiresAt.UTC().Format(time.RFC3339) + "; sign in again", nil
	case errors.Is(err, authority.ErrBadCredentials):
		return caller{}, row, http.StatusUnauthorized, authority.DeniedSessionBad, "the session is not valid (unknown, signed out or revoked); sign in again", nil
	case err != nil:
		return caller{}, row, 0, "", "", err
	}
	c = caller{Name: row.Name, Role: row.Role, Source: a.cfg.ClientAddr(r), session: row.ID, via: row.Via, subject: row.Subject}
	if p.cookie && !safeMethod(r.Method) {
		if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
			return caller{}, row, http.StatusForbidden, authority.DeniedCrossSite, "a request made with the session cookie must come from this server's own pages", nil
		}
		if o := r.Header.Get("Origin"); o != "" && o != a.cfg.SSO.Origin() {
			return caller{}, row, http.StatusForbidden, authority.DeniedCrossSite, "a request made with the session cookie must come from this server's own pages (Origin " + a.cfg.SSO.Origin() + ")", nil
		}
		tok := r.Header.Get(sso.CSRFHeader)
		if tok == "" && strings.HasPrefix(r.URL.Path, "/ui/") && isForm(r) {
			tok = r.PostFormValue(sso.CSRFField)
		}
		if tok == "" {
			return caller{}, row, http.StatusForbidden, authority.DeniedCSRFMissing, "a state-changing request made with the session cookie needs its CSRF token (" + sso.CSRFHeader + " header)", nil
		}
		if !a.cfg.Sessions.CheckCSRF(p.value, tok) {
			return caller{}, row, http.StatusForbidden, authority.DeniedCSRFWrong, "the CSRF token is not this session's", nil
		}
	}
	return c, row, 0, "", "", nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func isForm(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// denySession records a refused session request.
func (a *API) denySession(r *http.Request, row authority.Session, status int, reason string) error {
	return a.cfg.Sessions.Refuse(r.Context(), authority.Refusal{Name: row.Name, Role: row.Role, Session: row.ID, Via: row.Via,
		Source: a.cfg.ClientAddr(r), Method: r.Method, Path: r.URL.Path, Status: status, Reason: reason})
}

// ui serves /ui/ (the console, Config.Console) for signed-in humans: the
// network gate, then the session cookie (a GET without one is sent to
// /ui/login), a state-changing request's CSRF token, and the caller put
// into the request's context (sso.CallerFrom).
func (a *API) ui(w http.ResponseWriter, r *http.Request) {
	if !a.gate(w, r) {
		return
	}
	// The console's forms carry a policy as the API takes it (up to
	// MaxPolicyBody, URL-encoded: three bytes a byte at worst). Under a
	// smaller limit the CSRF field of a large one would go unread, and the
	// form be refused as a forgery.
	limit := a.uiFormLimit()
	if r.ContentLength > limit {
		writePage(w, http.StatusRequestEntityTooLarge, pageData{Title: "Refused", Text: "Refused: the form is larger than " + strconv.FormatInt(limit>>10, 10) + " KiB.", Link: "/ui/", LinkText: "Back"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	p, ok := a.presentedSession(r)
	if !ok || !p.cookie {
		if !safeMethod(r.Method) {
			a.refuseSignIn(w, r, http.StatusForbidden, authority.DeniedNoToken, "Sign in first.", authority.Refusal{Method: r.Method, Path: r.URL.Path})
			return
		}
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	c, row, ok := a.pageSession(w, r, p, "/ui/login", "Sign in")
	if !ok {
		return
	}
	if !safeMethod(r.Method) && hasBody(r) {
		// As admin does: a form may take the read deadline to arrive, and
		// a session revoked meanwhile must not act once it has (one
		// declared too large was refused unread).
		if err := awaitBody(r, limit); err != nil {
			writePage(w, http.StatusBadRequest, pageData{Title: "Refused", Text: "Refused: the form could not be read.", Link: "/ui/", LinkText: "Back"})
			return
		}
		if c, row, ok = a.pageSession(w, r, p, "/ui/login", "Sign in"); !ok {
			return
		}
	}
	sc := sso.Caller{Name: c.Name, Role: c.Role, Session: row.ID, Via: row.Via, CSRF: a.cfg.Sessions.CSRF(p.value)}
	r = r.WithContext(sso.WithCaller(r.Context(), sc))
	if a.cfg.Console != nil {
		a.cfg.Console.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != "/ui/" {
		writePage(w, http.StatusNotFound, pageData{Title: "Not found", Text: "No such page.", Link: "/ui/", LinkText: "Home"})
		return
	}
	writePage(w, http.StatusOK, pageData{Title: "mayfly", Text: "Signed in as " + sc.Name + " (" + sc.Role + "), until " +
		row.ExpiresAt.UTC().Format(time.RFC3339) + ".", CSRF: sc.CSRF})
}

// uiFormLimit bounds a /ui/ request's body: the API's own limit, or a
// policy (MaxPolicyBody) URL-encoded at its largest if that is more.
func (a *API) uiFormLimit() int64 {
	return max(a.cfg.Limits.MaxBody, 3*a.cfg.Limits.MaxPolicyBody+64<<10)
}

// pageSession authenticates a browser's session for a /ui/ page. A
// refused one is audited, its cookie cleared when it can never work again,
// and answered with a page linking to link; ok is false then.
func (a *API) pageSession(w http.ResponseWriter, r *http.Request, p presented, link, linkText string) (c caller, row authority.Session, ok bool) {
	c, row, status, reason, desc, err := a.sessionCaller(r, p)
	if err != nil {
		a.fail(w, r, err)
		return caller{}, row, false
	}
	if status != 0 {
		// Each refusal is a durable audit entry: bounded per address as
		// the API's are (admin_rate).
		if a.tooManyRefusals(w, a.cfg.ClientAddr(r), true) {
			return caller{}, row, false
		}
		if err := a.denySession(r, row, status, reason); err != nil {
			a.fail(w, r, err)
			return caller{}, row, false
		}
		if status == http.StatusUnauthorized {
			http.SetCookie(w, a.cookie(sso.SessionCookie(a.cfg.SSO.Secure()), "", 0, http.SameSiteStrictMode))
		}
		writePage(w, status, pageData{Title: "Refused", Text: "Refused: " + desc + ".", Link: link, LinkText: linkText})
		return caller{}, row, false
	}
	return c, row, true
}

// uiLogout signs the browser's session out (CSRF-checked like any
// state-changing request) and clears the cookie.
func (a *API) uiLogout(w http.ResponseWriter, r *http.Request) {
	if !a.gate(w, r) {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody)
	p, ok := a.presentedSession(r)
	if !ok || !p.cookie {
		writePage(w, http.StatusOK, pageData{Title: "Signed out", Text: "You are not signed in.", Link: "/ui/login", LinkText: "Sign in"})
		return
	}
	_, row, ok := a.pageSession(w, r, p, "/ui/", "Back")
	if !ok {
		return
	}
	if err := a.cfg.Sessions.SignOut(r.Context(), row, a.cfg.ClientAddr(r)); err != nil {
		a.fail(w, r, err)
		return
	}
	http.SetCookie(w, a.cookie(sso.SessionCookie(a.cfg.SSO.Secure()), "", 0, http.SameSiteStrictMode))
	writePage(w, http.StatusOK, pageData{Title: "Signed out", Text: "You are signed out.", Link: "/ui/login", LinkText: "Sign in again"})
}

// authConfig tells a CLI that this server signs humans in, and whether
// its provider offers the device flow (a 404 without admin_oidc).
func (a *API) authConfig(w http.ResponseWriter, r *http.Request) {
	if !a.gateAPI(w, r) {
		return
	}
	dev, err := a.cfg.SSO.DeviceSupported(r.Context())
	out := apitype.AuthConfig{SignIn: true, Device: dev}
	if err != nil {
		out.ProviderDown = true
	}
	writeJSON(w, 200, out)
}

// apiLogout ends the session a CLI presents as its bearer.
func (a *API) apiLogout(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.gateAPI(w, r) {
		return
	}
	b := bearer(r)
	row, err := a.cfg.Sessions.Authenticate(r.Context(), b)
	if errors.Is(err, authority.ErrBadCredentials) {
		// Already over: signing out is done.
		writeJSON(w, 200, apitype.SignOutResponse{SignedOut: false})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.cfg.Sessions.SignOut(r.Context(), row, src); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.SignOutResponse{SignedOut: true})
}

// cliToken trades a CLI's one-time code and its PKCE verifier for a
// session token.
func (a *API) cliToken(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.gateAPI(w, r) {
		return
	}
	var body apitype.CLITokenRequest
	if !a.readJSON(w, r, &body) {
		return
	}
	refuse := func(status int, reason, desc string, rf authority.Refusal) {
		if a.tooManyRefusals(w, src, false) {
			return
		}
		rf.Reason, rf.Status, rf.Source, rf.Via = reason, status, src, authority.ViaCLI
		if err := a.cfg.Sessions.Refuse(r.Context(), rf); err != nil {
			a.fail(w, r, err)
			return
		}
		writeError(w, status, "invalid_grant", desc)
	}
	if len(body.Code) > 256 || len(body.CodeVerifier) < 43 || len(body.CodeVerifier) > 128 {
		refuse(http.StatusBadRequest, authority.RefusedCLICode, "code and code_verifier (43-128 characters) are required", authority.Refusal{})
		return
	}
	raw, err := a.cfg.Sessions.TakeLogin(r.Context(), body.Code, authority.LoginCLICode)
	if errors.Is(err, authority.ErrNoLogin) {
		refuse(http.StatusBadRequest, authority.RefusedCLICode, "the code is unknown, was used already or expired: run mayfly auth login again", authority.Refusal{})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var d cliCodeData
	if err := json.Unmarshal(raw, &d); err != nil {
		a.fail(w, r, err)
		return
	}
	rf := authority.Refusal{Name: d.Name, Subject: d.Subject, Issuer: d.Issuer, Role: d.Role}
	if subtle.ConstantTimeCompare([]byte(sha(body.CodeVerifier)), []byte(d.Challenge)) != 1 {
		refuse(http.StatusBadRequest, authority.RefusedCLIVerifier, "the code_verifier does not match the sign-in's challenge", rf)
		return
	}
	a.startCLISession(w, r, authority.SignedIn{Name: d.Name, Subject: d.Subject, Issuer: d.Issuer, Role: d.Role})
}

func (a *API) startCLISession(w http.ResponseWriter, r *http.Request, who authority.SignedIn) {
	value, row, err := a.cfg.Sessions.Create(r.Context(), who, authority.ViaCLI, a.cfg.ClientAddr(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.SessionToken{SessionToken: value, Name: row.Name, Role: row.Role, Session: row.ID, ExpiresAt: row.ExpiresAt})
}

// deviceStart starts a device flow at the provider for a CLI: the server
// holds the client secret, the CLI the device code.
func (a *API) deviceStart(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.gateAPI(w, r) {
		return
	}
	// Each start asks the identity provider for a device code: bounded
	// per address.
	if a.tooMany(w, a.signInRL, src, false, "too many sign-ins started from this address") {
		return
	}
	da, err := a.cfg.SSO.DeviceAuth(r.Context())
	switch {
	case errors.Is(err, sso.ErrNoDevice):
		writeError(w, http.StatusNotImplemented, "unsupported_grant_type", "the identity provider offers no device flow: use mayfly auth login without --device")
		return
	case err != nil:
		reason := authority.RefusedDevice
		status := http.StatusBadGateway
		if errors.Is(err, sso.ErrIdPDown) {
			reason, status = authority.RefusedIdPDown, http.StatusServiceUnavailable
		}
		a.cfg.Logger.Warn("device sign-in refused", "err", err)
		if a.tooManyRefusals(w, src, false) {
			return
		}
		if rerr := a.cfg.Sessions.Refuse(r.Context(), authority.Refusal{Reason: reason, Status: status, Source: src, Via: authority.ViaCLI,
			Issuer: a.cfg.SSO.Config().Issuer}); rerr != nil {
			a.fail(w, r, rerr)
			return
		}
		writeError(w, status, "idp_unavailable", "the identity provider did not start a device sign-in; try again shortly")
		return
	}
	writeJSON(w, 200, apitype.DeviceStart{DeviceCode: da.DeviceCode, UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete, Interval: da.Interval, ExpiresIn: int64(time.Until(da.Expiry) / time.Second)})
}

// tooManyRefusals answers 429 (a page for a browser, else JSON) when src
// has been refused too often lately (admin_rate): every refusal is a
// durable audit entry, so one address must not make them at will. It
// reports whether it answered.
func (a *API) tooManyRefusals(w http.ResponseWriter, src netip.Addr, page bool) bool {
	return a.tooMany(w, a.adminRL, src, page, "too many refused requests from this address")
}

// tooMany answers 429 (a page for a browser, else JSON saying what) when
// src's bucket in l is empty, and reports whether it answered.
func (a *API) tooMany(w http.ResponseWriter, l *ratelimit.Limiter, src netip.Addr, page bool, what string) bool {
	if l.Allow(clientip.RateKey(src)) {
		return false
	}
	w.Header().Set("Retry-After", "1")
	if page {
		writePage(w, http.StatusTooManyRequests, pageData{Title: "Too many attempts", Text: strings.ToUpper(what[:1]) + what[1:] + "; wait a moment."})
	} else {
		writeError(w, http.StatusTooManyRequests, "rate_limited", what)
	}
	return true
}

// deviceToken polls the provider once for a CLI's device code.
func (a *API) deviceToken(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.gateAPI(w, r) {
		return
	}
	var body apitype.DeviceTokenRequest
	if !a.readJSON(w, r, &body) {
		return
	}
	if body.DeviceCode == "" || len(body.DeviceCode) > 4096 {
		writeError(w, http.StatusBadRequest, "invalid_request", "device_code is required")
		return
	}
	// Each poll asks the identity provider with the server's client
	// credentials, pending or not: bounded per address like the starts, so
	// one address cannot make the server flood the provider (which would
	// throttle or block the client for everyone).
	if a.tooMany(w, a.signInRL, src, false, "too many device sign-in polls from this address") {
		return
	}
	id, err := a.cfg.SSO.DevicePoll(r.Context(), body.DeviceCode)
	if !a.endStronger(w, r, id, err) {
		return
	}
	switch {
	case errors.Is(err, sso.ErrPending):
		writeError(w, http.StatusBadRequest, "authorization_pending", "not approved yet")
		return
	case errors.Is(err, sso.ErrSlowDown):
		writeError(w, http.StatusBadRequest, "slow_down", "polling too fast")
		return
	case err != nil:
		status, reason, code := http.StatusBadRequest, authority.RefusedDevice, "access_denied"
		switch {
		case errors.Is(err, sso.ErrIdPDown):
			status, reason, code = http.StatusServiceUnavailable, authority.RefusedIdPDown, "idp_unavailable"
		case errors.Is(err, sso.ErrUnmapped):
			status, reason = http.StatusForbidden, authority.RefusedUnmapped
		case errors.Is(err, sso.ErrIDToken), errors.Is(err, sso.ErrNonce):
			reason = authority.RefusedIDToken
		}
		if a.tooManyRefusals(w, src, false) {
			return
		}
		if rerr := a.cfg.Sessions.Refuse(r.Context(), authority.Refusal{Reason: reason, Status: status, Source: src, Via: authority.ViaCLI,
			Issuer: a.cfg.SSO.Config().Issuer, Name: id.Name, Subject: id.Subject}); rerr != nil {
			a.fail(w, r, rerr)
			return
		}
		desc := "the device sign-in was refused: " + reason
		if reason == authority.RefusedUnmapped {
			desc = id.Name + " maps to no role in admin_oidc.roles"
		}
		writeError(w, status, code, desc)
		return
	}
	a.startCLISession(w, r, authority.SignedIn{Name: id.Name, Subject: id.Subject, Issuer: id.Issuer, Role: id.Role})
}

func (a *API) listSessions(w http.ResponseWriter, r *http.Request, c caller) {
	list, err := a.cfg.Sessions.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := apitype.SessionList{Sessions: make([]apitype.Session, 0, len(list))}
	for _, s := range list {
		out.Sessions = append(out.Sessions, apitype.Session{ID: s.ID, Name: s.Name, Role: s.Role, Via: s.Via, Source: s.Source,
			CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, RevokedAt: timeOrNil(s.RevokedAt), LastUsedAt: timeOrNil(s.LastUsedAt)})
	}
	writeJSON(w, 200, out)
}

func (a *API) revokeSession(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	if !authority.ValidSessionID(id) {
		// Not quoted back: often the session's value, passed by mistake.
		writeError(w, http.StatusNotFound, "not_found", "no live session by that id (pass the session's id, ses_ and 16 hex digits, not its value)")
		return
	}
	if err := a.cfg.Sessions.Revoke(r.Context(), id, c.Name, c.Source); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.SessionRevokeResponse{ID: id, Revoked: true})
}

// whoami says who the caller is (token or session) and with which role.
// A browser signed in with the cookie also gets its session's CSRF token:
// only this origin's pages can read the answer (no CORS), and they need it
// for their state-changing fetches.
func (a *API) whoami(w http.ResponseWriter, r *http.Request, c caller) {
	out := apitype.WhoAmI{Name: c.Name, Role: c.Role, Session: c.session, Via: c.via}
	if p, ok := a.presentedSession(r); ok && p.cookie {
		out.CSRF = a.cfg.Sessions.CSRF(p.value)
	}
	writeJSON(w, 200, out)
}
