package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
)

const (
	grantTokenExchange = apitype.GrantTypeTokenExchange
	typeIDToken        = apitype.TokenTypeIDToken
	typeJWT            = apitype.TokenTypeJWT
	typeAccessToken    = apitype.TokenTypeAccessToken
)

// errBodyTooLarge is a body over limits.max_body, declared or read.
var errBodyTooLarge = errors.New("body too large")

// readForm reads a size-limited urlencoded body. A body declared over the
// limit is refused before any of it is read.
func (a *API) readForm(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > a.cfg.Limits.MaxBody {
		return errBodyTooLarge
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge
		}
		return fmt.Errorf("read form body: %w", err)
	}
	return nil
}

// parseForm is readForm, answering its errors (413 for a body too large).
func (a *API) parseForm(w http.ResponseWriter, r *http.Request) bool {
	switch err := a.readForm(w, r); {
	case errors.Is(err, errBodyTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", "body too large")
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return false
	}
	return true
}

// tooLong refuses (with status: what the endpoint answers a body over max
// once read) a body whose declared length is over max before any of it is
// read: a request refused on its headers is answered at once (the server
// then drops or cuts the body, framing.go in package server).
func tooLong(w http.ResponseWriter, r *http.Request, max int64, status int, desc string) bool {
	if r.ContentLength <= max {
		return false
	}
	writeError(w, status, "invalid_request", desc)
	return true
}

// single returns the one value of a form field; repeated fields are
// malformed (RFC 6749 section 3.2).
func single(r *http.Request, name string) (string, bool) {
	vs := r.PostForm[name]
	switch len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	}
	return "", false
}

func (a *API) exchange(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.tokenRL.Allow(clientip.RateKey(src)) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many exchanges from this address")
		return
	}
	if err := a.readForm(w, r); err != nil {
		if errors.Is(err, errBodyTooLarge) {
			// Only the ID token can make a request this large: refused
			// and recorded as too large an ID token (SPEC section 4).
			a.fail(w, r, a.cfg.Authority.ExchangeTooLarge(r.Context(), src, a.cfg.Limits.MaxBody))
			return
		}
		writeError(w, 400, "invalid_request", "malformed form body")
		return
	}
	fields := map[string]string{}
	for _, k := range []string{"grant_type", "subject_token", "subject_token_type", "scope", "ttl"} {
		v, ok := single(r, k)
		if !ok {
			writeError(w, 400, "invalid_request", k+" given more than once")
			return
		}
		fields[k] = v
	}
	switch {
	case fields["grant_type"] == "":
		writeError(w, 400, "invalid_request", "grant_type missing")
		return
	case fields["grant_type"] != grantTokenExchange:
		writeError(w, 400, "unsupported_grant_type", "only "+grantTokenExchange+" is supported")
		return
	case fields["subject_token"] == "":
		writeError(w, 400, "invalid_request", "subject_token missing")
		return
	case fields["subject_token_type"] != typeIDToken && fields["subject_token_type"] != typeJWT:
		writeError(w, 400, "invalid_request", "subject_token_type must be "+typeIDToken+" or "+typeJWT)
		return
	}
	req := authority.ExchangeRequest{SubjectToken: fields["subject_token"], Scope: strings.Fields(fields["scope"]), Source: src}
	if s := fields["ttl"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n > 7*24*3600 {
			writeError(w, 400, "invalid_request", "ttl must be a positive number of seconds")
			return
		}
		req.TTL = time.Duration(n) * time.Second
	}
	// Charged only once the ID token verified and the policy admitted it:
	// a flood of tokens nobody could exchange, claiming an issuer, cannot
	// starve that issuer's real jobs (they are bounded per address).
	req.AllowIssuer = a.issuerRL.Allow
	tokenType := "Bearer"
	if proofs := r.Header.Values("DPoP"); len(proofs) > 0 {
		if len(proofs) > 1 || a.cfg.DPoP == nil {
			writeError(w, 400, "invalid_dpop_proof", "one DPoP proof expected")
			return
		}
		// Checked now, spent only once the ID token has verified (UseProof):
		// proofs sent with ID tokens nobody could exchange take no place
		// in the node's replay cache, which the gateway shares.
		p, err := a.cfg.DPoP.Check(proofs[0], r.Method, a.publicURL(r)+r.URL.Path, "", "")
		if err != nil {
			writeError(w, 400, "invalid_dpop_proof", "DPoP proof rejected: "+dpop.CheckOf(err))
			return
		}
		req.UseProof = func(ctx context.Context) error {
			err := a.cfg.DPoP.Record(ctx, p)
			if err == nil || errors.Is(err, failclosed.ErrUnavailable) {
				return err
			}
			return &authority.Error{Status: 400, Code: "invalid_dpop_proof", Description: "DPoP proof rejected: " + dpop.CheckOf(err)}
		}
		req.JKT = p.Thumbprint
		tokenType = "DPoP"
	}
	res, err := a.cfg.Authority.Exchange(r.Context(), req)
	if errors.Is(err, authority.ErrIssuerLimited) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many exchanges for this issuer")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tr := apitype.TokenResponse{
		AccessToken:     res.Token,
		IssuedTokenType: typeAccessToken,
		TokenType:       tokenType,
		ExpiresIn:       int64(res.ExpiresIn.Seconds()),
		Scope:           strings.Join(res.Scope, " "),
		LeaseID:         res.LeaseID,
	}
	for up, c := range res.Credentials {
		if tr.UpstreamCredentials == nil {
			tr.UpstreamCredentials = map[string]apitype.UpstreamCredential{}
		}
		tr.UpstreamCredentials[up] = apitype.UpstreamCredential{Token: c.Token, DSN: c.DSN, Username: c.Username,
			Password: c.Password, ExpiresAt: c.ExpiresAt.UTC().Format(time.RFC3339)}
	}
	writeJSON(w, 200, tr)
}

// publicURL is the scheme://host a DPoP proof's htu must name: from
// configuration, never from the request's Host alone.
func (a *API) publicURL(r *http.Request) string {
	if a.cfg.PublicURL != nil {
		return a.cfg.PublicURL(r)
	}
	return (&dpop.Origins{}).Of(r)
}

// bearer extracts a token from Authorization: Bearer|DPoP|token.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok {
		return ""
	}
	switch strings.ToLower(scheme) {
	case "bearer", "dpop", "token":
		return strings.TrimSpace(tok)
	}
	return ""
}

func (a *API) renew(w http.ResponseWriter, r *http.Request) {
	if !a.renewRL.Allow(clientip.RateKey(a.cfg.ClientAddr(r))) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many renewals from this address")
		return
	}
	tok := bearer(r)
	if tok == "" {
		writeError(w, http.StatusUnauthorized, "invalid_token", "a job token is required as Bearer")
		return
	}
	// A key-bound token renews only with a proof of its key. When the
	// store cannot say whether it is bound, nothing renews: Renew's own
	// lookup may succeed a moment later, without the proof.
	live, err := a.cfg.Leases.Lookup(r.Context(), tok)
	if err != nil && !errors.Is(err, lease.ErrUnknown) && !errors.Is(err, lease.ErrExpired) && !errors.Is(err, lease.ErrRevoked) && !errors.Is(err, lease.ErrUsedUp) {
		a.fail(w, r, fmt.Errorf("looking up the token to renew: %w", err))
		return
	}
	if live != nil && live.JKT != "" {
		// Exactly one proof (RFC 9449 §4.3), as the exchange and the
		// gateway ask: not the first of several.
		proofs := r.Header.Values("DPoP")
		if len(proofs) != 1 || proofs[0] == "" || a.cfg.DPoP == nil {
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
			writeError(w, http.StatusUnauthorized, "invalid_dpop_proof", "this token is bound to a key: exactly one DPoP proof is required")
			return
		}
		proof := proofs[0]
		if _, err := a.cfg.DPoP.VerifyContext(r.Context(), proof, r.Method, a.publicURL(r)+r.URL.Path, tok, live.JKT); err != nil {
			if errors.Is(err, failclosed.ErrUnavailable) {
				writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the DPoP replay check is unavailable")
				return
			}
			w.Header().Set("WWW-Authenticate", `DPoP error="invalid_dpop_proof"`)
			writeError(w, http.StatusUnauthorized, "invalid_dpop_proof", "DPoP proof rejected: "+dpop.CheckOf(err))
			return
		}
	}
	l, err := a.cfg.Authority.Renew(r.Context(), tok, a.cfg.ClientAddr(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	exp := l.ExpiresAt()
	writeJSON(w, 200, apitype.RenewResponse{
		LeaseID:   l.ID,
		ExpiresIn: int64(time.Until(exp).Seconds()),
		ExpiresAt: exp.Format(time.RFC3339),
		Scope:     strings.Join(l.Grants, " "),
	})
}

func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	// Refused before the body is read: unlimited, one address held as
	// many revocations open at once as its connections carry (HTTP/2: 250
	// streams each) and made the store read for made-up tokens at will.
	if !a.revokeRL.Allow(clientip.RateKey(a.cfg.ClientAddr(r))) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many revocations from this address")
		return
	}
	if !a.parseForm(w, r) {
		return
	}
	tok, ok := single(r, "token")
	if !ok {
		writeError(w, 400, "invalid_request", "token given more than once")
		return
	}
	if tok == "" {
		// RFC 7009 section 2.1: the token is required, in a form body.
		// One the server cannot read (JSON, the URL, a compressed body,
		// an empty value) must not be answered as revoked: its sender
		// would take a token that still works for dead.
		writeError(w, http.StatusBadRequest, "invalid_request",
			"token missing: send it in a form body (Content-Type: application/x-www-form-urlencoded, token=…); nothing was revoked")
		return
	}
	if err := a.cfg.Authority.RevokeToken(r.Context(), tok, a.cfg.ClientAddr(r), "revoked by holder"); err != nil {
		a.fail(w, r, err)
		return
	}
	// RFC 7009: 200 whether or not the token was known.
	w.WriteHeader(http.StatusOK)
}

func (a *API) leaks(w http.ResponseWriter, r *http.Request) {
	src := a.cfg.ClientAddr(r)
	if !a.leakRL.Allow(clientip.RateKey(src)) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many leak reports from this address")
		return
	}
	// Reports from every source share a budget of work per second and a
	// few turns, so that a flood from many addresses cannot take the node
	// from exchanges and the gateway. A report turned away here is never
	// parsed nor looked up (net/http discards its body to keep the
	// connection, which costs the node less than a new TLS handshake).
	key := clientip.RateKey(src)
	if !a.leakBudgetAllows(w, key) {
		return
	}
	if tooLong(w, r, a.cfg.Limits.MaxLeakBody, http.StatusRequestEntityTooLarge, "leak report too large") {
		return
	}
	// A report is read as sent: a compressed one would hide its tokens and
	// answer 200 with nothing revoked, which its sender takes as handled.
	if ce := r.Header.Values("Content-Encoding"); len(ce) > 1 || len(ce) == 1 && !strings.EqualFold(strings.TrimSpace(ce[0]), "identity") {
		writeError(w, http.StatusUnsupportedMediaType, "invalid_request", "leak reports are read as sent: send the body without a Content-Encoding (nothing was revoked)")
		return
	}
	// The body is read before a turn is taken: one trickling in (as slowly
	// as limits.min_body_rate allows, for up to 30 s) must not hold a
	// place in the shared queue. What one address reads at once is bounded
	// here instead, so its slow bodies cost only its own reports.
	if !a.leakReads.Enter(key) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many leak reports from this address at once")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxLeakBody))
	a.leakReads.Leave(key)
	// Reading and parsing cost about what looking a token up does per KiB.
	a.leakSpend(key, (len(body)+1023)/1024)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", "leak report too large")
		return
	}
	if !a.leakGate.enter() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many leak reports at once")
		return
	}
	if !a.leakGate.start(r.Context()) {
		return // the client went away
	}
	defer a.leakGate.done()
	// Checked again now that it is this report's turn: those that waited
	// while the budget was spent are turned away before any lookup.
	if !a.leakBudgetAllows(w, key) {
		return
	}
	// A signature that does not verify does not stop the report: an
	// unsigned one is taken, so refusing it would stop no one, and would
	// keep alive the tokens of a genuine report that GitHub signed with a
	// key not configured yet, or whose body a proxy re-encoded.
	signature := ""
	if a.cfg.VerifyLeakSignature != nil {
		switch signed, err := a.cfg.VerifyLeakSignature(r, body); {
		case err != nil:
			signature = "invalid"
			a.cfg.Logger.Warn("a leak report's signature does not verify; the report is taken as unsigned", "err", err)
		case signed:
			signature = "verified"
		}
	}
	toks, source, url, err := a.cfg.ParseLeakReport(body)
	if errors.Is(err, ErrLeakReportTooLarge) || (err == nil && len(toks) > a.cfg.Limits.MaxLeakTokens) {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request",
			fmt.Sprintf("leak report holds more than %d tokens: nothing was revoked; send them in smaller reports", a.cfg.Limits.MaxLeakTokens))
		return
	}
	if err != nil {
		writeError(w, 400, "invalid_request", "malformed leak report: "+err.Error())
		return
	}
	a.leakSpend(key, len(toks)-(len(body)+1023)/1024)
	// Taken whole, the report is worked through even if its sender hangs
	// up: a reporter killed by its job's timeout must not leave the leaked
	// tokens live. Bounded, as a request would be.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), leakWorkTimeout)
	defer cancel()
	res, err := a.cfg.Authority.Leak(ctx, toks, authority.LeakOrigin{Source: source, URL: url, Signature: signature}, src)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := apitype.LeakResponse{Revoked: make([]apitype.RevokedLease, 0, len(res.Revoked)), AlreadyRevoked: res.AlreadyRevoked, Unknown: res.Unknown}
	for _, l := range res.Revoked {
		out.Revoked = append(out.Revoked, apitype.RevokedLease{LeaseID: l.LeaseID, Hint: l.Hint})
	}
	for _, t := range res.RevokedAdmin {
		out.RevokedAdmin = append(out.RevokedAdmin, apitype.RevokedAdminToken{Hint: t.Hint})
	}
	for _, x := range res.RevokedSessions {
		out.RevokedSessions = append(out.RevokedSessions, apitype.RevokedSession{ID: x.ID})
	}
	a.metrics.countLeaks(len(res.Revoked)+len(res.RevokedAdmin)+len(res.RevokedSessions), res.AlreadyRevoked, res.Unknown)
	writeJSON(w, 200, out)
}

// leakWorkTimeout bounds the work on one leak report once it is read,
// whether or not its sender still waits for the answer.
const leakWorkTimeout = 30 * time.Second

// leakBudgetAllows answers 429, saying when to come back, when leak
// reports have spent limits.leak_token_rate, or those from key their
// share of it.
func (a *API) leakBudgetAllows(w http.ResponseWriter, key string) bool {
	now := time.Now()
	wait := max(a.leakBudget.wait(now), a.leakShare.Wait(key, now))
	if wait <= 0 {
		return true
	}
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	writeError(w, http.StatusTooManyRequests, "rate_limited", "leak reports are arriving faster than this server works on them; retry later")
	return false
}

// leakSpend charges n to the budget and to key's share of it.
func (a *API) leakSpend(key string, n int) {
	now := time.Now()
	a.leakBudget.spend(now, n)
	a.leakShare.Spend(key, now, n)
}

func (a *API) introspect(w http.ResponseWriter, r *http.Request, c caller) {
	if !a.parseForm(w, r) {
		return
	}
	tok, _ := single(r, "token")
	l, err := a.cfg.Leases.Lookup(r.Context(), tok)
	if errors.Is(err, failclosed.ErrUnavailable) {
		a.fail(w, r, err)
		return
	}
	if err != nil || l == nil {
		writeJSON(w, 200, apitype.Introspection{Active: false})
		return
	}
	out := apitype.Introspection{
		Active:    true,
		LeaseID:   l.ID,
		Scope:     strings.Join(l.Grants, " "),
		Issuer:    l.Issuer,
		Subject:   l.Subject,
		Job:       l.Job,
		IssuedAt:  l.IssuedAt.Unix(),
		ExpiresAt: l.ExpiresAt().Unix(),
		TokenType: "Bearer",
		Uses:      l.Uses(),
	}
	if l.JKT != "" {
		out.TokenType = "DPoP"
		out.Cnf = &apitype.Confirmation{JKT: l.JKT}
	}
	writeJSON(w, 200, out)
}
