package auditlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/proccpu"
)

// BenchmarkAppend measures awaited appends per second with 1, 64 and 256
// concurrent writers on SQLite (and PostgreSQL when configured): durable
// (Append, as token issue and revocation use it), written (AppendWritten,
// as the gateway does without a journal) and request (Begin then Finish,
// as the gateway does for each forwarded request), each without and (on
// SQLite) with the journal, with the latency and the process CPU time of
// one append, measured until the store has every entry.
func BenchmarkAppend(b *testing.B) {
	for _, be := range realBackends(b) {
		for _, mode := range []string{"durable", "written", "durable+journal", "written+journal", "request+journal"} {
			journaled := strings.HasSuffix(mode, "+journal")
			if journaled && (be.name != "sqlite" || !journalSupported) {
				continue
			}
			for _, writers := range []int{1, 64, 256} {
				b.Run(fmt.Sprintf("%s/%s/writers=%d", be.name, mode, writers), func(b *testing.B) {
					ctx := context.Background()
					opts := Options{}
					if journaled {
						opts.Journal = filepath.Join(b.TempDir(), "audit.journal")
					}
					l, err := Open(ctx, be.st, testSigner, opts)
					if err != nil {
						b.Fatal(err)
					}
					defer l.Close(ctx)
					appendFn := l.appendDurable
					switch {
					case strings.HasPrefix(mode, "written"):
						appendFn = l.appendWritten
					case strings.HasPrefix(mode, "request"):
						appendFn = func(ctx context.Context, ev audit.Event) (int64, error) {
							in, err := l.begin(ctx, ev)
							if err != nil {
								return -1, err
							}
							whole := ev
							whole.Status, whole.BytesOut, whole.DurationMS = 200, 256, 1
							l.Finish(in, whole, "gateway.response")
							return 0, nil
						}
					}
					size0 := l.Size()
					cpu0 := proccpu.Used()
					var next, refused atomic.Int64
					var wg sync.WaitGroup
					b.ResetTimer()
					start := time.Now()
					for w := 0; w < writers; w++ {
						wg.Go(func() {
							for {
								i := next.Add(1)
								if i > int64(b.N) {
									return
								}
								_, err := appendFn(ctx, requestEvent(int(i)))
								for errors.Is(err, errJournalFull) {
									// Refused, as the gateway would (503): the
									// store is behind. Try again shortly.
									refused.Add(1)
									time.Sleep(100 * time.Microsecond)
									_, err = appendFn(ctx, requestEvent(int(i)))
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					acked := time.Since(start)
					// Until the store has them all: with a journal, folding
					// them in is part of the cost.
					for l.Size() < size0+int64(b.N) && !b.Failed() {
						time.Sleep(100 * time.Microsecond)
					}
					el := time.Since(start)
					b.ReportMetric(float64(b.N)/el.Seconds(), "appends/s")
					b.ReportMetric(float64(acked.Microseconds())*float64(writers)/float64(b.N), "µs/append")
					b.ReportMetric(float64((proccpu.Used()-cpu0).Microseconds())/float64(b.N), "cpu-µs/append")
					if n := refused.Load(); n > 0 {
						b.ReportMetric(float64(n)/float64(b.N), "refused/append")
					}
				})
			}
		}
	}
}

// requestEvent is a gateway request's decision as the gateway records it.
func requestEvent(i int) audit.Event {
	return audit.Event{Type: audit.TypeGateway, Lease: "lse_01JQ3M8Z6V4W9K2T7B5N0C1XRD", Issuer: "https://token.actions.githubusercontent.com",
		Subject: "repo:acme/app:ref:refs/heads/main", Job: "12345678/1", Repository: "acme/app", Grant: "deploy",
		Upstream: "api", Method: "GET", Path: "/v1/items/" + strconv.Itoa(i), Source: "10.0.0.1",
		Hint: "mfy_ab12…", PolicyVersion: "3f2a9c1d", Secret: "api-token", SecretVersion: 2,
		Detail: map[string]any{"decision": "allow", "rule": 0}}
}

// fillLog appends n entries as fast as group commit allows.
func fillLog(b *testing.B, st Storage, n int) {
	ctx := context.Background()
	l, err := Open(ctx, st, testSigner, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const window = 4000
	chans := make([]<-chan result, 0, window)
	for i := 0; i < n; i++ {
		chans = append(chans, l.appendAsync(gatewayEvent(i)))
		if len(chans) == window || i == n-1 {
			for _, c := range chans {
				if r := <-c; r.Err != nil {
					b.Fatal(r.Err)
				}
			}
			chans = chans[:0]
		}
	}
	if err := l.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("MAYFLY_AUDIT_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 100000
}

// BenchmarkVerify verifies a stored log of MAYFLY_AUDIT_BENCH_N entries
// (default 100,000) and reports entries per second.
func BenchmarkVerify(b *testing.B) {
	n := benchN()
	for _, be := range realBackends(b) {
		fillLog(b, be.st, n)
		b.Run(fmt.Sprintf("%s/n=%d", be.name, n), func(b *testing.B) {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				res, err := audit.Verify(context.Background(), be.st, testVerifier, audit.VerifyOptions{})
				if err != nil || !res.OK() || res.Size != int64(n) {
					b.Fatalf("Verify = %+v, %v", res, err)
				}
			}
			per := time.Since(start) / time.Duration(b.N)
			b.ReportMetric(float64(n)/per.Seconds(), "entries/s")
			b.ReportMetric(per.Seconds()*1e6/float64(n), "s/1M-entries")
		})
	}
}

// BenchmarkVerifyStream measures the CPU side of verification (parsing
// and hashing NDJSON), without storage.
func BenchmarkVerifyStream(b *testing.B) {
	n := benchN()
	st := newMemStore()
	fillLog(b, st, n)
	cp, _ := st.AuditCheckpoint(context.Background(), int64(n))
	var buf bytes.Buffer
	for _, e := range st.entries {
		buf.Write(e)
		buf.WriteByte('\n')
	}
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := audit.VerifyStream(context.Background(), bytes.NewReader(buf.Bytes()), cp, testVerifier, audit.VerifyOptions{})
		if err != nil || !res.OK() {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1e6/float64(n), "s/1M-entries")
}

// BenchmarkProof measures inclusion and consistency proof generation on a
// stored log.
func BenchmarkProof(b *testing.B) {
	const n = 20000
	for _, be := range realBackends(b) {
		b.Run(be.name, func(b *testing.B) {
			fillLog(b, be.st, n)
			ctx := context.Background()
			l, err := Open(ctx, be.st, testSigner, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(ctx)
			b.Run("inclusion", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if _, err := l.InclusionProof(ctx, int64(i*7919%n), n); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("consistency", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if _, err := l.ConsistencyProof(ctx, int64(1+i*7919%(n-1)), n); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
