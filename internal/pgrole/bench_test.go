package pgrole_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/pgrole/pgroletest"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// BenchmarkRevokeLeases1000 revokes 1,000 leases' roles at once through the
// mint manager (its worker: batches of 256, 16 in parallel) on the real
// database, from marking the leases to the last role confirmed dropped, on
// both stores.
//
//	MAYFLY_TEST_POSTGRES=… go test ./internal/pgrole -run XXX -bench RevokeLeases1000 -benchtime 1x
func BenchmarkRevokeLeases1000(b *testing.B) {
	const n = 1000
	for _, be := range storetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			h := newSourceHarness(b, be)
			ctx := context.Background()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ids := benchMint(b, h, n, 10000+i*n)
				b.StartTimer()
				start := time.Now()
				if err := h.m.RevokeLeases(ctx, ids, "bench"); err != nil {
					b.Fatal(err)
				}
				done := 0
				for done < n && time.Since(start) < time.Minute {
					done += h.m.RevokeDue(ctx)
				}
				b.StopTimer()
				if done != n {
					b.Fatalf("revoked %d of %d", done, n)
				}
				b.ReportMetric(time.Since(start).Seconds(), "s/1000-leases")
				if left := h.pg.Roles(b, h.pg.Upstream); len(left) != 0 {
					b.Fatalf("%d roles left", len(left))
				}
			}
		})
	}
}

func benchMint(b *testing.B, h *sourceHarness, n, base int) []string {
	b.Helper()
	ctx := context.Background()
	up, g := h.pol.Upstreams[h.pg.Upstream], h.pol.Grants["migrate"]
	exp := time.Now().Add(time.Hour)
	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 8)
	for i := range n {
		ids[i] = leaseID(base + i)
		insertLease(b, h.db, ids[i], exp)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := h.m.Mint(ctx, ids[i], up, g, exp); err != nil {
				mu.Lock()
				first = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	return ids
}

// BenchmarkCreateRole is the upstream's share of a PostgreSQL-role
// exchange: one role made (creation statements, checks, VALID UNTIL, in one
// transaction over a pooled admin connection) and, untimed, dropped. It
// reports p50 and p99.
func BenchmarkCreateRole(b *testing.B) {
	s := pgroletest.New(b, pgroletest.Options{})
	r := pgrole.New(pgrole.Options{})
	defer r.Close()
	u := upstreamOf(s)
	ctx := context.Background()
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		c, err := r.Prepare(u, leaseID(i), time.Now().Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := r.Create(ctx, u, c); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		b.StopTimer()
		if err := r.Revoke(ctx, u, c.Name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
