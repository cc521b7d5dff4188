package authority

import (
	"bytes"
	"context"
	"errors"
	"net/netip"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/rotate"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// SecretWriter changes stored secrets and the master key (the server's
// adapter of secret.Vault). Each change writes n, its audit record, in its
// own store transaction (store.Note), so that the change and its entry
// commit together or not at all; Put's rc (nil: none), a change of the
// secret's rotation, is written in that transaction too. RotateMasterKey's
// rotated is false when another node added the version first (nothing
// changed, nothing was written). Its errors pass through unchanged, except
// that a failure of the record wraps store.ErrNoteFailed.
type SecretWriter interface {
	Put(ctx context.Context, name string, value []byte, rc *store.RotationChange, n *store.Note) (version int, err error)
	Delete(ctx context.Context, name string, n *store.Note) error
	RotateMasterKey(ctx context.Context, n *store.Note) (version int, rotated bool, err error)
}

// Rotations validates, sets and runs secrets' rotations (*rotate.Manager).
// Change is the store's form of secret name's setting (nil spec:
// removed), authenticated (its MAC), written with the value it comes with. Rotate audits each attempt itself (the
// schedule runs it too).
type Rotations interface {
	Parse(ctx context.Context, name string, raw []byte, admin bool) (rotate.Spec, error)
	Change(name string, s *rotate.Spec) (*store.RotationChange, error)
	Rotate(ctx context.Context, name, by, source string) (rotate.Result, error)
}

// PutSecret stores a new version of a secret for an admin. The write and
// its entry commit together: a write that cannot be recorded does not
// happen (503), and a write that fails leaves no entry. The entry names the
// secret, never its value.
func (a *Authority) PutSecret(ctx context.Context, admin string, source netip.Addr, name string, value []byte) (int, error) {
	return a.PutSecretRotating(ctx, admin, "", source, name, value, nil)
}

// PutSecretRotating is PutSecret that also sets the secret's rotation from
// rotateJSON (the API's "rotate"): nil leaves it as it was, JSON null
// removes it. Settings are validated before anything is written: a bad
// one is a 400 refusal, and one that role may not give (rotate.ErrNeedsAdmin)
// a 403; either changes nothing.
func (a *Authority) PutSecretRotating(ctx context.Context, admin, role string, source netip.Addr, name string, value, rotateJSON []byte) (int, error) {
	if CredentialShaped(name) {
		// A credential passed as the name would be kept in the secret's
		// row and its audit entry; not quoted back either.
		return 0, refuse(400, "invalid_request", "the secret name must not be a token, password or session value (pass the name, and the value in the body)")
	}
	var spec *rotate.Spec
	remove := bytes.Equal(bytes.TrimSpace(rotateJSON), []byte("null"))
	ev := audit.Event{Type: audit.TypeSecretWrite, Admin: admin, Source: addrString(source), Secret: name, Status: 200}
	if rotateJSON != nil && !remove {
		if a.cfg.Rotations == nil {
			return 0, refuse(400, "invalid_request", "this server does not rotate secrets")
		}
		s, err := a.cfg.Rotations.Parse(ctx, name, rotateJSON, role == RoleAdmin)
		if errors.Is(err, rotate.ErrNeedsAdmin) {
			// A role too weak for a setting is refused as one too weak for
			// the endpoint is: recorded first.
			ev.Status, ev.Reason = 403, DeniedRole
			ev.Detail = map[string]any{"rotate_via": "postgres_password"}
			if _, err := a.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
				return 0, unavailable("audit secret write refusal", err)
			}
			return 0, refuse(403, "forbidden", "%v", err)
		}
		if err != nil {
			return 0, refuse(400, "invalid_request", "%v", err)
		}
		spec = &s
		ev.Detail = map[string]any{"rotate_every": s.Every, "rotate_via": s.Kind(), "rotate_grace": rotate.Duration(s.GraceOrDefault())}
	} else if remove {
		ev.Detail = map[string]any{"rotate": "removed"}
	}
	// The rotation is written in the value's transaction: the entry names
	// both, so neither may stand without the other.
	var rc *store.RotationChange
	if (spec != nil || remove) && a.cfg.Rotations != nil {
		c, err := a.cfg.Rotations.Change(name, spec)
		if err != nil {
			return 0, unavailable("set the rotation of "+name, err)
		}
		rc = c
	}
	since := a.cfg.Audit.Size()
	note := noted(a.cfg.Audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	v, err := a.cfg.Secrets.Put(ctx, name, value, rc, note)
	if err != nil {
		return v, noteFailed("audit secret write", err)
	}
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	return v, nil
}

// RotateSecret rotates a secret now for an admin (POST
// /v1/secrets/{name}/rotate). The attempt is audited by the rotation
// itself, before it starts and when it ends.
func (a *Authority) RotateSecret(ctx context.Context, admin string, source netip.Addr, name string) (rotate.Result, error) {
	if a.cfg.Rotations == nil {
		return rotate.Result{}, refuse(400, "invalid_request", "this server does not rotate secrets")
	}
	return a.cfg.Rotations.Rotate(ctx, name, admin, addrString(source))
}

// DeleteSecret deletes a secret for an admin; the delete and its entry
// commit together (a delete that finds nothing leaves no entry).
func (a *Authority) DeleteSecret(ctx context.Context, admin string, source netip.Addr, name string) error {
	ev := audit.Event{Type: audit.TypeSecretWrite, Admin: admin, Source: addrString(source), Secret: name, Status: 200, Reason: "delete"}
	since := a.cfg.Audit.Size()
	note := noted(a.cfg.Audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	if err := a.cfg.Secrets.Delete(ctx, name, note); err != nil {
		return noteFailed("audit secret delete", err)
	}
	settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	return nil
}

// RotateMasterKey starts a new master-key version for an admin; the new
// version and its entry commit together: a rotation that cannot be
// recorded does not happen. When another node rotated at the same moment
// its version is used, and recorded by an entry of its own for this
// request (as an ordinary one, awaited before the answer).
func (a *Authority) RotateMasterKey(ctx context.Context, admin string, source netip.Addr) (int, error) {
	ev := audit.Event{Type: audit.TypeKeyRotate, Admin: admin, Source: addrString(source), Status: 200}
	since := a.cfg.Audit.Size()
	note := noted(a.cfg.Audit, func(store.Changes) []audit.Event { return []audit.Event{ev} })
	v, rotated, err := a.cfg.Secrets.RotateMasterKey(ctx, note)
	if rotated {
		settle(ctx, a.cfg.Audit, a.cfg.Logger, since, note)
	}
	if err != nil {
		return 0, noteFailed("audit key rotation", err)
	}
	if !rotated {
		if _, err := a.cfg.Audit.Add(ctx, ev).Wait(ctx); err != nil {
			return 0, unavailable("audit key rotation", err)
		}
	}
	return v, nil
}

// noteFailed maps a failure of a secret change's audit record to the
// caller's 503 (the change was undone with it); other errors pass through
// unchanged.
func noteFailed(what string, err error) error {
	if errors.Is(err, store.ErrNoteFailed) {
		return unavailable(what, err)
	}
	return err
}

// TypeAdminDenied is the audit entry of a refused control-plane request.
const TypeAdminDenied = "admin.denied"

// Why a control-plane request was refused, as its admin.denied entry says.
const (
	DeniedNetwork  = "address not in admin_cidrs"
	DeniedNoCert   = "no client certificate"
	DeniedNoToken  = "no token"
	DeniedBadToken = "bad token"
	DeniedExpired  = "token expired"
	DeniedRole     = "role too weak"
)

// Denial is a refused control-plane request.
type Denial struct {
	Admin, Role  string // the token's name and role, when it authenticated
	Source       netip.Addr
	Method, Path string
	Status       int
	Reason       string // one of the Denied constants
}

// Deny records a refused control-plane request. Like every refusal it is
// audited before it is answered: when it cannot be recorded the caller
// answers 503 instead (failclosed.ErrUnavailable).
func (a *Admins) Deny(ctx context.Context, d Denial) error {
	ev := audit.Event{Type: TypeAdminDenied, Admin: d.Admin, Role: d.Role, Source: addrString(d.Source), Method: d.Method,
		Path: d.Path, Status: d.Status, Reason: d.Reason}
	clipCaller(&ev)
	if _, err := a.audit.Add(ctx, ev).Wait(ctx); err != nil {
		return unavailable("audit control-plane denial", err)
	}
	return nil
}
