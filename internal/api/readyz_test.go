package api

import (
	"context"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// slowPing is a store whose ping takes as long as the test says, counting
// the pings under way at once.
type slowPing struct {
	release   chan struct{}
	now, most atomic.Int32
	total     atomic.Int32
	mu        sync.Mutex
}

func (s *slowPing) SchemaNewer() error { return nil }

func (s *slowPing) Ping(ctx context.Context) error {
	s.total.Add(1)
	n := s.now.Add(1)
	defer s.now.Add(-1)
	s.mu.Lock()
	s.most.Store(max(s.most.Load(), n))
	s.mu.Unlock()
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// GET /readyz needs no authentication and pings the store. Each request
// pinged on its own, so one address sending many at once (HTTP/2: 250
// streams a connection) held as many of the store's connections as there
// are (PostgreSQL: the node's pool of a few, shared with every exchange,
// renewal and lease write), each for up to its 3 s, and queued everything
// else behind them. Requests that arrive while a ping is under way now
// share its answer: at most one ping at a time, whatever the callers.
func TestReadyzPingsTheStoreOnceAtATime(t *testing.T) {
	db := storetest.SQLite(t).DB
	signer, _, err := audit.GenerateKey("api.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	log, err := auditlog.Open(context.Background(), db, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	st := &slowPing{release: make(chan struct{})}
	a, err := New(Config{Store: st, Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	const callers = 20
	codes := make(chan int, callers)
	for range callers {
		go func() {
			w := httptest.NewRecorder()
			a.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
			codes <- w.Code
		}()
	}
	// Every caller has long arrived by then (the wait decides nothing:
	// one that came later would start one more ping, after this one).
	time.Sleep(300 * time.Millisecond)
	close(st.release)
	for range callers {
		if c := <-codes; c != 200 {
			t.Fatalf("/readyz: %d, want 200", c)
		}
	}
	if n := st.most.Load(); n != 1 {
		t.Fatalf("%d store pings at once for %d concurrent /readyz requests, want 1", n, callers)
	}
	if n := st.total.Load(); n > callers/4 {
		t.Fatalf("%d store pings for %d concurrent /readyz requests, want them to share a few", n, callers)
	}
}
