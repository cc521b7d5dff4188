package secret

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// BenchmarkPut measures durable sealed writes (new names, so no version
// conflicts) with 1 and 32 concurrent writers on each backend.
func BenchmarkPut(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		v, err := Open(ctx, be.DB, newKey(b), Options{})
		if err != nil {
			b.Fatal(err)
		}
		val := []byte("ghp_0123456789abcdefghijklmnopqrstuvwxyz")
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/writers=%d", be.Name, writers), func(b *testing.B) {
				var next atomic.Int64
				run := fmt.Sprintf("p%d-", writers)
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						name := run + fmt.Sprint(next.Add(1))
						if _, err := v.Put(ctx, name, val); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			})
		}
		v.Close()
	}
}

// BenchmarkReveal measures the gateway's per-request unseal, with the
// sealed-record cache (no store read) and without (one read per call).
func BenchmarkReveal(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		key := newKey(b)
		for _, cache := range []bool{true, false} {
			opts := Options{RecordCacheTTL: -1}
			if cache {
				opts.RecordCacheTTL = MaxRecordCacheTTL
			}
			v, err := Open(ctx, be.DB, key, opts)
			if err != nil {
				b.Fatal(err)
			}
			const n = 100
			for i := range n {
				if _, err := v.Put(ctx, fmt.Sprintf("r%d", i), []byte("ghp_0123456789abcdefghijklmnopqrstuvwxyz")); err != nil && i == 0 {
					b.Fatal(err)
				}
			}
			for _, readers := range []int{1, 32} {
				b.Run(fmt.Sprintf("%s/cache=%v/readers=%d", be.Name, cache, readers), func(b *testing.B) {
					var next atomic.Int64
					b.SetParallelism(max(1, readers/runtime.GOMAXPROCS(0)))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							val, _, err := v.Reveal(ctx, fmt.Sprintf("r%d", next.Add(1)%n))
							if err != nil {
								b.Error(err)
								return
							}
							zero(val)
						}
					})
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
				})
			}
			v.Close()
		}
	}
}
