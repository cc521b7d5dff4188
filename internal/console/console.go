// Package console is mayfly's web console at /ui/: server-rendered pages
// (html/template) for signed-in humans, by role, over the live leases, the
// audit log (each entry's inclusion proof checked in the browser by
// static/verify.js against the latest signed checkpoint), leak reports,
// refused exchanges, policy versions, secrets' metadata and the node's
// health. Its assets are embedded; every answer carries a strict
// Content-Security-Policy.
//
// It owns the pages, their queries' shapes and the audit index (Indexer,
// a sink following the log). It reads the store for listings and never
// writes to it but through the index; every action (revoke, policy apply)
// goes through the authority, which audits it. It never renders a token,
// a secret's value or a session value, and it never changes state on a GET
// or without the session's CSRF token.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store"
)

//go:embed static templates
var assets embed.FS

// CSP is the console's Content-Security-Policy: scripts, styles and images
// from this origin only, nothing inline, no framing, forms posting back
// here.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Caller is the signed-in human.
type Caller struct {
	Name string // as audit entries name them
	Role string // authority.RoleAuditor, RoleOperator or RoleAdmin
}

// Auth is the sign-in the console relies on (the server's SSO sessions).
type Auth interface {
	// Caller returns the signed-in human of r, or false.
	Caller(r *http.Request) (Caller, bool)
	// CSRFToken returns the token r's session puts in state-changing
	// forms (field CSRFField).
	CSRFToken(r *http.Request) string
	// CheckCSRF reports whether r carries its session's CSRF token.
	CheckCSRF(r *http.Request) bool
	// SignIn answers a request that has no session: to the sign-in, and
	// back to r's page afterwards.
	SignIn(w http.ResponseWriter, r *http.Request)
}

// Secrets lists stored secrets' metadata (never a value).
type Secrets interface {
	List(ctx context.Context) ([]SecretMeta, error)
}

// Denials records a refused control-plane request (admin.denied) before
// it is answered: authority.Admins.
type Denials interface {
	Deny(ctx context.Context, d authority.Denial) error
}

// SecretMeta is a secret's metadata as the API shows it.
type SecretMeta = apitype.SecretMeta

// CSRFField is the form field that carries the CSRF token.
const CSRFField = "csrf"

// Config wires the console.
type Config struct {
	Auth      Auth
	Store     *store.DB // reads only
	Authority *authority.Authority
	Leases    *lease.Manager
	Audit     *auditlog.Log
	Secrets   Secrets
	// Denials records a request refused for the caller's role, as the
	// API records one.
	Denials Denials
	// ClientAddr is the caller's address, for the audit entries of actions.
	ClientAddr func(*http.Request) netip.Addr
	// NodeID names this node on the health page (nil or "": unnamed).
	NodeID func() string
	Logger *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Console is the http.Handler of /ui/.
type Console struct {
	cfg   Config
	mux   *http.ServeMux
	pages map[string]*template.Template
	live  liveCounts
}

// New builds the console.
func New(cfg Config) (*Console, error) {
	if cfg.Auth == nil || cfg.Store == nil || cfg.Authority == nil || cfg.Leases == nil || cfg.Audit == nil || cfg.Secrets == nil || cfg.Denials == nil {
		return nil, errors.New("console: Auth, Store, Authority, Leases, Audit, Secrets and Denials are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClientAddr == nil {
		cfg.ClientAddr = func(r *http.Request) netip.Addr {
			ap, err := netip.ParseAddrPort(r.RemoteAddr)
			if err != nil {
				return netip.Addr{}
			}
			return ap.Addr().Unmap()
		}
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux(), pages: map[string]*template.Template{}}
	if err := c.parse(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "static")
	if err != nil {
		return nil, err
	}
	c.mux.HandleFunc("GET /ui/static/{file...}", func(w http.ResponseWriter, r *http.Request) {
		serveStatic(w, r, static, r.PathValue("file"))
	})
	// Without it, the mux would send /ui/static to /ui/static/.
	c.mux.HandleFunc("/ui/static", notFound)
	page := func(pattern, role string, fn func(http.ResponseWriter, *http.Request, Caller)) {
		c.mux.HandleFunc(pattern, c.gate(role, fn))
	}
	page("GET /ui/{$}", authority.RoleAuditor, func(w http.ResponseWriter, r *http.Request, _ Caller) {
		http.Redirect(w, r, "/ui/leases", http.StatusSeeOther)
	})
	page("GET /ui/leases", authority.RoleAuditor, c.leases)
	page("POST /ui/leases/revoke", authority.RoleOperator, c.revoke)
	page("GET /ui/audit", authority.RoleAuditor, c.auditList)
	page("GET /ui/audit/{index}", authority.RoleAuditor, c.auditEntry)
	page("GET /ui/leaks", authority.RoleAuditor, c.leaks)
	page("GET /ui/refused", authority.RoleAuditor, c.refused)
	page("GET /ui/policy", authority.RoleAuditor, c.policy)
	page("POST /ui/policy/plan", authority.RoleOperator, c.policyPlan)
	page("POST /ui/policy/apply", authority.RoleAdmin, c.policyApply)
	page("GET /ui/secrets", authority.RoleAuditor, c.secrets)
	page("GET /ui/health", authority.RoleAuditor, c.health)
	c.mux.HandleFunc("/ui/", notFound)
	return c, nil
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "no such page", http.StatusNotFound)
}

// serveStatic serves the asset file names, and nothing else: a folder is
// 404 rather than an index of the files (http.FileServer lists one), and
// no path is redirected.
func serveStatic(w http.ResponseWriter, r *http.Request, static fs.FS, name string) {
	if !fs.ValidPath(name) || name == "." {
		notFound(w, r)
		return
	}
	if fi, err := fs.Stat(static, name); err != nil || !fi.Mode().IsRegular() {
		notFound(w, r)
		return
	}
	http.ServeFileFS(w, r, static, name)
}

// ServeHTTP sets the headers every console answer carries.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer a browser sends
	// "Origin: null" on form posts, which the session check refuses.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if strings.HasPrefix(r.URL.Path, "/ui/static/") {
		h.Set("Cache-Control", "no-cache")
	} else {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// gate admits signed-in callers of at least role; a POST must carry the
// session's CSRF token and come from this origin.
func (c *Console) gate(role string, fn func(http.ResponseWriter, *http.Request, Caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.cfg.Auth.Caller(r)
		if !ok {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				c.cfg.Auth.SignIn(w, r)
				return
			}
			c.refuse(w, r, Caller{}, http.StatusUnauthorized, "Sign in first: this session has ended.")
			return
		}
		if r.Method == http.MethodPost {
			// Sec-Fetch-Site, where the browser sends it, must say the
			// form came from this origin; the token is checked always.
			if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
				c.refuse(w, r, who, http.StatusForbidden, "Refused: this form was not sent from the console (cross-site request).")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				c.refuse(w, r, who, http.StatusBadRequest, "Refused: the form could not be read.")
				return
			}
			if !c.cfg.Auth.CheckCSRF(r) {
				c.refuse(w, r, who, http.StatusForbidden, "Refused: the form's CSRF token is missing or is not this session's. Reload the page and try again.")
				return
			}
		}
		if authority.RoleRank(who.Role) < authority.RoleRank(role) {
			// Recorded before it is answered, as the API records one.
			ctx, cancel := c.ctx(r)
			defer cancel()
			if err := c.cfg.Denials.Deny(ctx, authority.Denial{Admin: who.Name, Role: who.Role, Source: c.cfg.ClientAddr(r), Method: r.Method,
				Path: r.URL.Path, Status: http.StatusForbidden, Reason: authority.DeniedRole}); err != nil {
				c.cfg.Logger.Error("console: refusal not recorded", "path", r.URL.Path, "err", err)
				c.render(w, r, http.StatusServiceUnavailable, "error", who, "Unavailable",
					map[string]any{"Message": "The server cannot record this refusal right now; nothing was done."})
				return
			}
			c.refuse(w, r, who, http.StatusForbidden, fmt.Sprintf("This needs the %s role; you have the %s role.", role, who.Role))
			return
		}
		// PostgreSQL refuses such text with an error rather than matching
		// nothing: refused here, both backends answer alike.
		if !plainForm(r) {
			c.refuse(w, r, who, http.StatusBadRequest, "Refused: the query or form is malformed (a NUL character, text that is not UTF-8, or a bad escape).")
			return
		}
		fn(w, r, who)
	}
}

// plainForm reports whether every query and form value is UTF-8 text
// without a NUL.
func plainForm(r *http.Request) bool {
	if err := r.ParseForm(); err != nil {
		return false
	}
	for _, vs := range r.Form {
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
				return false
			}
		}
	}
	return true
}

// refuse answers with a page that says why.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, who Caller, status int, msg string) {
	c.render(w, r, status, "error", who, "Refused", map[string]any{"Message": msg})
}

// fail answers an internal error without its text.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, who Caller, err error) {
	c.cfg.Logger.Error("console: page failed", "path", r.URL.Path, "err", err)
	c.render(w, r, http.StatusInternalServerError, "error", who, "Error",
		map[string]any{"Message": "The page could not be built; the server's log says why."})
}

func (c *Console) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}
