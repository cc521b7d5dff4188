package client

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// ExchangeRequest is one token exchange.
type ExchangeRequest struct {
	IDToken string
	Grants  []string
	TTL     time.Duration // 0: the grant's ttl
	// DPoPKey, when set, binds the token to this key (RFC 9449).
	DPoPKey crypto.Signer
	// Now is the proof's time (default time.Now).
	Now func() time.Time
}

// ErrNotJobToken: the server's access_token is not a well-formed job token.
var ErrNotJobToken = errors.New("token exchange: the server's access_token is not a mayfly job token")

// Exchange trades an ID token for a job token (POST /v1/token). It returns
// the answer and its raw bytes. A refusal is an *Error.
func (c *Client) Exchange(ctx context.Context, r ExchangeRequest) (*apitype.TokenResponse, []byte, error) {
	if len(r.Grants) == 0 {
		return nil, nil, errors.New("no grant asked (--grant NAME)")
	}
	form := url.Values{
		"grant_type":         {apitype.GrantTypeTokenExchange},
		"subject_token":      {r.IDToken},
		"subject_token_type": {apitype.TokenTypeIDToken},
		"scope":              {strings.Join(r.Grants, " ")},
	}
	if r.TTL > 0 {
		secs := int64((r.TTL + time.Second - 1) / time.Second)
		form.Set("ttl", strconv.FormatInt(secs, 10))
	}
	req := request{op: "token exchange", method: http.MethodPost, path: "/v1/token", body: []byte(form.Encode()),
		contentType: "application/x-www-form-urlencoded"}
	if r.DPoPKey != nil {
		now := time.Now
		if r.Now != nil {
			now = r.Now
		}
		proof, err := dpop.NewProof(r.DPoPKey, http.MethodPost, c.addr+"/v1/token", "", now())
		if err != nil {
			return nil, nil, fmt.Errorf("token exchange: DPoP proof: %w", err)
		}
		req.header = http.Header{"Dpop": {proof}}
	}
	raw, _, err := c.doRaw(ctx, req, MaxJSONResponse)
	clear(req.body)
	if err != nil {
		return nil, nil, err
	}
	var tr apitype.TokenResponse
	if err := json.Unmarshal(raw, &tr); err != nil {
		return nil, nil, fmt.Errorf("token exchange: the answer is not JSON: %w", err)
	}
	// The token ends up in environment files and shell variables: accept
	// only a well-formed job token, so nothing else can be injected there.
	if k, err := token.Parse(tr.AccessToken); err != nil || k != token.Job {
		return nil, nil, ErrNotJobToken
	}
	return &tr, raw, nil
}

// Renew extends tok by its grant's ttl (POST /v1/token/renew). A token
// bound to a key (exchanged with ExchangeRequest.DPoPKey) renews only with
// a proof of that key: pass it as key; nil for a bearer token.
func (c *Client) Renew(ctx context.Context, tok string, key crypto.Signer) (*apitype.RenewResponse, error) {
	const path = "/v1/token/renew"
	req := request{op: "renew", method: http.MethodPost, path: path, auth: "Bearer " + tok}
	if key != nil {
		proof, err := dpop.NewProof(key, http.MethodPost, c.addr+path, tok, time.Now())
		if err != nil {
			return nil, fmt.Errorf("renew: DPoP proof: %w", err)
		}
		req.auth = "DPoP " + tok // RFC 9449 section 7.1
		req.header = http.Header{"Dpop": {proof}}
	}
	var out apitype.RenewResponse
	if err := c.doJSON(ctx, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke kills tok (POST /v1/revoke, RFC 7009). Holding a token is enough.
func (c *Client) Revoke(ctx context.Context, tok string) error {
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	return c.doJSON(ctx, request{op: "revoke", method: http.MethodPost, path: "/v1/revoke", body: []byte(form.Encode()),
		contentType: "application/x-www-form-urlencoded"}, nil)
}

// ReportLeaks sends text holding leaked tokens to POST /v1/leaks, which
// revokes every live one before it answers. No authentication.
func (c *Client) ReportLeaks(ctx context.Context, text []byte) (*apitype.LeakResponse, error) {
	var out apitype.LeakResponse
	if err := c.doJSON(ctx, request{op: "leak report", method: http.MethodPost, path: "/v1/leaks", body: text,
		contentType: "text/plain; charset=utf-8"}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
