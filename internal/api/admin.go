package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// caller is an authenticated admin.
type caller struct {
	Name   string
	Role   string
	Source netip.Addr
}

// admin gates a control-plane handler: network first (403, not even a
// token check from outside admin_cidrs), then mTLS when configured, then
// the token (401) and its role (403). Denials are audited.
func (a *API) admin(role string, fn func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		src := a.cfg.ClientAddr(r)
		deny := func(status int, code, desc, reason string) {
			// Each denial is a durable audit entry: bound how fast one
			// address can make them (authenticated callers are not limited).
			if !a.adminRL.allow(src.String()) {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusTooManyRequests, "rate_limited", "too many refused control-plane requests from this address")
				return
			}
			a.cfg.Audit.Append(r.Context(), audit.Event{Type: "admin.denied", Source: src.String(), Method: r.Method,
				Path: r.URL.Path, Status: status, Reason: reason})
			writeError(w, status, code, desc)
		}
		if !a.adminAllowed(src) {
			deny(http.StatusForbidden, "forbidden", "the control plane is not reachable from this address", "address not in admin_cidrs")
			return
		}
		if a.cfg.AdminClientCAs != nil {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				deny(http.StatusForbidden, "forbidden", "a client certificate is required for admin calls", "no client certificate")
				return
			}
		}
		tok := bearer(r)
		if tok == "" {
			deny(http.StatusUnauthorized, "invalid_token", "an admin token is required", "no token")
			return
		}
		t, err := a.cfg.Admins.Authenticate(r.Context(), tok)
		if errors.Is(err, authority.ErrBadCredentials) {
			deny(http.StatusUnauthorized, "invalid_token", "admin token not valid", "bad token")
			return
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if authority.RoleRank(t.Role) < authority.RoleRank(role) {
			a.cfg.Audit.Append(r.Context(), audit.Event{Type: "admin.denied", Admin: t.Name, Role: t.Role, Source: src.String(),
				Method: r.Method, Path: r.URL.Path, Status: 403, Reason: "role too weak"})
			writeError(w, http.StatusForbidden, "insufficient_scope", "this needs the "+role+" role")
			return
		}
		fn(w, r, caller{Name: t.Name, Role: t.Role, Source: src})
	}
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
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.cfg.Limits.MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "malformed JSON body")
		return false
	}
	return true
}

type leaseJSON struct {
	LeaseID   string            `json:"lease_id"`
	Issuer    string            `json:"issuer"`
	Subject   string            `json:"subject"`
	Job       string            `json:"job"`
	Claims    map[string]string `json:"claims,omitempty"`
	Grants    []string          `json:"grants"`
	IssuedAt  time.Time         `json:"issued_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	MaxExpiry time.Time         `json:"max_expires_at"`
	Source    string            `json:"source,omitempty"`
	BindIP    bool              `json:"bind_source_ip"`
	DPoP      bool              `json:"dpop"`
	Uses      int64             `json:"uses"`
	RevokedAt *time.Time        `json:"revoked_at,omitempty"`
	Reason    string            `json:"revoke_reason,omitempty"`
}

func (a *API) listLeases(w http.ResponseWriter, r *http.Request, c caller) {
	q := r.URL.Query()
	f := store.LeaseFilter{Grant: q.Get("grant"), Issuer: q.Get("issuer"), Subject: q.Get("subject"), Job: q.Get("job"), Limit: 1000}
	if q.Get("active") == "true" {
		f.LiveAt = time.Now()
	}
	if n, ok := queryInt(r, "limit", 1000); ok && n > 0 && n <= 10000 {
		f.Limit = int(n)
	}
	ls, err := a.cfg.Leases.List(r.Context(), f)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]leaseJSON, 0, len(ls))
	for _, l := range ls {
		j := leaseJSON{LeaseID: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job, Claims: l.Claims, Grants: l.Grants,
			IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, MaxExpiry: l.MaxExpiresAt, Source: l.Source, BindIP: l.BindSource,
			DPoP: l.JKT != "", Uses: l.Uses, Reason: l.RevokeReason}
		if live, ok := a.cfg.Leases.Get(l.ID); ok {
			j.Uses = max(j.Uses, live.Uses())
		}
		if !l.RevokedAt.IsZero() {
			t := l.RevokedAt
			j.RevokedAt = &t
		}
		out = append(out, j)
	}
	writeJSON(w, 200, map[string]any{"leases": out})
}

func (a *API) revokeLeases(w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		LeaseID string `json:"lease_id"`
		Grant   string `json:"grant"`
		Issuer  string `json:"issuer"`
		Subject string `json:"subject"`
		Job     string `json:"job"`
	}
	if !a.readJSON(w, r, &body) {
		return
	}
	f := store.LeaseFilter{ID: body.LeaseID, Grant: body.Grant, Issuer: body.Issuer, Subject: body.Subject, Job: body.Job}
	if f.ID == "" && f.Grant == "" && f.Issuer == "" && f.Subject == "" && f.Job == "" {
		writeError(w, 400, "invalid_request", "name a lease_id or a filter (grant, issuer, subject, job)")
		return
	}
	n, err := a.cfg.Authority.RevokeLeases(r.Context(), f, c.Name, c.Source)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]int{"revoked": n})
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
	writeJSON(w, 200, map[string]any{"secrets": list})
}

func (a *API) showSecret(w http.ResponseWriter, r *http.Request, c caller) {
	m, err := a.cfg.Secrets.Meta(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, m)
}

func (a *API) putSecret(w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Value *string `json:"value"`
	}
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
	// Audit first: a write that cannot be recorded does not happen. The
	// entry names the secret, never its value; the version is known after.
	if _, err := a.cfg.Audit.Append(r.Context(), audit.Event{Type: audit.TypeSecretWrite, Admin: c.Name, Source: c.Source.String(), Secret: name, Status: 200}); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.cfg.Secrets.Put(r.Context(), name, []byte(*body.Value))
	if errors.Is(err, ErrInvalidSecret) {
		writeError(w, 400, "invalid_request", "secret name must be 1-128 of A-Z a-z 0-9 . _ - (starting with a letter or digit) and the value 1 byte to 64 KiB")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]any{"name": name, "version": v})
}

func (a *API) deleteSecret(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if _, err := a.cfg.Audit.Append(r.Context(), audit.Event{Type: audit.TypeSecretWrite, Admin: c.Name, Source: c.Source.String(), Secret: name, Status: 200, Reason: "delete"}); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.cfg.Secrets.Delete(r.Context(), name); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]any{"name": name, "deleted": true})
}

func (a *API) rotateMasterKey(w http.ResponseWriter, r *http.Request, c caller) {
	// Audit first: a rotation that cannot be recorded does not happen.
	if _, err := a.cfg.Audit.Append(r.Context(), audit.Event{Type: audit.TypeKeyRotate, Admin: c.Name, Source: c.Source.String(), Status: 200}); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.cfg.Secrets.RotateMasterKey(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]int{"version": v})
}

func (a *API) readPolicy(w http.ResponseWriter, r *http.Request) ([]policy.File, bool) {
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
	w.Header().Set("Mayfly-Policy-Version", itoa(a.cfg.Authority.PolicyVersion()))
	w.Header().Set("Mayfly-Policy-Hash", p.Hash)
	w.WriteHeader(200)
	w.Write(p.Source)
}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	files, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	res, err := a.cfg.Authority.ApplyPolicy(r.Context(), files, c.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]any{"version": res.Version, "hash": res.Hash, "changes": changeStrings(res.Changes),
		"unchanged": res.Unchanged, "revoked": res.Revoked})
}

func (a *API) planPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	files, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	cs, err := a.cfg.Authority.Plan(r.Context(), files)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]any{"changes": changeStrings(cs)})
}

func (a *API) createAdmin(w http.ResponseWriter, r *http.Request, c caller) {
	var body struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !a.readJSON(w, r, &body) {
		return
	}
	tok, err := a.cfg.Admins.Create(r.Context(), body.Name, body.Role, c.Name, c.Source)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]string{"name": body.Name, "role": body.Role, "token": tok})
}

func (a *API) listAdmins(w http.ResponseWriter, r *http.Request, c caller) {
	list, err := a.cfg.Admins.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	type item struct {
		Name      string     `json:"name"`
		Role      string     `json:"role"`
		CreatedAt time.Time  `json:"created_at"`
		RevokedAt *time.Time `json:"revoked_at,omitempty"`
	}
	out := make([]item, 0, len(list))
	for _, t := range list {
		it := item{Name: t.Name, Role: t.Role, CreatedAt: t.CreatedAt}
		if !t.RevokedAt.IsZero() {
			rt := t.RevokedAt
			it.RevokedAt = &rt
		}
		out = append(out, it)
	}
	writeJSON(w, 200, map[string]any{"tokens": out})
}

func (a *API) deleteAdmin(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if err := a.cfg.Admins.Revoke(r.Context(), name, c.Name, c.Source); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, 200, map[string]any{"name": name, "revoked": true})
}
