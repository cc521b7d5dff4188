package pgrole_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A database writer without mayfly's keys plants minted-credential records
// carrying their own revocation SQL and admin DSN secret name. Their SQL
// must never run: a record without a valid tag is revoked only with the
// policy's statements and admin DSN secret for its upstream, and not at
// all when its upstream is not in the policy. An untagged record of an
// upstream in the policy (one made before records were tagged) is still
// revoked, with the policy's values.
func TestPlantedRecordsDoNotRunTheirSQL(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := newSourceHarness(t, b)
			ctx := context.Background()
			up, g := h.pol.Upstreams[h.pg.Upstream], h.pol.Grants["migrate"]
			exp := time.Now().Add(10 * time.Minute)
			live := leaseID(1)
			insertLease(t, h.db, live, exp)
			is, err := h.m.Mint(ctx, live, up, g, exp)
			if err != nil {
				t.Fatal(err)
			}
			// A role made before records were tagged: its record is
			// untagged (as every postgres record was), and names an admin
			// DSN secret that is not the policy's.
			u := pgrole.Upstream{Name: up.Name, AdminDSN: h.pg.AdminDSN, Creation: h.pg.Creation()}
			old, err := h.src.Roles.Prepare(u, leaseID(2), exp)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.src.Roles.Create(ctx, u, old); err != nil {
				t.Fatal(err)
			}
			params := func(secret, revocation string) []byte {
				b, err := json.Marshal(map[string]string{"admin_dsn_secret": secret, "revocation": revocation})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			liveRec, err := h.db.MintedByID(ctx, is.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range []store.Minted{
				// Its upstream no longer in the policy, the live role's name,
				// the writer's SQL run as the admin role.
				{ID: "mnt_planted_gone", LeaseID: leaseID(3), Upstream: "gone-db", Kind: policy.KindPostgres, ExternalName: is.Credential.Username,
					Params: params("app-db-admin", `CREATE TABLE mayfly_planted_gone (x int); DROP ROLE IF EXISTS "{{name}}";`)},
				// Its upstream in the policy: the policy's statements and
				// secret, never the record's.
				{ID: "mnt_legacy_old", LeaseID: leaseID(2), Upstream: up.Name, Kind: policy.KindPostgres, ExternalName: old.Name,
					Params: params("planted-admin", `CREATE TABLE mayfly_planted_old (x int); DROP ROLE IF EXISTS "{{name}}";`)},
				// The tag of the live record copied onto a record of the
				// writer's: it does not verify, so nothing is done.
				{ID: "mnt_planted_copy", LeaseID: live, Upstream: up.Name, Kind: policy.KindPostgres, ExternalName: is.Credential.Username,
					Params: params("app-db-admin", `CREATE TABLE mayfly_planted_copy (x int); DROP ROLE IF EXISTS "{{name}}";`), Sealed: liveRec.Sealed},
			} {
				rec.State, rec.Reason, rec.CreatedAt, rec.ExpiresAt = store.MintRevoking, "revoked", time.Now(), exp
				if err := h.db.InsertMinted(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}
			if n := h.m.RevokeDue(ctx); n != 1 {
				t.Errorf("RevokeDue revoked %d, want the legacy record of an upstream in the policy only", n)
			}
			if got := h.pg.Roles(t, up.Name); len(got) != 1 || got[0] != is.Credential.Username {
				t.Errorf("roles %v, want the live one only (the legacy one revoked, the live one untouched)", got)
			}
			for _, table := range []string{"mayfly_planted_gone", "mayfly_planted_old", "mayfly_planted_copy"} {
				if tableExists(t, h.pg, table) {
					t.Errorf("a planted record's revocation SQL ran (table %s made)", table)
				}
			}
			for id, want := range map[string]string{"mnt_planted_gone": store.MintRevoking, "mnt_planted_copy": store.MintRefused, "mnt_legacy_old": store.MintRevoked} {
				rec, err := h.db.MintedByID(ctx, id)
				if err != nil || rec.State != want {
					t.Errorf("record %s: state %q (%v), want %q", id, rec.State, err, want)
				}
			}
			if job, err := pgx.Connect(ctx, is.Credential.DSN); err != nil {
				t.Errorf("the live role no longer logs in: %v", err)
			} else {
				job.Close(ctx)
			}
		})
	}
}

func tableExists(t *testing.T, s *pgroletest.Server, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.SuperDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, "public."+pgsql.QuoteIdent(name)).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}
