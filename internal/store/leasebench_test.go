package store_test

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/proccpu"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// BenchmarkExchangeInsert measures the store's part of a token exchange:
// a lease with its jti, policy version check and audit record, in the
// shape an exchange writes (GitHub Actions' claims), from 1 and 32
// concurrent writers. cpu-µs/op is this process's CPU (user+system) per
// insert, group commits and fsyncs included.
func BenchmarkExchangeInsert(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/writers=%d", be.Name, writers), func(b *testing.B) {
				v0 := int64(0)
				rec := make([]byte, 600)
				for i := range rec {
					rec[i] = 'a' + byte(i%26)
				}
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				cpu0 := proccpu.Used()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						l := exchangeLease()
						l.AtPolicy = &v0
						l.Note = &store.Note{Make: func(store.Changes) ([][]byte, error) { return [][]byte{rec}, nil }}
						if err := be.DB.InsertLease(ctx, l); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(proccpu.Used()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

func exchangeLease() store.Lease {
	var id [12]byte
	binary.BigEndian.PutUint32(id[:4], uint32(time.Now().Unix())) // as lease ids are made
	rand.Read(id[4:])
	var h [32]byte
	rand.Read(h[:])
	var sha [20]byte
	rand.Read(sha[:])
	var jti [16]byte
	rand.Read(jti[:])
	run := fmt.Sprint(time.Now().UnixNano() % 1e10)
	now := time.Now().UTC()
	repo, ref := "acme/app", "refs/heads/main"
	claims := map[string]string{
		"iss": "https://token.actions.githubusercontent.com", "aud": "https://mayfly.example", "sub": "repo:" + repo + ":ref:" + ref,
		"jti": hex.EncodeToString(jti[:]), "iat": "1764921600", "nbf": "1764921600", "exp": "1764922200",
		"repository": repo, "repository_id": "123456789", "repository_owner": "acme", "repository_owner_id": "987654",
		"repository_visibility": "private", "ref": ref, "ref_type": "branch", "ref_protected": "false", "workflow": "CI",
		"workflow_ref": repo + "/.github/workflows/ci.yml@" + ref, "job_workflow_ref": repo + "/.github/workflows/ci.yml@" + ref,
		"run_id": run, "run_number": run[len(run)-4:], "run_attempt": "1", "event_name": "push", "actor": "acme", "actor_id": "987654",
		"sha": hex.EncodeToString(sha[:]), "runner_environment": "github-hosted",
	}
	return store.Lease{ID: "lse_" + hex.EncodeToString(id[:]), Hash: h, Issuer: "ci", Subject: claims["sub"],
		Job: "github:" + repo + ":" + run + ":1", Claims: claims, Grants: []string{"deploy"}, IssuedAt: now,
		ExpiresAt: now.Add(time.Hour), MaxExpiresAt: now.Add(time.Hour), Source: "127.0.0.1",
		OnceJTI: &store.JTI{Issuer: "ci", ID: claims["jti"], Expires: now.Add(10 * time.Minute)}}
}

// BenchmarkAuditPendingRead measures the audit sequencer's read of pending
// records (20 of them) when the 100,000 records below them have been
// sequenced (deleted) and not yet vacuumed, as between two autovacuum
// runs: from the lowest id, as the sequencer read before it kept a floor,
// and from a floor just below them. PostgreSQL only.
//
//	MAYFLY_TEST_POSTGRES=… go test ./internal/store -run X -bench AuditPendingRead
func BenchmarkAuditPendingRead(b *testing.B) {
	var db *store.DB
	for _, be := range storetest.Backends(b) {
		if be.Name == "postgres" {
			db = be.DB
		}
	}
	if db == nil {
		b.Skip("PostgreSQL only (MAYFLY_TEST_POSTGRES)")
	}
	if _, err := db.SQL().ExecContext(ctx, `ALTER TABLE audit_pending SET (autovacuum_enabled = false)`); err != nil {
		b.Fatal(err)
	}
	rec := make([]byte, 300)
	recs := make([][]byte, 10000)
	for i := range recs {
		recs[i] = rec
	}
	var last int64
	for range 10 {
		ids, err := db.AddAuditPending(ctx, recs, store.AuditDurable)
		if err != nil {
			b.Fatal(err)
		}
		last = ids[len(ids)-1]
	}
	if _, err := db.AddAuditPending(ctx, recs[:20], store.AuditDurable); err != nil {
		b.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `DELETE FROM audit_pending WHERE id <= $1`, last); err != nil {
		b.Fatal(err)
	}
	seq, err := db.TryAuditSequencer(ctx)
	if err != nil || seq == nil {
		b.Fatalf("sequencer: %v, %v", seq, err)
	}
	defer seq.Close()
	for _, c := range []struct {
		name  string
		after int64
	}{{"from-start", 0}, {"from-floor", last - 100}} {
		b.Run(c.name, func(b *testing.B) {
			skip := []int64{last + 1, last + 3} // held decisions
			for b.Loop() {
				ids, _, err := seq.Pending(ctx, c.after, 1000, skip)
				if err != nil || len(ids) != 18 {
					b.Fatalf("%d records, %v", len(ids), err)
				}
			}
		})
	}
}
