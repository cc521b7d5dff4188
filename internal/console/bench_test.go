package console

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// BenchmarkPages measures each console page's server time (the handler,
// from request to rendered HTML) over a store of MAYFLY_BENCH_ENTRIES audit
// entries (default 1,000,000) and MAYFLY_BENCH_LEASES live leases (default
// 100,000), embedded SQLite. Filling takes a few minutes; run with
//
//	go test -run '^$' -bench Pages -benchtime 20x ./internal/console/
//
// The store is filled once per run of the binary and shared by the
// sub-benchmarks, whose ns/op is the page's server time.
func BenchmarkPages(b *testing.B) {
	entries, leases := envInt("MAYFLY_BENCH_ENTRIES", 1_000_000), envInt("MAYFLY_BENCH_LEASES", 100_000)
	bn := newBench(b, storetest.SQLite(b).DB, leases, entries)
	last := strconv.Itoa(entries - 1)
	mid := strconv.Itoa(entries / 2)
	pages := []struct{ name, path string }{
		{"leases", "/ui/leases"},
		{"leases_grant_deploy", "/ui/leases?grant=deploy"},
		{"leases_repository", "/ui/leases?repository=acme%2Fapp7"},
		{"leases_subject", "/ui/leases?subject=repo%3Aacme%2Fapp3%3Aref%3Arefs%2Fheads%2Fmain"},
		{"leases_job", "/ui/leases?job=job-5"},
		{"leases_repository_none", "/ui/leases?repository=nobody%2Fnothing"},
		{"leases_subject_none", "/ui/leases?subject=nobody"},
		{"leases_page_1000", "/ui/leases?cursor=" + bn.leaseCursorAt(b, leases/2)},
		{"audit_newest", "/ui/audit"},
		{"audit_middle", "/ui/audit?before=" + mid},
		{"audit_type_exchange", "/ui/audit?type=token.exchange"},
		{"audit_lease", "/ui/audit?lease=lse_00001234"},
		{"audit_subject", "/ui/audit?subject=repo%3Aacme%2Fapp7%3Aref%3Arefs%2Fheads%2Fmain"},
		{"audit_upstream_status", "/ui/audit?upstream=api1&status=2xx"},
		{"audit_status_403", "/ui/audit?status=403"},
		{"audit_no_match", "/ui/audit?type=token.exchange&status=500"},
		{"audit_entry_newest_proof", "/ui/audit/" + last},
		{"audit_entry_first_proof", "/ui/audit/0"},
		{"leaks", "/ui/leaks"},
		{"refused", "/ui/refused"},
		{"policy", "/ui/policy"},
		{"secrets", "/ui/secrets"},
		{"health", "/ui/health"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				if w := bn.get(b, p.path); w.Code != 200 {
					b.Fatalf("%s: %d %s", p.path, w.Code, w.Body)
				}
			}
		})
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// leaseCursorAt is the listing cursor after the i-th newest lease.
func (bn *bench) leaseCursorAt(b *testing.B, i int) string {
	ls, err := bn.m.List(b.Context(), leaseFilterLive(bn, i))
	if err != nil || len(ls) == 0 {
		b.Fatalf("cursor: %v", err)
	}
	l := ls[len(ls)-1]
	return formatLeaseCursor(leaseCursor(l.IssuedAt, l.ID))
}

// BenchmarkIndexer measures the audit indexer (the sink that keeps the
// console's audit index) on batches of 2,000 entries, as the server runs
// it: ns/op is per entry.
func BenchmarkIndexer(b *testing.B) {
	db := storetest.SQLite(b).DB
	const batch = 2000
	es := make([][]byte, batch)
	for i := range es {
		ev := event(i)
		body, err := audit.EncodeEvent(nil, &ev)
		if err != nil {
			b.Fatal(err)
		}
		es[i] = audit.AppendEntry(nil, int64(i), audit.FormatTime(time.Now()), body)
	}
	x := Indexer{Store: db}
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		if err := x.Write(b.Context(), es[:min(batch, b.N-i)], int64(i)); err != nil {
			b.Fatal(err)
		}
	}
}
