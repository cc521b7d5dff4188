package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/apitype"
)

// Session tokens ("mfys_" and 43 base64url characters) are what a human
// signed in with mayfly auth login holds: admin calls accept them in place
// of an admin token, with the role the identity provider's claim maps to.
const (
	SessionPrefix = "mfys_"
	sessionLen    = len(SessionPrefix) + 43
)

// IsSessionToken tells a session token's shape.
func IsSessionToken(s string) bool {
	if len(s) != sessionLen || !strings.HasPrefix(s, SessionPrefix) {
		return false
	}
	for i := len(SessionPrefix); i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// SignInURL is where a browser starts a CLI's loopback sign-in.
func (c *Client) SignInURL(port int, challenge, state string) string {
	q := url.Values{"cli_port": {strconv.Itoa(port)}, "cli_challenge": {challenge}, "cli_state": {state}}
	return c.addr + "/ui/login?" + q.Encode()
}

// AuthConfig asks whether the server signs humans in (an *Error with
// Status 404 when it has no admin_oidc) and offers the device flow.
func (c *Client) AuthConfig(ctx context.Context) (*apitype.AuthConfig, error) {
	var out apitype.AuthConfig
	if err := c.doJSON(ctx, request{op: "auth login", method: http.MethodGet, path: "/v1/auth/config"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CLIToken trades a loopback sign-in's one-time code and its PKCE
// verifier for a session token.
func (c *Client) CLIToken(ctx context.Context, code, verifier string) (*apitype.SessionToken, error) {
	b, _ := json.Marshal(apitype.CLITokenRequest{Code: code, CodeVerifier: verifier})
	var out apitype.SessionToken
	err := c.doJSON(ctx, request{op: "auth login", method: http.MethodPost, path: "/v1/auth/cli/token", body: b, contentType: "application/json"}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeviceStart starts a device sign-in.
func (c *Client) DeviceStart(ctx context.Context) (*apitype.DeviceStart, error) {
	var out apitype.DeviceStart
	if err := c.doJSON(ctx, request{op: "auth login --device", method: http.MethodPost, path: "/v1/auth/device"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeviceToken polls a device sign-in once: an *Error with Code
// authorization_pending or slow_down while not yet approved.
func (c *Client) DeviceToken(ctx context.Context, deviceCode string) (*apitype.SessionToken, error) {
	b, _ := json.Marshal(apitype.DeviceTokenRequest{DeviceCode: deviceCode})
	var out apitype.SessionToken
	err := c.doJSON(ctx, request{op: "auth login --device", method: http.MethodPost, path: "/v1/auth/device/token", body: b, contentType: "application/json"}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// SignOut ends the session token's session.
func (c *Client) SignOut(ctx context.Context, session string) (*apitype.SignOutResponse, error) {
	var out apitype.SignOutResponse
	err := c.doJSON(ctx, request{op: "auth logout", method: http.MethodPost, path: "/v1/auth/logout", auth: "Bearer " + session}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// WhoAmI says who the client's admin credential is, and its role.
func (c *Client) WhoAmI(ctx context.Context) (*apitype.WhoAmI, error) {
	var out apitype.WhoAmI
	if err := c.adminJSON(ctx, "auth whoami", http.MethodGet, "/v1/auth/whoami", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSessions lists the signed-in sessions not yet expired (admin).
func (c *Client) ListSessions(ctx context.Context) (*apitype.SessionList, error) {
	var out apitype.SessionList
	if err := c.adminJSON(ctx, "admin session list", http.MethodGet, "/v1/admin/sessions", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeSession revokes a session by id (admin).
func (c *Client) RevokeSession(ctx context.Context, id string) (*apitype.SessionRevokeResponse, error) {
	var out apitype.SessionRevokeResponse
	if err := c.adminJSON(ctx, "admin session revoke", http.MethodDelete, "/v1/admin/sessions/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
