package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/rotate"
	"github.com/mayfly-sh/mayfly/internal/secret"
)

// caller is an authenticated admin.
type caller struct {
	Name   string
	Role   string
	Source netip.Addr
	// session and via: the session's id and how it signed in, when the
	// caller is a signed-in human (admin_oidc) rather than a token.
	session, via string
	// subject is the identity provider's subject of the human the caller
	// acts for: the session's, or the maker of the token (""; none).
	subject string
}

// admin gates a control-plane handler: network first (403, not even a
// token check from outside admin_cidrs), then mTLS when configured, then
// the token (401) and its role (403). Denials are audited.
//
// A request with a body passes the gate again once its body has arrived,
// which may take up to the control plane's read deadline: a token or
// session revoked meanwhile must not act then (whoever stole it would keep
// such a request open, to finish it once revoked).
//
// limit is the largest body the handler reads: one declared larger is left
// to the handler, which refuses it on its headers, before it arrives.
func (a *API) admin(role string, limit int64, fn func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := a.adminGate(role, w, r)
		if !ok {
			return
		}
		if hasBody(r) && r.ContentLength <= limit {
			if err := awaitBody(r, limit); err != nil {
				writeError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
				return
			}
			if c, ok = a.adminGate(role, w, r); !ok {
				return
			}
		}
		fn(w, r, c)
	}
}

func hasBody(r *http.Request) bool { return r.Body != nil && r.Body != http.NoBody }

// awaitBody reads r's body into memory, up to limit bytes and one more
// (the rest, if any, is left for the handler to refuse), so that the
// caller can be checked again once it has arrived.
func awaitBody(r *http.Request, limit int64) error {
	got, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	r.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(got), r.Body), Closer: r.Body}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// adminGate runs admin's checks; when one refuses, it has answered and ok
// is false.
func (a *API) adminGate(role string, w http.ResponseWriter, r *http.Request) (caller, bool) {
	src := a.cfg.ClientAddr(r)
	// Each denial is a durable audit entry: limited answers 429 once an
	// address has made them too fast (authenticated callers are not
	// limited).
	limited := func() bool {
		if a.adminRL.Allow(clientip.RateKey(src)) {
			return false
		}
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many refused control-plane requests from this address")
		return true
	}
	deny := func(status int, code, desc, reason, check string) {
		if limited() {
			return
		}
		if err := a.cfg.Admins.Deny(r.Context(), authority.Denial{Source: src, Method: r.Method, Path: r.URL.Path, Status: status, Reason: reason}); err != nil {
			a.fail(w, r, err)
			return
		}
		writeErrorBody(w, status, apitype.Error{Error: code, Description: desc, Check: check})
	}
	// tooWeak refuses (403, audited) an authenticated caller (name, with
	// the role has) below the handler's role; who names it in the answer.
	tooWeak := func(name, has, who string) bool {
		if authority.RoleRank(has) >= authority.RoleRank(role) {
			return false
		}
		if err := a.cfg.Admins.Deny(r.Context(), authority.Denial{Admin: name, Role: has, Source: src, Method: r.Method,
			Path: r.URL.Path, Status: http.StatusForbidden, Reason: authority.DeniedRole}); err != nil {
			a.fail(w, r, err)
			return true
		}
		writeErrorBody(w, http.StatusForbidden, apitype.Error{Error: "insufficient_scope",
			Description: "this needs the " + role + " role; " + who + " has the " + has + " role", Check: apitype.CheckRole})
		return true
	}
	// Each refusal names the check that failed, so that a client can
	// say what to fix; none says more than the caller already knows.
	if !a.adminAllowed(src) {
		deny(http.StatusForbidden, "forbidden", "the control plane is not reachable from "+src.String()+" (not in the server's admin_cidrs)",
			authority.DeniedNetwork, apitype.CheckNetwork)
		return caller{}, false
	}
	if a.cfg.AdminClientCAs != nil {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			deny(http.StatusForbidden, "forbidden", "admin calls need a client certificate from the server's admin client CA, and none was presented",
				authority.DeniedNoCert, apitype.CheckClientCertificate)
			return caller{}, false
		}
	}
	if p, ok := a.presentedSession(r); ok {
		c, row, status, reason, desc, err := a.sessionCaller(r, p)
		if err != nil {
			a.fail(w, r, err)
			return caller{}, false
		}
		if status != 0 {
			if limited() {
				return caller{}, false
			}
			if err := a.denySession(r, row, status, reason); err != nil {
				a.fail(w, r, err)
				return caller{}, false
			}
			code := "invalid_token"
			if status == http.StatusForbidden {
				code = "forbidden"
			}
			writeErrorBody(w, status, apitype.Error{Error: code, Description: desc, Check: apitype.CheckToken})
			return caller{}, false
		}
		if tooWeak(c.Name, c.Role, c.Name) {
			return caller{}, false
		}
		return c, true
	}
	tok := bearer(r)
	if tok == "" {
		deny(http.StatusUnauthorized, "invalid_token", "an admin token is required (Authorization: Bearer mfya_…)", authority.DeniedNoToken, apitype.CheckToken)
		return caller{}, false
	}
	t, err := a.cfg.Admins.Authenticate(r.Context(), tok)
	if errors.Is(err, authority.ErrExpired) {
		deny(http.StatusUnauthorized, "invalid_token", "admin token "+strconv.Quote(t.Name)+" expired at "+t.ExpiresAt.UTC().Format(time.RFC3339)+"; ask an admin for a new one",
			authority.DeniedExpired, apitype.CheckToken)
		return caller{}, false
	}
	if errors.Is(err, authority.ErrBadCredentials) {
		deny(http.StatusUnauthorized, "invalid_token", "the admin token is not valid (unknown or revoked)", authority.DeniedBadToken, apitype.CheckToken)
		return caller{}, false
	}
	if err != nil {
		a.fail(w, r, err)
		return caller{}, false
	}
	if tooWeak(t.Name, t.Role, "admin token "+strconv.Quote(t.Name)) {
		return caller{}, false
	}
	return caller{Name: t.Name, Role: t.Role, Source: src, subject: t.CreatorSubject}, true
}

func (a *API) adminAllowed(src netip.Addr) bool {
	for _, p := range a.cfg.AdminCIDRs {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (a *API) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if tooLong(w, r, a.cfg.Limits.MaxBody, http.StatusBadRequest, "malformed JSON body: too large") {
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed JSON body")
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed JSON body")
		return false
	}
	// What encoding/json took without a word, another reader of the
	// request could take otherwise (checkStrictJSON).
	if err := checkStrictJSON(b); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

func (a *API) listLeases(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	f := lease.Filter{Grant: q.Get("grant"), Issuer: q.Get("issuer"), Subject: q.Get("subject"), Job: q.Get("job")}
	if !plainText(f.Grant, f.Issuer, f.Subject, f.Job) {
		writeError(w, 400, "invalid_request", "grant, issuer, subject and job must be UTF-8 text without NUL characters")
		return
	}
	if q.Get("active") == "true" {
		f.LiveAt = time.Now()
	}
	n, ok := queryInt(r, "limit", apitype.DefaultLeasePage)
	if !ok || n == 0 {
		writeError(w, 400, "invalid_request", "limit must be a positive integer")
		return
	}
	limit := int(min(n, apitype.MaxLeasePage))
	if s := q.Get("cursor"); s != "" {
		cur, err := parseLeaseCursor(s)
		if err != nil {
			writeError(w, 400, "invalid_request", "malformed cursor: pass next_cursor from a previous page as it is")
			return
		}
		f.After = &cur
	}
	// One more than a page says whether another page follows: a listing is
	// never cut short without saying so.
	f.Limit = limit + 1
	ls, err := a.cfg.Leases.List(r.Context(), f)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := apitype.LeaseList{Leases: make([]apitype.Lease, 0, min(len(ls), limit))}
	if len(ls) > limit {
		ls = ls[:limit]
		last := ls[limit-1]
		out.NextCursor = formatLeaseCursor(lease.Cursor{IssuedAt: last.IssuedAt, ID: last.ID})
	}
	for _, l := range ls {
		j := apitype.Lease{LeaseID: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job, Claims: l.Claims, Grants: l.Grants,
			IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, MaxExpiry: l.MaxExpiresAt, Source: l.Source, BindIP: l.BindSource,
			DPoP: l.JKT != "", Uses: l.Uses, Reason: l.RevokeReason}
		if live, ok := a.cfg.Leases.Get(l.ID); ok {
			j.Uses = max(j.Uses, live.Uses())
		}
		if !l.RevokedAt.IsZero() {
			t := l.RevokedAt
			j.RevokedAt = &t
		}
		out.Leases = append(out.Leases, j)
	}
	writeJSON(w, 200, out)
}

func (a *API) revokeLeases(w http.ResponseWriter, r *http.Request, c caller) {
	var body apitype.RevokeLeasesRequest
	if !a.readJSON(w, r, &body) {
		return
	}
	f := lease.Filter{ID: body.LeaseID, Grant: body.Grant, Issuer: body.Issuer, Subject: body.Subject, Job: body.Job}
	if f.ID == "" && f.Grant == "" && f.Issuer == "" && f.Subject == "" && f.Job == "" {
		writeError(w, 400, "invalid_request", "name a lease_id or a filter (grant, issuer, subject, job)")
		return
	}
	if !plainText(f.ID, f.Grant, f.Issuer, f.Subject, f.Job) {
		writeError(w, 400, "invalid_request", "lease_id, grant, issuer, subject and job must be UTF-8 text without NUL characters")
		return
	}
	n, err := a.cfg.Authority.RevokeLeases(r.Context(), f, c.Name, c.Source)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.RevokeLeasesResponse{Revoked: n})
}

// plainText reports whether each s is valid UTF-8 without a NUL. PostgreSQL
// refuses other text with an error rather than matching nothing, so such a
// value is refused here and both backends answer alike.
func plainText(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return false
		}
	}
	return true
}

func (a *API) listSecrets(w http.ResponseWriter, r *http.Request, c caller) {
	list, err := a.cfg.Secrets.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if list == nil {
		list = []SecretMeta{}
	}
	writeJSON(w, 200, apitype.SecretList{Secrets: list})
}

func (a *API) showSecret(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if secret.ValidateName(name) != nil {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
		return
	}
	m, err := a.cfg.Secrets.Meta(r.Context(), name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, m)
}

func (a *API) putSecret(w http.ResponseWriter, r *http.Request, c caller) {
	var body apitype.SecretPutRequest
	if !a.readJSON(w, r, &body) {
		return
	}
	if body.Value == nil || *body.Value == "" {
		writeError(w, 400, "invalid_request", `body must be {"value":"…"} with a non-empty value`)
		return
	}
	name := r.PathValue("name")
	if secret.ValidateName(name) != nil || len(*body.Value) > secret.MaxValueSize {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit) and the value 1 byte to 64 KiB")
		return
	}
	v, err := a.cfg.Authority.PutSecretRotating(r.Context(), c.Name, c.Role, c.Source, name, []byte(*body.Value), body.Rotate)
	if errors.Is(err, ErrInvalidSecret) {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit) and the value 1 byte to 64 KiB")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.SecretPutResponse{Name: name, Version: v})
}

// rotateSecret rotates a secret now. A failed rotation is 502 with why (the
// current value still works); one already running, or one an admin's
// write or delete of the secret overtook, is 409.
func (a *API) rotateSecret(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if secret.ValidateName(name) != nil {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
		return
	}
	res, err := a.cfg.Authority.RotateSecret(r.Context(), c.Name, c.Source, name)
	switch {
	case errors.Is(err, rotate.ErrNoRotation):
		writeError(w, 409, "no_rotation", fmt.Sprintf("secret %q has no rotation: set one with mayfly secret put %s --rotate-every 24h --rotate-command ROTATOR (or --rotate-postgres-role ROLE) and the value, or PUT /v1/secrets/%s with a \"rotate\" object", name, name, name))
	case errors.Is(err, rotate.ErrBusy):
		writeError(w, 409, "conflict", fmt.Sprintf("a rotation of %q is already running (on this node or another)", name))
	case errors.Is(err, rotate.ErrChanged):
		writeError(w, 409, "conflict", err.Error())
	case errors.Is(err, rotate.ErrFailed):
		writeError(w, 502, "rotation_failed", err.Error()+" (the current value is still in use)")
	case errors.Is(err, failclosed.ErrUnavailable):
		a.fail(w, r, err)
	case errors.Is(err, secret.ErrNotFound):
		writeError(w, 404, "not_found", "not found")
	case err != nil:
		a.fail(w, r, err)
	default:
		writeJSON(w, 200, apitype.SecretRotateResponse{Name: name, Version: res.Version, NextAt: res.NextAt.UTC(), GraceUntil: res.GraceEnd.UTC()})
	}
}

func (a *API) deleteSecret(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if secret.ValidateName(name) != nil {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
		return
	}
	if err := a.cfg.Authority.DeleteSecret(r.Context(), c.Name, c.Source, name); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.SecretDeleteResponse{Name: name, Deleted: true})
}

func (a *API) rotateMasterKey(w http.ResponseWriter, r *http.Request, c caller) {
	v, err := a.cfg.Authority.RotateMasterKey(r.Context(), c.Name, c.Source)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.RotateMasterKeyResponse{Version: v})
}

func (a *API) readPolicy(w http.ResponseWriter, r *http.Request) ([]policy.File, bool) {
	if tooLong(w, r, a.cfg.Limits.MaxPolicyBody, http.StatusRequestEntityTooLarge, "policy too large") {
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxPolicyBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", "policy too large")
		return nil, false
	}
	return []policy.File{{Name: "policy.yaml", Data: b}}, true
}

func changeStrings(cs []policy.Change) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

func (a *API) getPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	p := a.cfg.Authority.Policy()
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set(apitype.HeaderPolicyVersion, itoa(a.cfg.Authority.PolicyVersion()))
	w.Header().Set(apitype.HeaderPolicyHash, p.Hash)
	w.WriteHeader(200)
	w.Write(p.Source)
}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	files, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	// A version that removes grants with live tokens revokes them: only when
	// the request says so (an empty file must not wipe the server quietly).
	allow := queryTrue(r, "allow_revoke")
	if !allow {
		p, err := a.cfg.Authority.ParsePolicy(r.Context(), files)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		revs, err := a.cfg.Authority.Revocations(r.Context(), p)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if len(revs) > 0 {
			refuseRevocations(w, revs)
			return
		}
	}
	// Checked again by the apply itself: a token may be issued meanwhile.
	res, err := a.cfg.Authority.ApplyPolicyConfirmed(r.Context(), files, c.Name, -1, allow)
	if nc := (*authority.RevocationNotConfirmed)(nil); errors.As(err, &nc) {
		refuseRevocations(w, nc.Revokes)
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.PolicyApplyResponse{Version: res.Version, Hash: res.Hash, Changes: changeStrings(res.Changes),
		Unchanged: res.Unchanged, Revoked: res.Revoked})
}

// refuseRevocations answers an apply that would revoke live tokens
// unconfirmed: 409 revocation_not_confirmed, nothing applied.
func refuseRevocations(w http.ResponseWriter, revs []authority.GrantRevocation) {
	n, names := 0, make([]string, 0, len(revs))
	for _, rv := range revs {
		n += rv.Leases
		names = append(names, fmt.Sprintf("%s: %d", rv.Grant, rv.Leases))
	}
	writeJSON(w, http.StatusConflict, apitype.PolicyRevocationRefused{Error: apitype.Error{Error: "revocation_not_confirmed",
		Description: fmt.Sprintf("nothing applied: this policy removes grants with %d live token(s) (%s), which applying it revokes; "+
			"send it again with ?allow_revoke=true (mayfly policy apply --yes) to apply it and revoke them", n, strings.Join(names, ", "))},
		Revokes: revocations(revs)})
}

func (a *API) planPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	files, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	p, err := a.cfg.Authority.ParsePolicy(r.Context(), files)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	cs, err := a.cfg.Authority.Plan(r.Context(), files)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	revs, err := a.cfg.Authority.Revocations(r.Context(), p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.PolicyPlanResponse{Changes: changeStrings(cs), Revokes: revocations(revs)})
}

func (a *API) createAdmin(w http.ResponseWriter, r *http.Request, c caller) {
	var body apitype.AdminTokenCreateRequest
	if !a.readJSON(w, r, &body) {
		return
	}
	if body.TTLSeconds < 0 || body.TTLSeconds > math.MaxInt64/int64(time.Second) {
		writeError(w, http.StatusBadRequest, "invalid_request", "ttl_seconds must be a positive number of seconds")
		return
	}
	tok, expires, err := a.cfg.Admins.CreateBy(r.Context(), body.Name, body.Role, time.Duration(body.TTLSeconds)*time.Second, c.Name, c.subject, c.Source)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.AdminTokenCreated{Name: body.Name, Role: body.Role, Token: tok, ExpiresAt: expires})
}

func (a *API) listAdmins(w http.ResponseWriter, r *http.Request, c caller) {
	list, err := a.cfg.Admins.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]apitype.AdminToken, 0, len(list))
	for _, t := range list {
		it := apitype.AdminToken{Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt,
			RevokedAt: timeOrNil(t.RevokedAt), ExpiresAt: timeOrNil(t.ExpiresAt), LastUsedAt: timeOrNil(t.LastUsedAt)}
		out = append(out, it)
	}
	writeJSON(w, 200, apitype.AdminTokenList{Tokens: out})
}

func (a *API) deleteAdmin(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if err := a.cfg.Admins.Revoke(r.Context(), name, c.Name, c.Source); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, apitype.AdminTokenRevokeResponse{Name: name, Revoked: true})
}

// timeOrNil is t, or nil when it is zero (not set).
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// queryTrue reads a boolean query parameter: "true" or "1".
func queryTrue(r *http.Request, name string) bool {
	v := r.URL.Query().Get(name)
	return v == "true" || v == "1"
}

func revocations(revs []authority.GrantRevocation) []apitype.PolicyRevocation {
	out := make([]apitype.PolicyRevocation, 0, len(revs))
	for _, r := range revs {
		out = append(out, apitype.PolicyRevocation{Grant: r.Grant, Leases: r.Leases})
	}
	return out
}
