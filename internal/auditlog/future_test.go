package auditlog

import (
	"context"
	"errors"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
)

// The log, not its caller, decides how safe an entry is before Wait
// answers: requests' entries (Options.Requests) written, every other
// durable, and with DurableRequests all durable. Begin follows the same
// rule for a request's decision.
func TestDurabilityIsTheLogsOption(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		opts        Options
		typ         string
		begin       bool
		wantWritten int
	}{
		{"request, default", Options{}, audit.TypeGateway, false, 1},
		{"request, DurableRequests", Options{DurableRequests: true}, audit.TypeGateway, false, 0},
		{"action", Options{}, audit.TypeRevoke, false, 0},
		{"action, DurableRequests", Options{DurableRequests: true}, audit.TypeRevoke, false, 0},
		{"listed request type", Options{Requests: []string{"custom.request"}}, "custom.request", false, 1},
		{"gateway type not listed", Options{Requests: []string{"custom.request"}}, audit.TypeGateway, false, 0},
		{"Begin, default", Options{}, audit.TypeGateway, true, 1},
		{"Begin, DurableRequests", Options{DurableRequests: true}, audit.TypeGateway, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newMemStore()
			l := openLog(t, st, tc.opts)
			ev := audit.Event{Type: tc.typ, Path: "/x", Status: 200}
			var f Future
			if tc.begin {
				f = l.Begin(ctx, ev).Future
			} else {
				f = l.Add(ctx, ev)
			}
			idx, err := f.Wait(ctx)
			if err != nil || idx != 0 {
				t.Fatalf("Wait = %d, %v", idx, err)
			}
			if again, err := f.Wait(ctx); again != idx || err != nil {
				t.Fatalf("second Wait = %d, %v; want the same answer", again, err)
			}
			st.mu.Lock()
			appends, written := st.appends, st.written
			st.mu.Unlock()
			if appends != 1 || written != tc.wantWritten {
				t.Fatalf("%d commits, %d of them written; want 1 and %d", appends, written, tc.wantWritten)
			}
		})
	}
}

// While the log is unhealthy, a request's entry is refused at once, without
// trying the store; an action's entry is tried (and heals the log when the
// store takes it).
func TestUnhealthyRefusesRequestsAtOnce(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{CheckpointInterval: 1 << 40})
	st.setFail(errors.New("disk on fire"))
	if _, err := l.Add(ctx, audit.Event{Type: audit.TypeRevoke}).Wait(ctx); !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("action on a failing store: %v, want failclosed.ErrUnavailable", err)
	}
	st.setFail(nil)
	st.mu.Lock()
	before := st.appends
	st.mu.Unlock()
	for _, f := range []Future{l.Add(ctx, audit.Event{Type: audit.TypeGateway}), l.Begin(ctx, audit.Event{Type: audit.TypeGateway}).Future} {
		if _, err := f.Wait(ctx); !errors.Is(err, failclosed.ErrUnavailable) {
			t.Fatalf("request while unhealthy: %v, want failclosed.ErrUnavailable at once", err)
		}
	}
	st.mu.Lock()
	tried := st.appends - before
	st.mu.Unlock()
	if tried != 0 {
		t.Fatalf("%d commits for refused requests", tried)
	}
	if _, err := l.Add(ctx, audit.Event{Type: audit.TypeRevoke}).Wait(ctx); err != nil {
		t.Fatalf("action once the store is back: %v", err)
	}
	if _, err := l.Add(ctx, audit.Event{Type: audit.TypeGateway}).Wait(ctx); err != nil {
		t.Fatalf("request once the log is healthy: %v", err)
	}
}

// A Future whose ctx ends first says so, and a later Wait still gets the
// answer.
func TestFutureWaitContext(t *testing.T) {
	st := newMemStore()
	l := openLog(t, st, Options{})
	st.mu.Lock() // hold the committer
	f := l.Add(context.Background(), audit.Event{Type: audit.TypeRevoke})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with an ended ctx: %v", err)
	}
	st.mu.Unlock()
	if idx, err := f.Wait(context.Background()); err != nil || idx != 0 {
		t.Fatalf("Wait later = %d, %v", idx, err)
	}
	if idx, err := Answered(7, nil).Wait(ctx); idx != 7 || err != nil {
		t.Fatalf("Answered(7).Wait = %d, %v", idx, err)
	}
}
