package devissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Paths of the human sign-in side (authorization code + PKCE, and the
// device flow), for trying admin_oidc on a laptop and for tests.
const (
	AuthorizePath   = "/authorize"
	OAuthTokenPath  = "/oauth/token"
	DevicePath      = "/device"         // POST: start a device flow
	DeviceApprove   = "/device/approve" // GET ?user_code=…: approve as the current user
	codeTTL         = time.Minute
	maxPendingCodes = 10000
)

// User is who the issuer signs in at its authorization endpoint: the
// claims of the ID tokens it issues there (sub, email, groups…).
type User map[string]any

// DefaultUser is the user signed in until SetUser says otherwise.
func DefaultUser() User {
	return User{"sub": "dev-user", "email": "dev@example.com", "email_verified": true, "name": "Dev User", "groups": []any{"mayfly-admins"}}
}

// humanSide is the issuer's authorization server state: codes given and
// device flows under way, in memory only.
type humanSide struct {
	mu      sync.Mutex
	user    User
	form    bool
	codes   map[string]authCode
	devices map[string]*deviceFlow // by device code
	secret  string
}

type authCode struct {
	clientID, redirectURI, challenge, nonce string
	user                                    User
	expires                                 time.Time
}

type deviceFlow struct {
	clientID, userCode string
	user               User // set once approved
	expires            time.Time
}

// SetUser sets who the authorization endpoint signs in from now on (a
// test's way to sign in someone else).
func (i *Issuer) SetUser(u User) {
	i.human.mu.Lock()
	defer i.human.mu.Unlock()
	i.human.user = u
}

func (i *Issuer) currentUser() User {
	i.human.mu.Lock()
	defer i.human.mu.Unlock()
	return i.human.user
}

var formTmpl = template.Must(template.New("f").Parse(`<!doctype html><html><head><meta charset="utf-8"><title>dev-issuer sign-in</title></head>
<body style="font:16px system-ui;max-width:36em;margin:3em auto"><h1>dev-issuer (never for production)</h1>
<form method="post" action="/authorize">
{{range $k, $v := .Query}}<input type="hidden" name="{{$k}}" value="{{index $v 0}}">{{end}}
<p><label>email <input name="dev_email" value="{{.Email}}"></label></p>
<p><label>groups (comma separated) <input name="dev_groups" value="{{.Groups}}"></label></p>
<p><button type="submit">Sign in</button></p></form></body></html>`))

// authorize is the authorization endpoint: code flow only, PKCE S256
// required, redirect URIs on a loopback host only. It approves at once as
// the current user, or, with the form on, shows a form choosing the email
// and groups.
func (i *Issuer) authorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", "malformed request")
		return
	}
	q := r.Form
	redirect := q.Get("redirect_uri")
	ru, err := url.Parse(redirect)
	if redirect == "" || err != nil || !loopbackHost(ru.Hostname()) || (ru.Scheme != "http" && ru.Scheme != "https") {
		writeErr(w, http.StatusBadRequest, "invalid_request", "redirect_uri must be an http(s) URL on a loopback host")
		return
	}
	back := func(v url.Values) {
		v.Set("state", q.Get("state"))
		sep := "?"
		if ru.RawQuery != "" {
			sep = "&"
		}
		http.Redirect(w, r, redirect+sep+v.Encode(), http.StatusSeeOther)
	}
	if q.Get("response_type") != "code" {
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	}
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 {
		back(url.Values{"error": {"invalid_request"}, "error_description": {"PKCE with S256 is required"}})
		return
	}
	if q.Get("client_id") == "" {
		back(url.Values{"error": {"invalid_request"}, "error_description": {"client_id is required"}})
		return
	}
	user := i.currentUser()
	if i.human.form {
		if r.Method == http.MethodGet {
			g := ""
			if gs, ok := user["groups"].([]any); ok {
				var parts []string
				for _, x := range gs {
					if s, ok := x.(string); ok {
						parts = append(parts, s)
					}
				}
				g = strings.Join(parts, ",")
			}
			email, _ := user["email"].(string)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = formTmpl.Execute(w, map[string]any{"Query": r.URL.Query(), "Email": email, "Groups": g})
			return
		}
		email := strings.TrimSpace(q.Get("dev_email"))
		var groups []any
		for _, g := range strings.Split(q.Get("dev_groups"), ",") {
			if g = strings.TrimSpace(g); g != "" {
				groups = append(groups, g)
			}
		}
		// The developer vouches for the email typed into the dev form.
		user = User{"sub": "dev:" + email, "email": email, "email_verified": email != "", "groups": groups}
	}
	code := randomHex(24)
	i.human.mu.Lock()
	i.human.sweep(i.now())
	if len(i.human.codes) >= maxPendingCodes {
		i.human.mu.Unlock()
		back(url.Values{"error": {"temporarily_unavailable"}})
		return
	}
	i.human.codes[code] = authCode{clientID: q.Get("client_id"), redirectURI: redirect, challenge: q.Get("code_challenge"),
		nonce: q.Get("nonce"), user: user, expires: i.now().Add(codeTTL)}
	i.human.mu.Unlock()
	back(url.Values{"code": {code}})
}

func (h *humanSide) sweep(now time.Time) {
	for k, c := range h.codes {
		if !now.Before(c.expires) {
			delete(h.codes, k)
		}
	}
	for k, d := range h.devices {
		if !now.Before(d.expires) {
			delete(h.devices, k)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// client reads a client's form (at most 64 KiB), and the client's id (and
// secret, checked when the issuer has one) from Basic auth or the form;
// false: it has answered the request with the error.
func (i *Issuer) client(w http.ResponseWriter, r *http.Request) (string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", "malformed form")
		return "", false
	}
	id, ok := i.clientOf(r)
	if !ok {
		writeErr(w, http.StatusUnauthorized, "invalid_client", "unknown client or wrong secret")
	}
	return id, ok
}

// clientOf reads the client's id (and secret, checked when the issuer has
// one) from Basic auth or the form.
func (i *Issuer) clientOf(r *http.Request) (string, bool) {
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id == "" {
		return "", false
	}
	if i.human.secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(i.human.secret)) != 1 {
		return id, false
	}
	return id, true
}

// oauthToken is the token endpoint: an authorization code (with its PKCE
// verifier, once) or an approved device code, for an ID token.
func (i *Issuer) oauthToken(w http.ResponseWriter, r *http.Request) {
	client, ok := i.client(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	var user User
	nonce := ""
	switch f.Get("grant_type") {
	case "authorization_code":
		i.human.mu.Lock()
		c, found := i.human.codes[f.Get("code")]
		delete(i.human.codes, f.Get("code")) // once, whatever follows
		i.human.mu.Unlock()
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !found || !i.now().Before(c.expires):
			writeErr(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
			return
		case c.clientID != client || c.redirectURI != f.Get("redirect_uri"):
			writeErr(w, http.StatusBadRequest, "invalid_grant", "code issued to another client or redirect_uri")
			return
		case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.challenge)) != 1:
			writeErr(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the challenge")
			return
		}
		user, nonce = c.user, c.nonce
	case "urn:ietf:params:oauth:grant-type:device_code":
		i.human.mu.Lock()
		d, found := i.human.devices[f.Get("device_code")]
		if found && d.user != nil {
			delete(i.human.devices, f.Get("device_code"))
		}
		i.human.mu.Unlock()
		switch {
		case !found || !i.now().Before(d.expires) || d.clientID != client:
			writeErr(w, http.StatusBadRequest, "expired_token", "unknown or expired device code")
			return
		case d.user == nil:
			writeErr(w, http.StatusBadRequest, "authorization_pending", "not approved yet")
			return
		}
		user = d.user
	default:
		writeErr(w, http.StatusBadRequest, "unsupported_grant_type", "authorization_code or device_code")
		return
	}
	idt, err := i.mintHuman(user, client, nonce)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "server_error", "signing failed")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": randomHex(24), "token_type": "Bearer", "expires_in": 300, "id_token": idt})
}

// mintHuman signs an ID token for user, for client, with nonce.
func (i *Issuer) mintHuman(user User, client, nonce string) (string, error) {
	c := map[string]any{}
	for k, v := range user {
		if !reserved[k] {
			c[k] = v
		}
	}
	now := i.now()
	c["iss"], c["aud"], c["iat"], c["exp"] = i.url, client, now.Unix(), now.Add(5*time.Minute).Unix()
	if nonce != "" {
		c["nonce"] = nonce
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := i.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// deviceStart starts a device flow: a device code for the client, a user
// code for the human (approved at DeviceApprove).
func (i *Issuer) deviceStart(w http.ResponseWriter, r *http.Request) {
	client, ok := i.client(w, r)
	if !ok {
		return
	}
	dc, uc := randomHex(24), strings.ToUpper(randomHex(4))
	i.human.mu.Lock()
	i.human.sweep(i.now())
	if len(i.human.devices) >= maxPendingCodes {
		i.human.mu.Unlock()
		writeErr(w, http.StatusServiceUnavailable, "temporarily_unavailable", "too many device flows")
		return
	}
	i.human.devices[dc] = &deviceFlow{clientID: client, userCode: uc, expires: i.now().Add(10 * time.Minute)}
	i.human.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"device_code": dc, "user_code": uc, "verification_uri": i.url + DeviceApprove,
		"verification_uri_complete": i.url + DeviceApprove + "?user_code=" + uc, "expires_in": 600, "interval": 1})
}

// deviceApprove approves a user code as the current user.
func (i *Issuer) deviceApprove(w http.ResponseWriter, r *http.Request) {
	uc := r.URL.Query().Get("user_code")
	user := i.currentUser()
	i.human.mu.Lock()
	defer i.human.mu.Unlock()
	for _, d := range i.human.devices {
		if uc != "" && subtle.ConstantTimeCompare([]byte(d.userCode), []byte(uc)) == 1 && i.now().Before(d.expires) {
			d.user = user
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("device approved; return to your terminal\n"))
			return
		}
	}
	writeErr(w, http.StatusNotFound, "not_found", "unknown or expired user code")
}
