package auditlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// BenchmarkActionWithEntry compares the two ways an action (a lease
// insert, as an exchange makes) gets its audit entry: appended after the
// action commits ("after", how actions were recorded before), and written
// as a pending record in the action's own transaction, then awaited
// ("together"). Both in one process, so that a run compares them under
// the same load.
//
//	go test -run - -bench ActionWithEntry -count 5 ./internal/auditlog/
func BenchmarkActionWithEntry(b *testing.B) {
	type mode struct {
		name string
		open func(b *testing.B) (*store.DB, Options)
	}
	modes := []mode{{"sqlite", func(b *testing.B) (*store.DB, Options) { return storetest.SQLite(b).DB, Options{} }}}
	if JournalSupported() {
		modes = append(modes, mode{"sqlite journal", func(b *testing.B) (*store.DB, Options) {
			return storetest.SQLite(b).DB, Options{Journal: journalPathTB(b)}
		}})
	}
	modes = append(modes, mode{"postgres shared", func(b *testing.B) (*store.DB, Options) {
		storetest.PostgresDSN(b)
		return storetest.Postgres(b).DB, Options{Shared: true}
	}})
	for _, m := range modes {
		for _, clients := range []int{1, 16} {
			for _, how := range []string{"after", "together"} {
				b.Run(fmt.Sprintf("%s/clients=%d/%s", m.name, clients, how), func(b *testing.B) {
					ctx := context.Background()
					db, opts := m.open(b)
					l, err := Open(ctx, db, testSigner, opts)
					if err != nil {
						b.Fatal(err)
					}
					defer l.Close(ctx)
					var n atomic.Int64
					action := func() error {
						i := n.Add(1)
						id := fmt.Sprintf("lse_%016x", i)
						var h [32]byte
						binary.BigEndian.PutUint64(h[:], uint64(i))
						now := time.Now()
						ls := store.Lease{ID: id, Hash: h, Issuer: "ci", Subject: "s", Claims: map[string]string{}, Grants: []string{"deploy"},
							IssuedAt: now, ExpiresAt: now.Add(time.Minute), MaxExpiresAt: now.Add(time.Hour)}
						ev := audit.Event{Type: audit.TypeExchange, Lease: id, Issuer: "ci", Subject: "s", Grant: "deploy", Status: 200}
						if how == "after" {
							if err := db.InsertLease(ctx, ls); err != nil {
								return err
							}
							_, err := l.appendDurable(ctx, ev)
							return err
						}
						since := l.Size()
						rec, err := l.Record(ev)
						if err != nil {
							return err
						}
						ls.Note = &store.Note{Make: func(store.Changes) ([][]byte, error) { return [][]byte{rec}, nil }}
						if err := db.InsertLease(ctx, ls); err != nil {
							return err
						}
						for _, f := range l.Recorded(ctx, since, ls.Note.PIDs, ls.Note.Records) {
							if _, err := f.Wait(ctx); err != nil {
								return err
							}
						}
						return nil
					}
					b.ResetTimer()
					if clients == 1 {
						for range b.N {
							if err := action(); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					b.SetParallelism(clients)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := action(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		}
	}
}
