package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func journalPath(t testing.TB) string { return filepath.Join(t.TempDir(), "audit.journal") }

// Appends in journal mode: written ones are answered from the journal and
// reach the store within integrateDelay; durable ones once stored; the log
// verifies, whatever the mix and the concurrency.
func TestJournalAppends(t *testing.T) {
	for _, b := range allBackends(t) {
		if b.name == "postgres" {
			continue // the journal is for a store with one writer
		}
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{Journal: journalPath(t)})
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[int64]bool{}
			for w := 0; w < 16; w++ {
				wg.Go(func() {
					for i := 0; i < 30; i++ {
						var idx int64
						var err error
						switch i % 3 {
						case 0:
							idx, err = l.Append(ctx, gatewayEvent(i))
						case 1:
							idx, err = l.AppendWritten(ctx, gatewayEvent(i))
						default:
							r := <-l.AppendAsync(gatewayEvent(i))
							idx, err = r.Index, r.Err
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if seen[idx] {
							t.Errorf("index %d twice", idx)
						}
						seen[idx] = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			const n = 16 * 30
			waitFor(t, func() bool { return l.Size() == n })
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := Verify(ctx, b.st, testVerifier, VerifyOptions{PageSize: 64})
			if err != nil || !res.OK() || res.Size != n {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		})
	}
}

// A crash leaves journaled entries out of the store: the next Open folds
// them in, skips what the store has, ignores a torn tail, and empties the
// journal.
func TestJournalReplay(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	path := journalPath(t)
	l, err := Open(ctx, st, testSigner, Options{Journal: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := l.AppendWritten(ctx, gatewayEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return l.Size() == 5 })
	// The store stops taking writes: what follows stays in the journal,
	// as after a kill -9 between journal and store.
	st.setFail(errInjected)
	for i := 5; i < 12; i++ {
		if idx, err := l.AppendWritten(ctx, gatewayEvent(i)); err != nil || idx != int64(i) {
			t.Fatalf("AppendWritten %d = %d, %v", i, idx, err)
		}
	}
	l.Close(ctx) // cannot store them either
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		t.Fatalf("journal after a failed close: %d bytes, %v", len(raw), err)
	}
	// A torn record after the whole ones, as a power loss can leave.
	torn := append(bytes.Clone(raw), raw[:journalHeader+10]...)
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	st.setFail(nil)
	l2 := openLog(t, st, Options{Journal: path})
	if l2.Recovered() != 7 || l2.Size() != 12 {
		t.Fatalf("recovered %d, size %d; want 7, 12", l2.Recovered(), l2.Size())
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("journal not emptied after replay: %v %v", fi, err)
	}
	if idx, err := l2.Append(ctx, gatewayEvent(12)); err != nil || idx != 12 {
		t.Fatalf("Append after replay = %d, %v", idx, err)
	}
	res, err := Verify(ctx, st, testVerifier, VerifyOptions{})
	if err != nil || !res.OK() || res.Size != 13 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	// Replaying the same records again changes nothing: the store has them.
	l2.Close(ctx)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	l3 := openLog(t, st, Options{Journal: path})
	if l3.Recovered() != 0 || l3.Size() != 13 {
		t.Fatalf("second replay: recovered %d, size %d", l3.Recovered(), l3.Size())
	}
}

// While the store fails, the log is unhealthy and refuses what an action
// waits on, but keeps records of what happened; it recovers by itself.
func TestJournalStoreFailure(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{Journal: journalPath(t), CheckpointInterval: 10 * time.Millisecond})
	if _, err := l.AppendWritten(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	st.setFail(errInjected)
	if _, err := l.Append(ctx, gatewayEvent(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("durable Append on a failing store = %v", err)
	}
	if _, err := l.AppendWritten(ctx, gatewayEvent(2)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("AppendWritten while unhealthy = %v", err)
	}
	if r := <-l.AppendAsync(gatewayEvent(3)); r.Err != nil {
		t.Fatalf("AppendAsync while unhealthy = %v", r.Err)
	}
	st.setFail(nil)
	waitFor(t, func() bool { return l.Healthy() == nil })
	// The durable entry that failed is stored after all: an audit entry
	// records an attempt; the action it names did not happen.
	waitFor(t, func() bool { return l.Size() == 3 })
	if idx, err := l.AppendWritten(ctx, gatewayEvent(4)); err != nil || idx != 3 {
		t.Fatalf("AppendWritten after recovery = %d, %v", idx, err)
	}
}

// A second process (here: a second Log) cannot use the same journal.
func TestJournalLocked(t *testing.T) {
	path := journalPath(t)
	openLog(t, newMemStore(), Options{Journal: path})
	if _, err := Open(context.Background(), newMemStore(), testSigner, Options{Journal: path}); err == nil {
		t.Fatal("a second Log opened a journal in use")
	}
}

func FuzzReadJournal(f *testing.F) {
	f.Add([]byte{})
	rec := appendRecord(nil, buildEntry(nil, 0, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`)))
	f.Add(rec)
	f.Add(append(bytes.Clone(rec), 0, 0, 0, 9, 1, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, size, err := readJournal(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if size > int64(len(data)) {
			t.Fatalf("size %d past %d bytes", size, len(data))
		}
		// What was read re-encodes to exactly the prefix it came from.
		var re []byte
		for _, e := range entries {
			if entryIndex(e) < 0 {
				t.Fatalf("entry without an index: %q", e)
			}
			re = appendRecord(re, e)
		}
		if !bytes.Equal(re, data[:size]) {
			t.Fatal("records do not re-encode to their bytes")
		}
	})
}
