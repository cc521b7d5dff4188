package pgrole_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

type sourceHarness struct {
	db     *store.DB
	m      *mint.Manager
	src    *pgrole.Source
	vault  *secret.Vault
	log    *auditlog.Log
	pol    *policy.Policy
	pg     *pgroletest.Server
	hasher *token.Hasher
}

func newSourceHarness(t testing.TB, b storetest.Backend) *sourceHarness {
	t.Helper()
	ctx := context.Background()
	h := &sourceHarness{db: b.DB, pg: pgroletest.New(t, pgroletest.Options{})}
	key := make([]byte, secret.KeySize)
	rand.Read(key)
	var err error
	h.vault, err = secret.Open(ctx, b.DB, key, secret.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.vault.Close)
	if _, err := h.vault.Put(ctx, "app-db-admin", []byte(h.pg.AdminDSN)); err != nil {
		t.Fatal(err)
	}
	signer, _, err := audit.GenerateKey("pgrole.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	h.log, err = auditlog.Open(ctx, b.DB, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.log.Close(context.Background()) })
	h.pol = parsePolicy(t, h.pg, "app-db-admin")
	roles := pgrole.New(pgrole.Options{})
	t.Cleanup(roles.Close)
	h.src = &pgrole.Source{Roles: roles, Secrets: h.vault, Policy: func() *policy.Policy { return h.pol }, Known: b.DB.MintedNames}
	h.hasher, _ = token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	seal := make([]byte, 32)
	rand.Read(seal)
	h.m, err = mint.New(mint.Config{Store: b.DB, Sources: map[string]mint.Source{policy.KindPostgres: h.src}, Hasher: h.hasher,
		SealKey: seal, Audit: h.log, StalePending: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func parsePolicy(t testing.TB, s *pgroletest.Server, adminSecret string) *policy.Policy {
	t.Helper()
	y := `issuers:
  ci: {url: "http://127.0.0.1:1", audience: x}
upstreams:
  ` + s.Upstream + `:
    postgres:
      admin_dsn_secret: ` + adminSecret + `
      creation: ` + quoteYAML(s.Creation()) + `
      revocation: ` + quoteYAML(s.Revocation()) + `
  broken-db:
    postgres:
      admin_dsn_secret: ` + adminSecret + `
      creation: ` + quoteYAML(`CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' IN ROLE no_such_group;`) + `
      revocation: 'DROP ROLE IF EXISTS "{{name}}";'
  unstored-db:
    postgres:
      admin_dsn_secret: not-stored
      creation: ` + quoteYAML(s.Creation()) + `
      revocation: 'DROP ROLE IF EXISTS "{{name}}";'
grants:
  migrate:
    upstream: ` + s.Upstream + `
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {project: x}}]
  broken:
    upstream: broken-db
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {project: x}}]
  unstored:
    upstream: unstored-db
    ttl: 10m
    bind_source_ip: true
    who: [{issuer: ci, claims: {project: x}}]
`
	p, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(y)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func quoteYAML(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func insertLease(t testing.TB, db *store.DB, id string, exp time.Time) {
	t.Helper()
	now := time.Now().UTC()
	var h [32]byte
	copy(h[:], id)
	if err := db.InsertLease(context.Background(), store.Lease{ID: id, Hash: h, Issuer: "ci", Subject: "s", Job: "j", Grants: []string{"migrate"},
		IssuedAt: now, ExpiresAt: exp, MaxExpiresAt: exp.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

// Through the mint manager on both stores: the role is recorded then made,
// found by its password's keyed hash, renewed, and revoked with its lease.
func TestSourceThroughMint(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newSourceHarness(t, b)
			ctx := context.Background()
			up, g := h.pol.Upstreams[h.pg.Upstream], h.pol.Grants["migrate"]
			exp := time.Now().Add(10 * time.Minute)
			lid := leaseID(1)
			insertLease(t, h.db, lid, exp)
			is, err := h.m.Mint(ctx, lid, up, g, exp)
			if err != nil {
				t.Fatal(err)
			}
			c := is.Credential
			if token.ParsePassword(c.Password) != nil || c.Username != pgsql.RoleName(lid, up.Name) || !strings.Contains(c.DSN, c.Password) || c.ExpiresAt.After(exp) {
				t.Fatalf("credential: user %s, expires %v", c.Username, c.ExpiresAt)
			}
			job, err := pgx.Connect(ctx, c.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer job.Close(ctx)
			if _, err := job.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
				t.Fatal(err)
			}
			// A leak report finds it by keyed hash.
			found, err := h.m.Lookup(ctx, []string{c.Password, "mfyp_unknown"})
			if err != nil || len(found) != 1 || found[0].Record.LeaseID != lid || found[0].Record.ExternalName != c.Username {
				t.Fatalf("lookup: %+v %v", found, err)
			}
			later := exp.Add(5 * time.Minute).Truncate(time.Second)
			if err := h.m.Renew(ctx, lid, later); err != nil {
				t.Fatal(err)
			}
			if got := validUntil(t, h.pg, c.Username); !got.Equal(later) {
				t.Fatalf("after renewal VALID UNTIL %v, want %v", got, later)
			}
			// The sweep leaves a recorded role alone and drops an orphan.
			orphan, err := h.src.Roles.Prepare(pgrole.Upstream{Name: up.Name, AdminDSN: h.pg.AdminDSN, Creation: h.pg.Creation()}, leaseID(99), exp)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.src.Roles.Create(ctx, pgrole.Upstream{Name: up.Name, AdminDSN: h.pg.AdminDSN, Creation: h.pg.Creation()}, orphan); err != nil {
				t.Fatal(err)
			}
			if n, err := h.src.Sweep(ctx); n != 1 || err == nil || !strings.Contains(err.Error(), "not-stored") {
				t.Fatalf("sweep dropped %d, %v; want the orphan, and the unstored upstream's error", n, err)
			}
			if got := h.pg.Roles(t, up.Name); len(got) != 1 || got[0] != c.Username {
				t.Fatalf("roles after the sweep: %v", got)
			}
			// The lease ends: the role goes, with its session.
			if err := h.m.RevokeLeases(ctx, []string{lid}, "revoked"); err != nil {
				t.Fatal(err)
			}
			if n := h.m.RevokeDue(ctx); n != 1 {
				t.Fatalf("RevokeDue revoked %d", n)
			}
			if _, err := job.Exec(ctx, "SELECT 1"); err == nil {
				t.Fatal("the session survived")
			}
			if got := h.pg.Roles(t, up.Name); len(got) != 0 {
				t.Fatalf("roles after revocation: %v", got)
			}
			// Nothing stored or audited holds the password.
			es, err := h.db.AuditEntries(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if strings.Contains(string(e), c.Password) || strings.Contains(string(e), h.pg.AdminDSN) {
					t.Fatal("an audit entry holds the password or the admin DSN")
				}
			}
		})
	}
}

// Faults answer with a clear cause and leave no role and no live record.
func TestSourceFaults(t *testing.T) {
	b := storetest.SQLite(t)
	h := newSourceHarness(t, b)
	ctx := context.Background()
	for i, tc := range []struct {
		grant  string
		status int
		code   string
		says   string
	}{
		{"broken", 502, "upstream_refused", "no_such_group"},
		{"unstored", 500, "upstream_misconfigured", `"not-stored"`},
	} {
		t.Run(tc.grant, func(t *testing.T) {
			g := h.pol.Grants[tc.grant]
			up := h.pol.Upstreams[g.Upstream]
			lid := leaseID(500 + i)
			insertLease(t, h.db, lid, time.Now().Add(time.Hour))
			_, err := h.m.Mint(ctx, lid, up, g, time.Now().Add(10*time.Minute))
			var me *mint.Error
			if !errors.As(err, &me) || me.Status != tc.status || me.Code != tc.code || !strings.Contains(me.Description, tc.says) || !strings.Contains(me.Description, up.Name) {
				t.Fatalf("Mint = %v, want %d %s saying %s", err, tc.status, tc.code, tc.says)
			}
			if strings.Contains(err.Error(), "mfyp_") {
				t.Fatal("the error holds a password")
			}
			if got := h.pg.Roles(t, up.Name); len(got) != 0 {
				t.Fatalf("roles left: %v", got)
			}
			// A secret that cannot be read fails the plan: nothing recorded.
			recs, err := h.db.MintedByLease(ctx, lid)
			if err != nil || len(recs) > 1 || len(recs) == 1 && recs[0].State == store.MintLive {
				t.Fatalf("record: %+v %v", recs, err)
			}
		})
	}
}

// A role is revoked on the server that made it: the record keeps the admin
// DSN secret and the server it named, and a role missing from another
// server is not taken as gone.
func TestSourceRevokesWhereItMinted(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// after minting: repoint the policy or the secret, and perhaps drop
		// the role out of band
		change  func(t *testing.T, s *pgroletest.Server, secrets mapSecrets, pol **policy.Policy, role string)
		revoked bool // Revoke succeeds; else it must fail
	}{
		{"the policy names another admin DSN secret", func(t *testing.T, s *pgroletest.Server, secrets mapSecrets, pol **policy.Policy, _ string) {
			secrets["new-admin"] = "postgres://admin:pw@127.0.0.1:1/app?sslmode=disable&connect_timeout=2"
			*pol = parsePolicy(t, s, "new-admin")
		}, true},
		{"the secret names another server, the role gone from the first", func(t *testing.T, s *pgroletest.Server, secrets mapSecrets, _ **policy.Policy, role string) {
			super, err := pgx.Connect(ctx, s.SuperDSN)
			if err != nil {
				t.Fatal(err)
			}
			defer super.Close(ctx)
			if _, err := super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role); err != nil {
				t.Fatal(err)
			}
			if _, err := super.Exec(ctx, `DROP ROLE `+pgx.Identifier{role}.Sanitize()); err != nil {
				t.Fatal(err)
			}
			secrets["app-db-admin"] = strings.Replace(s.AdminDSN, "@127.0.0.1:", "@localhost:", 1)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := pgroletest.New(t, pgroletest.Options{})
			if !strings.Contains(s.AdminDSN, "@127.0.0.1:") {
				t.Skip("MAYFLY_TEST_POSTGRES must name 127.0.0.1 for this test")
			}
			secrets := mapSecrets{"app-db-admin": s.AdminDSN}
			pol := parsePolicy(t, s, "app-db-admin")
			roles := pgrole.New(pgrole.Options{})
			defer roles.Close()
			src := &pgrole.Source{Roles: roles, Secrets: secrets, Policy: func() *policy.Policy { return pol }}
			req := mint.Request{ID: "mnt_where", LeaseID: "lse_00000000000000000000beef", Upstream: pol.Upstreams[s.Upstream],
				Grant: pol.Grants["migrate"], ExpiresAt: time.Now().Add(time.Hour)}
			plan, err := src.Plan(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			m, err := src.Mint(ctx, req, plan)
			if err != nil {
				t.Fatal(err)
			}
			job, err := pgx.Connect(ctx, m.Credential.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer job.Close(ctx)

			tt.change(t, s, secrets, &pol, plan.Name)
			rec := mint.Record{Minted: store.Minted{ID: req.ID, LeaseID: req.LeaseID, Upstream: s.Upstream, Kind: policy.KindPostgres,
				ExternalName: plan.Name, Params: plan.Params}, Authenticated: true}
			err = src.Revoke(ctx, rec)
			if !tt.revoked {
				if err == nil || !strings.Contains(err.Error(), "another server") {
					t.Fatalf("revoke = %v, want a refusal to take the role as gone", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			var who string
			if err := job.QueryRow(ctx, `SELECT current_user`).Scan(&who); err == nil {
				t.Fatal("the job's session still runs after revocation")
			}
			if _, err := pgx.Connect(ctx, m.Credential.DSN); err == nil {
				t.Fatal("the role still logs in after revocation")
			}
		})
	}
}

type mapSecrets map[string]string

func (m mapSecrets) Reveal(_ context.Context, name string) ([]byte, int, error) {
	v, ok := m[name]
	if !ok {
		return nil, 0, errors.New("no such secret")
	}
	return []byte(v), 1, nil
}
