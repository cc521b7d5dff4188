package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// commitLog counts group commits through Config.ObserveCommit.
type commitLog struct {
	mu sync.Mutex
	n  int
}

func (c *commitLog) observe(time.Duration, int, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *commitLog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// waitCount waits until at least n commits happened, or fails.
func (c *commitLog) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d commits, want %d", c.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type syncBackend struct {
	name string
	cfg  Config
}

func syncBackends(t *testing.T) []syncBackend {
	out := []syncBackend{{"sqlite", Config{Path: filepath.Join(t.TempDir(), "m.db")}}}
	dsn := os.Getenv("MAYFLY_TEST_POSTGRES")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("MAYFLY_TEST_POSTGRES is not set in CI: PostgreSQL tests must run")
		}
		return out
	}
	// A schema of its own (storetest.FreshSchema cannot be imported here:
	// it imports this package).
	// Random, as FreshSchema's: a name by the second (its zeros were
	// literal, not nanoseconds) collided with a run started in the same
	// second ("schema already exists").
	var rnd [6]byte
	rand.Read(rnd[:])
	schema := "mayfly_batch_" + hex.EncodeToString(rnd[:])
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		admin.Close()
	})
	return append(out, syncBackend{"postgres", Config{PostgresDSN: dsn + "&search_path=" + schema}})
}

// Written-mode commits are covered by a durable commit within SyncDelay:
// by the next durable write when one comes, else by a flush commit; and
// Close flushes what is still unsynced.
func TestWrittenCommitsBecomeDurable(t *testing.T) {
	ctx := context.Background()
	hash := [][32]byte{{1}}
	entry := [][]byte{[]byte(`{}`)}
	for _, be := range syncBackends(t) {
		t.Run(be.name, func(t *testing.T) {
			var commits commitLog
			cfg := be.cfg
			cfg.ObserveCommit = commits.observe
			// Long enough that a loaded machine's scheduling delays between two
			// calls of this test stay well inside it.
			cfg.SyncDelay = 200 * time.Millisecond
			db, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			base := commits.count()
			mode := func() int { // SQLite: the write connection's synchronous level
				var m int
				if err := db.write.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&m); err != nil {
					t.Fatal(err)
				}
				return m
			}

			// A written commit alone: a flush commit follows.
			if err := db.AppendAudit(ctx, 0, entry, 0, hash, AuditWritten); err != nil {
				t.Fatal(err)
			}
			if !db.postgres && mode() != 1 {
				t.Fatalf("synchronous = %d after a written commit, want 1 (NORMAL)", mode())
			}
			commits.waitCount(t, base+2)
			if !db.postgres && mode() != 2 {
				t.Fatalf("synchronous = %d after the flush, want 2 (FULL)", mode())
			}

			// A kept commit (the audit journal holds it): no flush follows,
			// and it stays in written mode until something durable comes.
			n0 := commits.count()
			if err := db.AppendAudit(ctx, 1, entry, 1, hash, AuditKept); err != nil {
				t.Fatal(err)
			}
			commits.waitCount(t, n0+1)
			time.Sleep(4 * cfg.SyncDelay)
			if got := commits.count(); got != n0+1 {
				t.Fatalf("%d commits after a kept one, want none", got-n0-1)
			}
			if !db.batch.unsyncedSince().IsZero() {
				t.Fatal("a kept commit set a durability deadline")
			}
			if err := db.AppendAudit(ctx, 2, entry, 2, hash, AuditWritten); err != nil {
				t.Fatal(err)
			}
			commits.waitCount(t, n0+3) // the written one, then its flush

			// A written commit followed by a durable one: no flush needed.
			// (A batched writer hears of its commit just before the commit
			// is counted: wait for the count, then check nothing follows.)
			n := commits.count()
			if err := db.AppendAudit(ctx, 3, entry, 3, hash, AuditWritten); err != nil {
				t.Fatal(err)
			}
			if err := db.AppendAudit(ctx, 4, entry, 4, hash, AuditDurable); err != nil {
				t.Fatal(err)
			}
			commits.waitCount(t, n+2)
			time.Sleep(4 * cfg.SyncDelay)
			if got := commits.count(); got != n+2 {
				t.Fatalf("%d commits after a durable one covered the written one, want none", got-n-2)
			}

			// A batched durable write covers a direct written one too.
			n = commits.count()
			if err := db.AppendAudit(ctx, 5, entry, 5, hash, AuditWritten); err != nil {
				t.Fatal(err)
			}
			// (Ping reads since readiness stopped writing: a batched write
			// of meta is the durable one.)
			if _, err := db.PutMetaIfAbsent(ctx, "batch-test", []byte("x")); err != nil {
				t.Fatal(err)
			}
			commits.waitCount(t, n+2)
			time.Sleep(4 * cfg.SyncDelay)
			if got := commits.count(); got != n+2 {
				t.Fatalf("%d commits after a batched durable write covered the written one, want none", got-n-2)
			}

			// Direct and batched writers at once share the connection.
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for range 20 {
						if _, err := db.PutMetaIfAbsent(ctx, "batch-test", []byte("x")); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			for i := int64(6); i < 24; i++ {
				if err := db.AppendAudit(ctx, i, entry, i, hash, AuditWritten); err != nil {
					t.Fatal(err)
				}
			}
			wg.Wait()

			// Written commits in a stream that never pauses for SyncDelay:
			// still a durable commit at least every SyncDelay.
			durables := db.batch.durables.Load()
			start := time.Now()
			end := int64(24)
			for ; time.Since(start) < 10*cfg.SyncDelay; end++ {
				if err := db.AppendAudit(ctx, end, entry, end, hash, AuditWritten); err != nil {
					t.Fatal(err)
				}
				time.Sleep(3 * time.Millisecond)
			}
			// (One per two SyncDelays: timers run late on a loaded machine.)
			want := int64(time.Since(start)/(2*cfg.SyncDelay)) - 1
			if got := db.batch.durables.Load() - durables; got < want {
				t.Fatalf("%d durable commits in %v of written ones, want at least %d", got, time.Since(start), want)
			}
			n = commits.count()
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if commits.count() > n+1 {
				t.Fatalf("Close made %d commits", commits.count()-n)
			}
			db2, err := Open(ctx, be.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db2.Close()
			if size, err := db2.AuditSize(ctx); err != nil || size != end {
				t.Fatalf("size after reopen = %d %v", size, err)
			}
		})
	}
}

// Readiness reads: a ping makes no commit on either backend.
func TestPingDoesNotWrite(t *testing.T) {
	for _, b := range syncBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			var commits commitLog
			cfg := b.cfg
			cfg.ObserveCommit = commits.observe
			db, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for range 5 {
				if err := db.Ping(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if n := commits.count(); n != 0 {
				t.Fatalf("%d commits for 5 pings", n)
			}
		})
	}
}

// Under a steady stream of written commits made outside the batcher (the
// PostgreSQL audit writer's), flushes come once per SyncDelay, not back to
// back: a commit made during a flush is due SyncDelay after that flush
// began. Flushes still come (the lower bound is loose: timers and
// statements run late on a loaded machine, as under -race in CI), and the
// last commit is covered once the stream stops.
func TestFlushRate(t *testing.T) {
	ctx := context.Background()
	for _, be := range syncBackends(t) {
		t.Run(be.name, func(t *testing.T) {
			cfg := be.cfg
			cfg.SyncDelay = 50 * time.Millisecond
			db, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			d0 := db.batch.durables.Load()
			start := time.Now()
			for time.Since(start) < 40*cfg.SyncDelay {
				db.batch.noteUnsynced()
				time.Sleep(500 * time.Microsecond)
			}
			took := time.Since(start)
			got := db.batch.durables.Load() - d0
			t.Logf("%d flushes in %v", got, took)
			if most := int64(took/cfg.SyncDelay) + 2; got > most {
				t.Fatalf("%d flushes in %v of steady written commits, want at most %d (one per SyncDelay)", got, took, most)
			}
			if least := int64(took/(4*cfg.SyncDelay)) - 1; got < least {
				t.Fatalf("%d flushes in %v, want at least %d", got, took, least)
			}
			deadline := time.Now().Add(20 * cfg.SyncDelay)
			for !db.batch.extUnsynced().IsZero() {
				if time.Now().After(deadline) {
					t.Fatal("the last written commit was never covered")
				}
				time.Sleep(cfg.SyncDelay / 5)
			}
		})
	}
}
