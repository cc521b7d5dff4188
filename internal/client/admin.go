package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
)

// LeaseQuery selects leases for ListLeases.
type LeaseQuery struct {
	Active                      bool
	Grant, Issuer, Subject, Job string
	Limit                       int    // per page, 0: the server's default
	Cursor                      string // from a previous page's NextCursor
}

// ListLeases returns one page of leases (GET /v1/leases).
func (c *Client) ListLeases(ctx context.Context, q LeaseQuery) (*apitype.LeaseList, error) {
	v := url.Values{}
	if q.Active {
		v.Set("active", "true")
	}
	for k, s := range map[string]string{"grant": q.Grant, "issuer": q.Issuer, "subject": q.Subject, "job": q.Job, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/leases"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out apitype.LeaseList
	if err := c.adminJSON(ctx, "leases list", http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeLeases revokes one lease or every live lease a filter selects.
func (c *Client) RevokeLeases(ctx context.Context, r apitype.RevokeLeasesRequest) (*apitype.RevokeLeasesResponse, error) {
	var out apitype.RevokeLeasesResponse
	if err := c.adminJSON(ctx, "leases revoke", http.MethodPost, "/v1/leases/revoke", r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutSecret stores a new version of a secret. The request body holding the
// value is wiped after sending; value itself is the caller's to wipe.
func (c *Client) PutSecret(ctx context.Context, name string, value []byte) (*apitype.SecretPutResponse, error) {
	s := string(value)
	var out apitype.SecretPutResponse
	if err := c.adminJSON(ctx, "secret put", http.MethodPut, "/v1/secrets/"+url.PathEscape(name), apitype.SecretPutRequest{Value: &s}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutSecretRotating is PutSecret that also sets the secret's rotation
// (rot non-nil) or removes it (remove); neither leaves it as it was.
func (c *Client) PutSecretRotating(ctx context.Context, name string, value []byte, rot *apitype.SecretRotate, remove bool) (*apitype.SecretPutResponse, error) {
	s := string(value)
	req := apitype.SecretPutRequest{Value: &s}
	switch {
	case rot != nil:
		b, err := json.Marshal(rot)
		if err != nil {
			return nil, err
		}
		req.Rotate = b
	case remove:
		req.Rotate = json.RawMessage("null")
	}
	var out apitype.SecretPutResponse
	if err := c.adminJSON(ctx, "secret put", http.MethodPut, "/v1/secrets/"+url.PathEscape(name), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateSecret rotates a secret now with its rotator.
func (c *Client) RotateSecret(ctx context.Context, name string) (*apitype.SecretRotateResponse, error) {
	var out apitype.SecretRotateResponse
	if err := c.adminJSON(ctx, "secret rotate", http.MethodPost, "/v1/secrets/"+url.PathEscape(name)+"/rotate", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSecrets lists stored secrets' metadata.
func (c *Client) ListSecrets(ctx context.Context) (*apitype.SecretList, error) {
	var out apitype.SecretList
	if err := c.adminJSON(ctx, "secret list", http.MethodGet, "/v1/secrets", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SecretMeta returns one secret's metadata.
func (c *Client) SecretMeta(ctx context.Context, name string) (*apitype.SecretMeta, error) {
	var out apitype.SecretMeta
	if err := c.adminJSON(ctx, "secret show", http.MethodGet, "/v1/secrets/"+url.PathEscape(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSecret destroys every version of a secret.
func (c *Client) DeleteSecret(ctx context.Context, name string) (*apitype.SecretDeleteResponse, error) {
	var out apitype.SecretDeleteResponse
	if err := c.adminJSON(ctx, "secret rm", http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateMasterKey starts a new master-key version.
func (c *Client) RotateMasterKey(ctx context.Context) (*apitype.RotateMasterKeyResponse, error) {
	var out apitype.RotateMasterKeyResponse
	if err := c.adminJSON(ctx, "secret rotate-master-key", http.MethodPost, "/v1/sys/rotate-master-key", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Policy returns the policy in force as YAML, and its version.
func (c *Client) Policy(ctx context.Context, max int64) (yaml []byte, version string, err error) {
	b, h, err := c.adminRaw(ctx, "policy show", "/v1/policy", max)
	if err != nil {
		return nil, "", err
	}
	return b, h.Get(apitype.HeaderPolicyVersion), nil
}

func (c *Client) sendPolicy(ctx context.Context, op, method, path string, yaml []byte, out any) error {
	auth, err := c.admin()
	if err != nil {
		return err
	}
	return c.doJSON(ctx, request{op: op, method: method, path: path, auth: auth, body: bytes.Clone(yaml), contentType: "application/yaml"}, out)
}

// ApplyPolicy puts the policy YAML in force as a new version (PUT /v1/policy).
func (c *Client) ApplyPolicy(ctx context.Context, yaml []byte) (*apitype.PolicyApplyResponse, error) {
	var out apitype.PolicyApplyResponse
	if err := c.sendPolicy(ctx, "policy apply", http.MethodPut, "/v1/policy", yaml, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ApplyPolicyAllowingRevocations applies like ApplyPolicy and lets the
// server revoke the live tokens of grants the policy removes (without it
// the server refuses such a version: 409 revocation_not_confirmed).
func (c *Client) ApplyPolicyAllowingRevocations(ctx context.Context, yaml []byte) (*apitype.PolicyApplyResponse, error) {
	var out apitype.PolicyApplyResponse
	if err := c.sendPolicy(ctx, "policy apply", http.MethodPut, "/v1/policy?allow_revoke=true", yaml, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PlanPolicy says what applying the policy YAML would change.
func (c *Client) PlanPolicy(ctx context.Context, yaml []byte) (*apitype.PolicyPlanResponse, error) {
	return c.planPolicy(ctx, "policy plan", yaml)
}

// PlanApply is the plan an apply makes first, to show what it would
// revoke: its errors name the apply the user ran, not a plan.
func (c *Client) PlanApply(ctx context.Context, yaml []byte) (*apitype.PolicyPlanResponse, error) {
	return c.planPolicy(ctx, "policy apply", yaml)
}

func (c *Client) planPolicy(ctx context.Context, op string, yaml []byte) (*apitype.PolicyPlanResponse, error) {
	var out apitype.PolicyPlanResponse
	if err := c.sendPolicy(ctx, op, http.MethodPost, "/v1/policy/plan", yaml, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateAdminToken makes an admin token; the answer holds it, once.
// ttl 0 leaves the lifetime to the server (its default).
func (c *Client) CreateAdminToken(ctx context.Context, name, role string, ttl time.Duration) (*apitype.AdminTokenCreated, error) {
	var out apitype.AdminTokenCreated
	req := apitype.AdminTokenCreateRequest{Name: name, Role: role, TTLSeconds: int64(ttl / time.Second)}
	if err := c.adminJSON(ctx, "admin token create", http.MethodPost, "/v1/admin/tokens", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAdminTokens lists admin tokens (never the tokens).
func (c *Client) ListAdminTokens(ctx context.Context) (*apitype.AdminTokenList, error) {
	var out apitype.AdminTokenList
	if err := c.adminJSON(ctx, "admin token list", http.MethodGet, "/v1/admin/tokens", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeAdminToken revokes an admin token by name.
func (c *Client) RevokeAdminToken(ctx context.Context, name string) (*apitype.AdminTokenRevokeResponse, error) {
	var out apitype.AdminTokenRevokeResponse
	if err := c.adminJSON(ctx, "admin token revoke", http.MethodDelete, "/v1/admin/tokens/"+url.PathEscape(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Bounds of audit answers.
const (
	maxAuditKey   = 4 << 10
	maxProof      = 1 << 20
	maxCheckpoint = 64 << 10
)

// AuditKey returns the note verifier key of the server's audit log.
func (c *Client) AuditKey(ctx context.Context) (string, error) {
	b, _, err := c.adminRaw(ctx, "audit: verifier key", "/v1/audit/key", maxAuditKey)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

// AuditCheckpoint returns the latest signed checkpoint, as served.
func (c *Client) AuditCheckpoint(ctx context.Context) ([]byte, error) {
	b, _, err := c.adminRaw(ctx, "audit: checkpoint", "/v1/audit/checkpoint", maxCheckpoint)
	return b, err
}

// AuditEntries returns up to limit entries' exact bytes, one per line, from
// start; maxLine bounds one entry.
func (c *Client) AuditEntries(ctx context.Context, start int64, limit int, maxLine int64) ([]byte, error) {
	b, _, err := c.adminRaw(ctx, "audit: entries", fmt.Sprintf("/v1/audit/entries?start=%d&limit=%d", start, limit), int64(limit)*(maxLine+1))
	return b, err
}

// AuditInclusionProof returns the inclusion proof of entry index in the
// tree of size, as served ({"hashes":[…]}).
func (c *Client) AuditInclusionProof(ctx context.Context, index, size int64) ([]byte, error) {
	b, _, err := c.adminRaw(ctx, "audit: inclusion proof", fmt.Sprintf("/v1/audit/proof/inclusion?index=%d&size=%d", index, size), maxProof)
	return b, err
}

// AuditConsistencyProof returns the consistency proof between two tree
// sizes, as served.
func (c *Client) AuditConsistencyProof(ctx context.Context, oldSize, newSize int64) ([]byte, error) {
	b, _, err := c.adminRaw(ctx, "audit: consistency proof", fmt.Sprintf("/v1/audit/proof/consistency?old=%d&new=%d", oldSize, newSize), maxProof)
	return b, err
}
