package githubapp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
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
	db    *store.DB
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
  gh-shortkey:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: short-key, installation_id: "7890"}}
  gh-nokey:
    url: %URL%
    credential: {github_app: {app_id: "123456", private_key_secret: no-such-key, installation_id: "7890"}}
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

func newHarness(t *testing.T) *harness { return newHarnessOn(t, storetest.SQLite(t), false) }

// newHarnessOn starts a GitHub double issuing classic or stateless tokens
// and a source whose secrets live in b.
func newHarnessOn(t *testing.T, b storetest.Backend, classic bool) *harness {
	t.Helper()
	h := &harness{clk: &clock{t: time.Now().UTC().Truncate(time.Second)}, db: b.DB}
	var err error
	h.gh, err = githubtest.Start(githubtest.Options{Now: h.clk.Now, Classic: classic, Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app", "lib"}, Permissions: map[string]string{"contents": "write", "pull_requests": "write", "metadata": "read"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.gh.Close() })
	h.vault, err = secret.Open(ctx, b.DB, bytes.Repeat([]byte{3}, 32), secret.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.vault.Close)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	short, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, v := range map[string][]byte{
		"gh-key":    h.gh.PrivateKey,
		"bad-key":   []byte("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n"),
		"other-key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)}),
		"short-key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(short)}),
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
	p, err := h.src.Plan(ctx, r)
	if err != nil {
		return mint.Minted{}, p, err
	}
	m, err := h.src.Mint(ctx, r, p)
	return m, p, err
}

// Both forms of installation token GitHub mints (classic, and stateless
// since 2026) are scoped, kept out of params, and deleted.
func TestMintAndRevoke(t *testing.T) {
	for _, classic := range []bool{false, true} {
		t.Run(fmt.Sprintf("classic=%v", classic), func(t *testing.T) { testMintAndRevoke(t, newHarnessOn(t, storetest.SQLite(t), classic)) })
	}
}

func testMintAndRevoke(t *testing.T, h *harness) {
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
	rec := mint.Record{Material: m.Material, Authenticated: true}
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
		{"key too short", "gh-shortkey", "release", nil, 500, "shorter than 2048 bits"},
		{"key not stored", "gh-nokey", "release", nil, 500, "secret no-such-key cannot be read"},
		{"key of another App", "gh-otherkey", "release", nil, 502, "GitHub refused the App's JWT (401)"},
		{"GitHub down", "gh", "release", func(h *harness) { h.gh.Down(true) }, 503, "GitHub failed (503)"},
		{"primary rate limit", "gh", "release", func(h *harness) { h.gh.LimitPrimary(h.clk.Now().Add(10 * time.Minute)) }, 503, "rate limit is spent until"},
		{"secondary rate limit", "gh", "release", func(h *harness) { h.gh.LimitSecondary(1, 30) }, 503, "secondary rate limit (429, retry after 30s)"},
		{"secondary rate limit without retry-after", "gh", "release", func(h *harness) { h.gh.LimitSecondary(1, -1) }, 503, "secondary rate limit (403, no retry-after: waiting 60s)"},
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

// A GitHub API answer that GitHub's client cannot parse becomes the error
// "GitHub is unreachable: …", which quotes Go's transport error, which
// quotes the malformed line: with it the App JWT (minting: the error is the
// exchange's answer to the job and its audit entry) or the installation
// token (revoking: minted.last_error, the audit entry, the log).
func TestMalformedAnswerKeepsCredentialsOutOfErrors(t *testing.T) {
	h := newHarness(t)
	sent := make(chan string, 1)
	api, stop, err := githubtest.Reflecting(sent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	pol, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", api))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("mint: App JWT", func(t *testing.T) {
		r := mint.Request{ID: "mnt_1", LeaseID: "lse_1", Upstream: pol.Upstreams["gh"], Grant: pol.Grants["release"], ExpiresAt: h.clk.Now().Add(10 * time.Minute)}
		p, err := h.src.Plan(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.src.Mint(ctx, r, p)
		if err == nil {
			t.Fatal("minted against a broken API")
		}
		jwt := strings.TrimPrefix(<-sent, "Bearer ")
		if len(jwt) < 100 {
			t.Fatalf("no App JWT sent: %q", jwt)
		}
		if strings.Contains(err.Error(), jwt) {
			t.Errorf("the mint error (the job's answer) holds the whole App JWT: %.220s…", err.Error())
		}
		if !strings.Contains(err.Error(), "GitHub is unreachable") || !strings.Contains(err.Error(), "not valid HTTP") {
			t.Errorf("the mint error does not say what went wrong: %v", err)
		}
	})
	t.Run("revoke: installation token", func(t *testing.T) {
		const ghs = "ghs_PLANTEDinstallationTOKEN0123456789ab"
		params, _ := json.Marshal(map[string]string{"api_url": api})
		rec := mint.Record{Material: []byte(ghs), Authenticated: true}
		rec.Params = params
		err := h.src.Revoke(ctx, rec)
		if err == nil {
			t.Fatal("revoked against a broken API")
		}
		if strings.Contains(err.Error(), ghs) {
			t.Errorf("the revocation error (minted.last_error, audit reason, log) holds the whole installation token: %s", err)
		}
	})
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
		{"secondary without retry-after", func(h *harness) { h.gh.LimitSecondary(1, -1) }, 60 * time.Second},
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

// manager is a mint manager over h's source, with its audit log and
// metrics on h's store.
func (h *harness) manager(t *testing.T) (*mint.Manager, *auditlog.Log, *prometheus.Registry) {
	t.Helper()
	hasher, err := token.NewHasher(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("githubapp.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditlog.Open(ctx, h.db, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	reg := prometheus.NewRegistry()
	m, err := mint.New(mint.Config{Store: h.db, Sources: map[string]mint.Source{policy.KindGitHubApp: h.src}, Hasher: hasher,
		SealKey: bytes.Repeat([]byte{6}, 32), Audit: log, Now: h.clk.Now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return m, log, reg
}

// A grant's shared token (deliver: gateway) keeps serving while GitHub
// rate-limits (primary or secondary limit), until the token itself
// expires; the refresh comes once GitHub answers again.
func TestSharedTokenOutlastsRateLimits(t *testing.T) {
	for _, tt := range []struct {
		name         string
		limit, unset func(h *harness)
	}{
		{"primary", func(h *harness) { h.gh.LimitPrimary(h.clk.Now().Add(2 * time.Hour)) }, func(h *harness) { h.gh.LimitPrimary(time.Time{}) }},
		{"secondary", func(h *harness) { h.gh.LimitSecondary(1000, 3600) }, func(h *harness) { h.gh.LimitSecondary(0, 0) }},
	} {
		t.Run(tt.name, func(t *testing.T) { testSharedTokenOutlastsRateLimits(t, tt.limit, tt.unset) })
	}
}

func testSharedTokenOutlastsRateLimits(t *testing.T, limit, unset func(h *harness)) {
	h := newHarness(t)
	m, _, _ := h.manager(t)
	up, g := h.pol.Upstreams["gh"], h.pol.Grants["release"]
	first, err := m.Shared(ctx, up, g)
	if err != nil {
		t.Fatal(err)
	}
	minted := func() int { return h.gh.Calls("POST /app/installations/{id}/access_tokens") }
	limit(h)
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
	unset(h)
	h.clk.add(2 * time.Hour) // the remembered limit has lifted too
	is, err := m.Shared(ctx, up, g)
	if err != nil || is.ID == first.ID || !h.gh.Live(is.Credential.Token) {
		t.Fatalf("no fresh token once GitHub answers: %v", err)
	}
}

// A deliver: job token whose lease ends while GitHub refuses (either rate
// limit, an outage) is deleted once GitHub answers again: each failed
// attempt is counted and audited, the next waits for its backoff, nothing
// is asked of GitHub while a known rate limit lasts, and the deletion is
// audited. On both stores.
func TestRevocationRetriedUntilConfirmed(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		for _, tt := range []struct {
			name        string
			fault, lift func(h *harness)
			blocked     time.Duration // how long mayfly must not ask again
		}{
			{"primary rate limit", func(h *harness) { h.gh.LimitPrimary(h.clk.Now().Add(10 * time.Minute)) }, func(h *harness) { h.gh.LimitPrimary(time.Time{}) }, 10 * time.Minute},
			{"secondary rate limit", func(h *harness) { h.gh.LimitSecondary(1000, 120) }, func(h *harness) { h.gh.LimitSecondary(0, 0) }, 2 * time.Minute},
			{"GitHub down", func(h *harness) { h.gh.Down(true) }, func(h *harness) { h.gh.Down(false) }, 0},
		} {
			t.Run(b.Name+"/"+tt.name, func(t *testing.T) {
				fresh := storetest.SQLite(t)
				if b.Name != "sqlite" {
					fresh = storetest.Postgres(t)
				}
				h := newHarnessOn(t, fresh, false)
				m, log, reg := h.manager(t)
				now := h.clk.Now()
				if err := h.db.InsertLease(ctx, store.Lease{ID: "lse_gh", Hash: [32]byte{1}, Issuer: "ci", Subject: "s", Job: "j", Claims: map[string]string{},
					Grants: []string{"release"}, IssuedAt: now, ExpiresAt: now.Add(30 * time.Minute), MaxExpiresAt: now.Add(time.Hour)}); err != nil {
					t.Fatal(err)
				}
				is, err := m.Mint(ctx, "lse_gh", h.pol.Upstreams["gh"], h.pol.Grants["release"], now.Add(30*time.Minute))
				if err != nil {
					t.Fatal(err)
				}
				tok := is.Credential.Token
				if n := m.RevokeDue(ctx); n != 0 || !h.gh.Live(tok) {
					t.Fatal("revoked while its lease lives")
				}
				tt.fault(h)
				if err := m.RevokeLeases(ctx, []string{"lse_gh"}, "leaked"); err != nil {
					t.Fatal(err)
				}
				asked := func() int { return len(h.gh.Refused()) }
				if n := m.RevokeDue(ctx); n != 0 || !h.gh.Live(tok) || asked() != 1 {
					t.Fatalf("first attempt: revoked %d, GitHub asked %d times", n, asked())
				}
				// Not again before the backoff has passed.
				m.RevokeDue(ctx)
				if asked() != 1 {
					t.Fatal("retried before its backoff")
				}
				// Past the backoff: tried again, but a rate limit GitHub
				// announced is honoured without asking.
				h.clk.add(3 * time.Second)
				m.RevokeDue(ctx)
				want := 2
				if tt.blocked > 0 {
					want = 1
				}
				if asked() != want {
					t.Fatalf("second attempt: GitHub asked %d times in all, want %d", asked(), want)
				}
				tt.lift(h)
				h.clk.add(tt.blocked + 10*time.Second)
				if n := m.RevokeDue(ctx); n != 1 || h.gh.Live(tok) {
					t.Fatalf("not deleted once GitHub answers: %d, live %v", n, h.gh.Live(tok))
				}
				es, err := log.Entries(ctx, 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				var failed, ok int
				for _, e := range es {
					if strings.Contains(string(e), tok) {
						t.Fatal("an audit entry holds the token")
					}
					if !strings.Contains(string(e), `"type":"credential.revoke"`) {
						continue
					}
					switch {
					case strings.Contains(string(e), `"status":502`):
						failed++
					case strings.Contains(string(e), `"status":200`) && strings.Contains(string(e), `"reason":"leaked"`):
						ok++
					}
				}
				if failed != 2 || ok != 1 {
					t.Fatalf("audited %d failed attempts and %d revocations, want 2 and 1", failed, ok)
				}
				mfs, _ := reg.Gather()
				var fails float64
				for _, mf := range mfs {
					if mf.GetName() == "mayfly_minted_revoke_failures_total" {
						fails = mf.GetMetric()[0].GetCounter().GetValue()
					}
				}
				if fails != 2 {
					t.Fatalf("revoke failures metric %v, want 2", fails)
				}
			})
		}
	}
}

// A grant's shared token is refreshed in the background once less than a
// quarter of an hour is left; the replaced one serves requests in flight
// for a minute and is then deleted at GitHub.
func TestSharedTokenRefreshed(t *testing.T) {
	h := newHarness(t)
	m, _, _ := h.manager(t)
	up, g := h.pol.Upstreams["gh"], h.pol.Grants["release"]
	first, err := m.Shared(ctx, up, g)
	if err != nil {
		t.Fatal(err)
	}
	minted := func() int { return h.gh.Calls("POST /app/installations/{id}/access_tokens") }
	h.clk.add(30 * time.Minute)
	if is, err := m.Shared(ctx, up, g); err != nil || is.ID != first.ID || minted() != 1 {
		t.Fatalf("at +30m: %v, %d minted", err, minted())
	}
	h.clk.add(20 * time.Minute) // 10 minutes left: refresh in the background
	if is, err := m.Shared(ctx, up, g); err != nil || is.ID != first.ID {
		t.Fatalf("at +50m the cached token must still answer: %v", err)
	}
	var next *mint.Issued
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if next, err = m.Shared(ctx, up, g); err == nil && next.ID != first.ID {
			break
		}
	}
	if next == nil || next.ID == first.ID || minted() != 2 || !h.gh.Live(next.Credential.Token) || !h.gh.Live(first.Credential.Token) {
		t.Fatalf("no refreshed token (%d minted)", minted())
	}
	h.clk.add(2 * time.Minute) // past the replaced token's minute of grace
	if n := m.RevokeDue(ctx); n != 1 || h.gh.Live(first.Credential.Token) || !h.gh.Live(next.Credential.Token) {
		t.Fatalf("revoked %d; the replaced token live %v", n, h.gh.Live(first.Credential.Token))
	}
}

// A token GitHub (or whatever answers as it) scopes wider than the grant
// asked is deleted and refused, never handed to a job or the gateway:
// more permissions, a higher level, more repositories, or all of them.
func TestWiderTokenRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  githubtest.Options
		grant string
		want  string
	}{
		{"more permissions", githubtest.Options{WidePermissions: true}, "release", "GitHub granted pull_requests: write, more than the grant asks for"},
		{"more repositories", githubtest.Options{WideRepositories: true}, "release", "GitHub granted repositories the grant does not name"},
		{"both", githubtest.Options{WidePermissions: true, WideRepositories: true}, "release", "more than the grant asks for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{clk: &clock{t: time.Now().UTC().Truncate(time.Second)}}
			opts := tc.opts
			opts.Now = h.clk.Now
			opts.Installations = []githubtest.Installation{{ID: 7890, Owner: "acme", Repositories: []string{"app", "lib"},
				Permissions: map[string]string{"contents": "write", "pull_requests": "write", "metadata": "read"}}}
			gh, err := githubtest.Start(opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gh.Close() })
			db := storetest.SQLite(t).DB
			vault, err := secret.Open(ctx, db, bytes.Repeat([]byte{3}, 32), secret.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(vault.Close)
			if _, err := vault.Put(ctx, "gh-key", gh.PrivateKey); err != nil {
				t.Fatal(err)
			}
			pol, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", gh.URL))}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.gh, h.pol, h.src = gh, pol, New(Config{Secrets: vault, Now: h.clk.Now})
			m, p, err := h.mint("gh", tc.grant)
			var me *mint.Error
			if !errors.As(err, &me) || me.Status != 502 || !strings.Contains(me.Description, tc.want) || m.Credential.Token != "" {
				t.Fatalf("minted %v, err = %v; want a 502 saying %q", m.Credential.Token != "", err, tc.want)
			}
			// The refused token comes back for the manager to record and
			// delete (TestWiderTokenDeletedOnceGitHubAnswers), as it does.
			rec := mint.Record{Material: m.Material, Authenticated: true}
			rec.Params = p.Params
			if err := h.src.Revoke(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if n := gh.LiveCount(); n != 0 {
				t.Fatalf("%d wider tokens left live at GitHub", n)
			}
		})
	}
}

// A record whose fields are not authenticated (stored before records were
// tagged, or planted by a database writer without the seal key) has its
// token sent only to the API its upstream has in the policy in force,
// never to the api_url the record names; with its upstream gone from the
// policy it is not acted on (the token dies by itself within the hour).
func TestUnauthenticatedRecordRevokedOnlyAtThePolicysAPI(t *testing.T) {
	var got atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer elsewhere.Close()
	for _, tt := range []struct {
		name          string
		upstream      string
		authenticated bool
		recordAPI     string
		wantErr       bool
		wantDeleted   bool // at the GitHub double (the policy's API)
		wantElsewhere bool
	}{
		{"authenticated: the record's API", "gh", true, "%GH%", false, true, false},
		{"unauthenticated, pointed elsewhere: the policy's API", "gh", false, elsewhere.URL, false, true, false},
		{"unauthenticated, upstream gone: not acted on", "gone", false, elsewhere.URL, true, false, false},
		{"unauthenticated, not a github_app upstream name", "", false, elsewhere.URL, true, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.src.cfg.Policy = func() *policy.Policy { return h.pol }
			m, _, err := h.mint("gh", "release")
			if err != nil {
				t.Fatal(err)
			}
			got.Store(0)
			params, _ := json.Marshal(map[string]string{"api_url": strings.ReplaceAll(tt.recordAPI, "%GH%", h.gh.URL)})
			rec := mint.Record{Material: m.Material, Authenticated: tt.authenticated}
			rec.Upstream = tt.upstream
			rec.Params = params
			err = h.src.Revoke(ctx, rec)
			if (err != nil) != tt.wantErr {
				t.Fatalf("revoke: %v, want error %v", err, tt.wantErr)
			}
			if deleted := !h.gh.Live(m.Credential.Token); deleted != tt.wantDeleted {
				t.Errorf("deleted at the policy's API: %v, want %v", deleted, tt.wantDeleted)
			}
			if (got.Load() > 0) != tt.wantElsewhere {
				t.Errorf("requests at the record's own api_url: %d", got.Load())
			}
		})
	}
}
