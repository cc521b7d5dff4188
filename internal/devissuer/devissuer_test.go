package devissuer

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/identity"
)

// start runs an Issuer on 127.0.0.1 with its URL set to the listener's.
func start(t *testing.T, alg string) (*Issuer, *httptest.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := New(Options{URL: "http://" + ln.Addr().String(), Algorithm: alg, Audience: "https://mayfly.test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: iss.Handler()}}
	srv.Start()
	t.Cleanup(srv.Close)
	return iss, srv
}

func verifier(iss *Issuer) *identity.Verifier {
	v := identity.NewVerifier(identity.Options{})
	v.SetIssuers([]identity.IssuerConfig{{Name: "dev", URL: iss.URL(), Audience: "https://mayfly.test", Algorithms: []string{iss.Algorithm()}}})
	return v
}

func TestMintVerifies(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			iss, _ := start(t, alg)
			v := verifier(iss)
			tok, err := iss.Mint(map[string]any{"repository": "octo/web", "environment": "production"}, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			want := map[string]string{
				"repository": "octo/web", "repository_owner": "octo", "ref": "refs/heads/main",
				"ref_type": "branch", "environment": "production", "run_attempt": "1", "event_name": "push",
			}
			for k, w := range want {
				if id.Claims[k] != w {
					t.Errorf("claim %s = %q, want %q", k, id.Claims[k], w)
				}
			}
			if id.Subject != "repo:octo/web:environment:production" {
				t.Errorf("sub = %q", id.Subject)
			}
			for _, k := range []string{"repository_id", "repository_owner_id", "run_id", "sha", "workflow", "actor"} {
				if id.Claims[k] == "" {
					t.Errorf("claim %s missing", k)
				}
			}
			if id.JTI == "" || id.Expiry.Sub(id.IssuedAt) != DefaultTTL {
				t.Errorf("jti %q, lifetime %s", id.JTI, id.Expiry.Sub(id.IssuedAt))
			}
			// Stable repository ids, fresh jtis.
			tok2, _ := iss.Mint(map[string]any{"repository": "octo/web"}, "", 0)
			id2, err := v.Verify(context.Background(), tok2)
			if err != nil {
				t.Fatal(err)
			}
			if id2.Claims["repository_id"] != id.Claims["repository_id"] || id2.JTI == id.JTI {
				t.Errorf("repository_id %s/%s, jti %s/%s", id.Claims["repository_id"], id2.Claims["repository_id"], id.JTI, id2.JTI)
			}
			if id2.Subject != "repo:octo/web:ref:refs/heads/main" {
				t.Errorf("sub = %q", id2.Subject)
			}
		})
	}
}

func TestMintRefusals(t *testing.T) {
	iss, _ := start(t, "ES256")
	for _, c := range []map[string]any{{"iss": "x"}, {"aud": "x"}, {"exp": 1}, {"jti": "x"}} {
		if _, err := iss.Mint(c, "", 0); err == nil {
			t.Errorf("Mint(%v) accepted a reserved claim", c)
		}
	}
	if _, err := iss.Mint(nil, "", 2*time.Hour); err == nil {
		t.Error("Mint accepted a 2h ttl")
	}
	for _, u := range []string{"", "ftp://x", "http://example.com", "http://10.0.0.1:80", "http://127.0.0.1/?x=1"} {
		if _, err := New(Options{URL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func get(t *testing.T, url string, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestHTTP(t *testing.T) {
	iss, srv := start(t, "RS256")
	v := verifier(iss)
	ctx := context.Background()

	code, body := get(t, srv.URL+DiscoveryPath, nil)
	var disc map[string]any
	if code != 200 || json.Unmarshal(body, &disc) != nil || disc["issuer"] != iss.URL() || disc["jwks_uri"] != iss.URL()+JWKSPath {
		t.Fatalf("discovery %d %s", code, body)
	}

	// Plain /token: the JWT as text, claims from the query.
	code, body = get(t, srv.URL+TokenPath+"?audience=https://mayfly.test&repository=acme/api&ref=refs/tags/v1", nil)
	if code != 200 {
		t.Fatalf("/token %d %s", code, body)
	}
	id, err := v.Verify(ctx, strings.TrimSpace(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims["repository"] != "acme/api" || id.Claims["ref_type"] != "tag" {
		t.Errorf("claims %v", id.Claims)
	}
	// Reserved claims and bad names are refused.
	for _, q := range []string{"iss=http://evil", "Bad-Name=1", "exp=1"} {
		if code, _ := get(t, srv.URL+TokenPath+"?"+q, nil); code != 400 {
			t.Errorf("/token?%s: %d, want 400", q, code)
		}
	}

	// The Actions request-URL flow needs the request token.
	u := iss.RequestURL() + "&audience=https://mayfly.test"
	if code, _ := get(t, u, nil); code != 401 {
		t.Errorf("no request token: %d", code)
	}
	if code, _ := get(t, u, map[string]string{"Authorization": "bearer wrong"}); code != 401 {
		t.Errorf("wrong request token: %d", code)
	}
	code, body = get(t, u, map[string]string{"Authorization": "bearer " + iss.RequestToken()})
	var val struct{ Value string }
	if code != 200 || json.Unmarshal(body, &val) != nil {
		t.Fatalf("actions %d %s", code, body)
	}
	if _, err := v.Verify(ctx, val.Value); err != nil {
		t.Fatal(err)
	}

	// DNS rebinding: a request naming another host is refused.
	if code, _ := get(t, srv.URL+TokenPath, map[string]string{"Host": "evil.example:80"}); code != 403 {
		t.Errorf("foreign Host: %d, want 403", code)
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8700": true, "[::1]:0": true, "localhost:1": true,
		"0.0.0.0:8700": false, ":8700": false, "10.1.2.3:80": false, "nonsense": false,
	} {
		if err := CheckListen(addr); (err == nil) != ok {
			t.Errorf("CheckListen(%q) = %v", addr, err)
		}
	}
}
