package authority

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// credUpstream stands for an outside service that makes credentials (a
// database, GitHub): it keeps what exists and can be told to refuse.
type credUpstream struct {
	mu       sync.Mutex
	live     map[string]bool // credential values that exist upstream
	minted   int
	revokes  int // revocations asked for
	failMint *mint.Error
}

func (u *credUpstream) Plan(_ context.Context, r mint.Request) (mint.Plan, error) {
	return mint.Plan{Name: "role_" + r.ID[4:], Params: []byte("{}")}, nil
}

func (u *credUpstream) Mint(_ context.Context, r mint.Request, p mint.Plan) (mint.Minted, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.failMint != nil {
		return mint.Minted{}, u.failMint
	}
	u.minted++
	v, err := token.NewPassword()
	if err != nil {
		return mint.Minted{}, err
	}
	u.live[v] = true
	c := mint.Credential{Username: p.Name, Password: v, DSN: "postgres://" + p.Name + ":" + v + "@db.test:5432/app", ExpiresAt: r.ExpiresAt}
	if r.Upstream.Kind() == policy.KindGitHubApp {
		c = mint.Credential{Token: v, ExpiresAt: r.ExpiresAt}
	}
	return mint.Minted{Credential: c, Secret: v, Material: []byte(v), ExpiresAt: r.ExpiresAt}, nil
}

func (u *credUpstream) Renew(context.Context, mint.Record, time.Time) error { return nil }

func (u *credUpstream) Revoke(_ context.Context, rec mint.Record) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.revokes++
	delete(u.live, string(rec.Material))
	return nil
}

func (u *credUpstream) exists(v string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.live[v]
}

type mintBench struct {
	*bench
	mt *mint.Manager
	up *credUpstream
	db *store.DB
}

func newMintBench(t *testing.T, b storetest.Backend) *mintBench {
	t.Helper()
	iss := devissuertest.Start(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(b.DB, h, lease.Options{})
	mb := &mintBench{bench: &bench{db: b.DB, m: m, iss: iss, rec: newRecorder(t, b.DB), sec: newVaultSecrets(t, b.DB)},
		up: &credUpstream{live: map[string]bool{}}, db: b.DB}
	mb.mt, err = mint.New(mint.Config{Store: b.DB, Hasher: h, SealKey: bytes.Repeat([]byte{1}, 32), Audit: mb.rec,
		Sources: map[string]mint.Source{policy.KindPostgres: mb.up, policy.KindGitHubApp: mb.up}})
	if err != nil {
		t.Fatal(err)
	}
	mb.a = New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: b.DB, Audit: mb.rec, Secrets: mb.sec, Minter: mb.mt})
	pol := fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  db:
    postgres:
      admin_dsn_secret: admin
      creation: CREATE ROLE "{{name}}" PASSWORD '{{password}}'
      revocation: DROP ROLE "{{name}}"
  db2:
    postgres:
      admin_dsn_secret: admin
      creation: CREATE ROLE "{{name}}" PASSWORD '{{password}}'
      revocation: DROP ROLE "{{name}}"
  gh:
    url: http://127.0.0.1:3
    credential: {github_app: {app_id: "1", private_key_secret: key, installation_id: "2"}}
grants:
  migrate: {upstream: db, ttl: 10m, bind_source_ip: true, who: [{issuer: ci, claims: {repository: acme/app}}]}
  migrate-too: {upstream: db, ttl: 10m, bind_source_ip: true, who: [{issuer: ci, claims: {repository: acme/app}}]}
  report: {upstream: db2, ttl: 10m, bind_source_ip: true, who: [{issuer: ci, claims: {repository: acme/app}}]}
  release:
    upstream: gh
    ttl: 10m
    github: {permissions: {contents: read}}
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {repository: acme/app}}]
`, iss.URL(), benchAudience, iss.Algorithm())
	if _, err := mb.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
		t.Fatal(err)
	}
	return mb
}

func (mb *mintBench) exchange(t *testing.T, scope ...string) (*ExchangeResult, error) {
	t.Helper()
	return mb.a.Exchange(ctx, ExchangeRequest{SubjectToken: mb.mint(t, map[string]any{"repository": "acme/app"}), Scope: scope, Source: corpAddr})
}

var ctx = context.Background()

func TestMintedCredentials(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			t.Run("delivered, leaked, revoked with the lease", func(t *testing.T) {
				mb := newMintBench(t, b)
				res, err := mb.exchange(t, "migrate", "report")
				if err != nil {
					t.Fatal(err)
				}
				c, c2 := res.Credentials["db"], res.Credentials["db2"]
				if c.Password == "" || c2.Password == "" || !mb.up.exists(c.Password) || !strings.Contains(c.DSN, c.Password) {
					t.Fatalf("credentials %+v", res.Credentials)
				}
				if ev, _ := mb.rec.last("token.exchange"); ev.Status != 200 || ev.Upstream != "db db2" {
					t.Fatalf("exchange entry %+v", ev)
				}
				// A leak report naming the password revokes its lease, and
				// with it every credential of the lease.
				lr, err := mb.a.Leak(ctx, []string{c.Password, "mfyp" + "_unknown"}, LeakOrigin{}, corpAddr)
				if err != nil || len(lr.Revoked) != 1 || lr.Revoked[0].LeaseID != res.LeaseID || lr.Unknown != 1 || strings.Contains(lr.Revoked[0].Hint, c.Password) {
					t.Fatalf("leak = %+v %v", lr, err)
				}
				if _, err := mb.m.Lookup(ctx, res.Token); !errors.Is(err, lease.ErrRevoked) {
					t.Fatalf("lease not revoked: %v", err)
				}
				if n := mb.mt.RevokeDue(ctx); n != 2 || mb.up.exists(c.Password) || mb.up.exists(c2.Password) {
					t.Fatalf("revoked %d upstream", n)
				}
				lr, err = mb.a.Leak(ctx, []string{c.Password}, LeakOrigin{}, corpAddr)
				if err != nil || lr.AlreadyRevoked != 1 || len(lr.Revoked) != 0 {
					t.Fatalf("second report = %+v %v", lr, err)
				}
			})
			t.Run("exec ends: the holder revokes", func(t *testing.T) {
				mb := newMintBench(t, b)
				res, err := mb.exchange(t, "migrate")
				if err != nil {
					t.Fatal(err)
				}
				if err := mb.a.RevokeToken(ctx, res.Token, corpAddr, "holder"); err != nil {
					t.Fatal(err)
				}
				if n := mb.mt.RevokeDue(ctx); n != 1 || mb.up.exists(res.Credentials["db"].Password) {
					t.Fatalf("revoked %d", n)
				}
			})
			t.Run("refused upstream: a clear answer, audited, nothing left", func(t *testing.T) {
				mb := newMintBench(t, b)
				mb.up.failMint = mint.Errorf(502, "upstream_refused", "creation statements failed: permission denied to create role")
				_, err := mb.exchange(t, "migrate")
				var re *Error
				if !errors.As(err, &re) || re.Status != 502 || !strings.Contains(re.Description, "grant migrate: creation statements failed") {
					t.Fatalf("err = %v", err)
				}
				ev, _ := mb.rec.last("token.exchange")
				if ev.Status != 502 || ev.Check != "upstream_credential" || !strings.Contains(ev.Reason, "permission denied") || ev.Lease == "" {
					t.Fatalf("denial entry %+v", ev)
				}
				if ls, _ := mb.m.List(ctx, store.LeaseFilter{ID: ev.Lease}); len(ls) != 1 || ls[0].RevokedAt.IsZero() {
					t.Fatalf("the lease of a failed mint lives: %+v", ls)
				}
				if len(mb.up.live) != 0 {
					t.Fatal("something left upstream")
				}
			})
			t.Run("policy drops the grant", func(t *testing.T) {
				mb := newMintBench(t, b)
				res, err := mb.exchange(t, "migrate")
				if err != nil {
					t.Fatal(err)
				}
				pol := fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  api: {url: "http://127.0.0.1:2", credential: {secret: gh}}
grants:
  other: {upstream: api, ttl: 5m, allow: [{methods: [GET], paths: ["/x"]}], who: [{issuer: ci, claims: {repository: acme/app}}]}
`, mb.iss.URL(), benchAudience, mb.iss.Algorithm())
				mb.sec.set(t, "gh", "x")
				if _, err := mb.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
					t.Fatal(err)
				}
				if n := mb.mt.RevokeDue(ctx); n != 1 || mb.up.exists(res.Credentials["db"].Password) {
					t.Fatalf("credential of a dropped grant: revoked %d", n)
				}
			})
			t.Run("two grants, one upstream", func(t *testing.T) {
				mb := newMintBench(t, b)
				_, err := mb.exchange(t, "migrate", "migrate-too")
				var re *Error
				if !errors.As(err, &re) || re.Status != 400 || re.Code != "invalid_scope" {
					t.Fatalf("err = %v", err)
				}
			})
			t.Run("shared credential: minted once, cached", func(t *testing.T) {
				mb := newMintBench(t, b)
				for i := 0; i < 3; i++ {
					res, err := mb.exchange(t, "release")
					if err != nil {
						t.Fatal(err)
					}
					if len(res.Credentials) != 0 {
						t.Fatal("a gateway-delivered credential reached the job")
					}
				}
				if mb.up.minted != 1 {
					t.Fatalf("minted %d times", mb.up.minted)
				}
				mb.up.failMint = mint.Errorf(503, "upstream_unavailable", "rate limited")
				if _, err := mb.exchange(t, "release"); err != nil {
					t.Fatalf("served from cache while the upstream refuses: %v", err)
				}
			})
			t.Run("no source for the kind", func(t *testing.T) {
				mb := newMintBench(t, b)
				mb.a.cfg.Minter = nil
				_, err := mb.exchange(t, "migrate")
				var re *Error
				if !errors.As(err, &re) || re.Status != 500 || !strings.Contains(re.Description, "cannot mint postgres") {
					t.Fatalf("err = %v", err)
				}
			})
		})
	}
}
