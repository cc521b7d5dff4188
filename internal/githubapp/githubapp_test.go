package githubapp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

var ctx = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	gh    *githubtest.Server
	src   *Source
	vault *secret.Vault
	clk   *clock
	pol   *policy.Policy
}

const polText = `issuers:
  ci: {url: "http://127.0.0.1:1", audience: x}
upstreams:
  gh:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: gh-key, installation_id: "7890"}}
  gh-owner:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: gh-key, owner: Acme}}
  gh-nobody:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: gh-key, owner: nobody}}
  gh-missing:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: gh-key, installation_id: "999"}}
  gh-badkey:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: bad-key, installation_id: "7890"}}
  gh-otherkey:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: other-key, installation_id: "7890"}}
grants:
  release:
    upstream: gh
    ttl: 10m
    github: {repositories: [app], permissions: {contents: write, pull_requests: read}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {p: x}}]
  too-much:
    upstream: gh
    ttl: 10m
    github: {permissions: {administration: write}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {p: x}}]
  other-repo:
    upstream: gh
    ttl: 10m
    github: {repositories: [secret-repo], permissions: {contents: read}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {p: x}}]
`

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{clk: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	var err error
	h.gh, err = githubtest.Start(githubtest.Options{Now: h.clk.Now, Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app", "lib"}, Permissions: map[string]string{"contents": "write", "pull_requests": "write", "metadata": "read"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.gh.Close() })
	db := storetest.SQLite(t).DB
	h.vault, err = secret.Open(ctx, db, bytes.Repeat([]byte{3}, 32), secret.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.vault.Close)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, v := range map[string][]byte{
		"gh-key":    h.gh.PrivateKey,
		"bad-key":   []byte("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n"),
		"other-key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)}),
	} {
		if _, err := h.vault.Put(ctx, name, v); err != nil {
			t.Fatal(err)
		}
	}
	h.pol, err = policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", h.gh.URL))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.src = New(Config{Secrets: h.vault, Now: h.clk.Now})
	return h
}

func (h *harness) mint(upstream, grant string) (mint.Minted, mint.Plan, error) {
	r := mint.Request{ID: "mnt_1", LeaseID: "lse_1", Upstream: h.pol.Upstreams[upstream], Grant: h.pol.Grants[grant], ExpiresAt: h.clk.Now().Add(10 * time.Minute)}
	p, err := h.src.Plan(r)
	if err != nil {
		return mint.Minted{}, p, err
	}
	m, err := h.src.Mint(ctx, r, p)
	return m, p, err
}

func TestMintAndRevoke(t *testing.T) {
	h := newHarness(t)
	m, p, err := h.mint("gh", "release")
	if err != nil {
		t.Fatal(err)
	}
	tok := m.Credential.Token
	got := h.gh.Tokens()[tok]
	if !strings.HasPrefix(tok, "ghs_") || m.Secret != tok || string(m.Material) != tok || !h.gh.Live(tok) {
		t.Fatalf("minted %+v", m)
	}
	if got.Permissions["contents"] != "write" || got.Permissions["pull_requests"] != "read" || len(got.Repositories) != 1 || got.Repositories[0] != "app" {
		t.Fatalf("token scope %+v", got)
	}
	if !m.ExpiresAt.Equal(h.clk.Now().Add(10 * time.Minute)) {
		t.Fatalf("expiry %v: the token must not outlive its lease", m.ExpiresAt)
	}
	if r := h.gh.Refused(); len(r) != 0 {
		t.Fatalf("the double refused: %v", r)
	}
	if strings.Contains(string(p.Params), tok) {
		t.Fatal("params hold the token")
	}
	rec := mint.Record{Material: m.Material}
	rec.Params = p.Params
	if err := h.src.Revoke(ctx, rec); err != nil || h.gh.Live(tok) {
		t.Fatalf("revoke: %v, live %v", err, h.gh.Live(tok))
	}
	// Already gone: still revoked (idempotent).
	if err := h.src.Revoke(ctx, rec); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	// Nothing was created: nothing to delete.
	if err := h.src.Revoke(ctx, mint.Record{}); err != nil {
		t.Fatal(err)
	}
}

func TestOwnerLookup(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 2; i++ {
		if _, _, err := h.mint("gh-owner", "release"); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.gh.Calls("GET /app/installations"); n != 1 {
		t.Fatalf("installations listed %d times; the id is kept", n)
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name, upstream, grant string
		setup                 func(h *harness)
		status                int
		want                  string
	}{
		{"unknown installation", "gh-missing", "release", nil, 502, "installation 999 of App 123456 not found"},
		{"owner without the App", "gh-nobody", "release", nil, 502, "App 123456 is not installed on nobody"},
		{"permission not granted", "gh", "too-much", nil, 502, "GitHub refused the token's scope (422): The permissions requested are not granted"},
		{"repository outside the installation", "gh", "other-repo", nil, 502, "GitHub refused the token's scope (422): There is at least one repository"},
		{"key does not parse", "gh-badkey", "release", nil, 500, "private key in secret bad-key does not parse"},
		{"key of another App", "gh-otherkey", "release", nil, 502, "GitHub refused the App's JWT (401)"},
		{"GitHub down", "gh", "release", func(h *harness) { h.gh.Down(true) }, 503, "GitHub failed (503)"},
		{"primary rate limit", "gh", "release", func(h *harness) { h.gh.LimitPrimary(h.clk.Now().Add(10 * time.Minute)) }, 503, "rate limit is spent until"},
		{"secondary rate limit", "gh", "release", func(h *harness) { h.gh.LimitSecondary(1, 30) }, 503, "secondary rate limit (429, retry after 30s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			_, _, err := h.mint(tt.upstream, tt.grant)
			var me *mint.Error
			if !errors.As(err, &me) || me.Status != tt.status || !strings.Contains(me.Description, tt.want) {
				t.Fatalf("err = %v, want %d %q", err, tt.status, tt.want)
			}
			if h.gh.LiveCount() != 0 {
				t.Fatal("a token was left behind")
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), "ghs_") {
				t.Fatal("the error holds a secret")
			}
		})
	}
}

// After a rate limit nothing more is asked of GitHub until it lifts.
func TestRateLimitHonoured(t *testing.T) {
	for _, tt := range []struct {
		name  string
		limit func(h *harness)
		wait  time.Duration
	}{
		{"primary", func(h *harness) { h.gh.LimitPrimary(h.clk.Now().Add(5 * time.Minute)) }, 5 * time.Minute},
		{"secondary", func(h *harness) { h.gh.LimitSecondary(1, 40) }, 40 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.limit(h)
			if _, _, err := h.mint("gh", "release"); err == nil {
				t.Fatal("no error while rate-limited")
			}
			calls := h.gh.Calls("POST /app/installations/{id}/access_tokens")
			h.clk.add(tt.wait / 2)
			if _, _, err := h.mint("gh", "release"); err == nil || !strings.Contains(err.Error(), "not asking again") {
				t.Fatalf("err = %v", err)
			}
			if h.gh.Calls("POST /app/installations/{id}/access_tokens") != calls {
				t.Fatal("asked GitHub again during its rate limit")
			}
			h.clk.add(tt.wait/2 + time.Second)
			if _, _, err := h.mint("gh", "release"); err != nil {
				t.Fatalf("after the limit lifted: %v", err)
			}
		})
	}
}

// A grant's shared token (deliver: gateway) keeps serving while GitHub
// rate-limits or is down, until the token itself expires; the refresh
// comes once GitHub answers again.
func TestSharedTokenOutlastsRateLimits(t *testing.T) {
	h := newHarness(t)
	db := storetest.SQLite(t).DB
	hasher, err := token.NewHasher(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("githubapp.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditlog.Open(ctx, db, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	m, err := mint.New(mint.Config{Store: db, Sources: map[string]mint.Source{policy.KindGitHubApp: h.src}, Hasher: hasher,
		SealKey: bytes.Repeat([]byte{6}, 32), Audit: log, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	up, g := h.pol.Upstreams["gh"], h.pol.Grants["release"]
	first, err := m.Shared(ctx, up, g)
	if err != nil {
		t.Fatal(err)
	}
	minted := func() int { return h.gh.Calls("POST /app/installations/{id}/access_tokens") }
	h.gh.LimitPrimary(h.clk.Now().Add(2 * time.Hour))
	for _, at := range []time.Duration{10 * time.Minute, 50 * time.Minute, 59 * time.Minute} {
		h.clk.set(first.Credential.ExpiresAt.Add(-time.Hour).Add(at))
		is, err := m.Shared(ctx, up, g)
		if err != nil || is.ID != first.ID {
			t.Fatalf("at +%s under a rate limit: %v", at, err)
		}
	}
	if n := minted(); n > 2 {
		// the first, and at most one refresh attempt that met the limit:
		// none after it while the limit lasts
		t.Fatalf("%d token requests during a rate limit", n)
	}
	h.clk.add(2 * time.Minute) // past the token's own expiry
	if _, err := m.Shared(ctx, up, g); err == nil {
		t.Fatal("an expired token was served")
	}
	h.gh.LimitPrimary(time.Time{})
	h.clk.add(2 * time.Hour) // the remembered limit has lifted too
	is, err := m.Shared(ctx, up, g)
	if err != nil || is.ID == first.ID || !h.gh.Live(is.Credential.Token) {
		t.Fatalf("no fresh token once GitHub answers: %v", err)
	}
}
