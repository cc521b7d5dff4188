package gateway

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

type ctxKey struct{}

// auditCtx keeps the request's values, never its cancellation, ends at its
// deadline once waited on, and is done after stop whether or not it was.
func TestAuditCtx(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	cancelParent() // the client has gone: the audit wait goes on
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		wait    bool // wait on Done before stop
		wantErr error
	}{
		{"stopped unarmed", time.Hour, false, context.DeadlineExceeded},
		{"expires while waited on", time.Millisecond, true, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c auditCtx
			c.init(parent, tc.timeout)
			d, ok := c.Deadline()
			if !ok || d.IsZero() {
				t.Fatal("no deadline")
			}
			if c.Value(ctxKey{}) != "v" {
				t.Fatal("the request's values are lost")
			}
			if tc.wait {
				// Done already is right only once its deadline has passed (a
				// loaded machine may take longer than the 1 ms between them).
				if c.Err() != nil && time.Now().Before(d) {
					t.Fatal("done before its deadline, or by the parent's cancellation")
				}
				select {
				case <-c.Done():
				case <-time.After(time.Minute): // a failure timeout only
					t.Fatal("not done at its deadline")
				}
			}
			c.stop()
			select {
			case <-c.Done():
			default:
				t.Fatal("not done after stop")
			}
			if err := c.Err(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Err = %v, want %v", err, tc.wantErr)
			}
			if err := context.Cause(&c); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Cause = %v, want %v (never the parent's)", err, tc.wantErr)
			}
		})
	}
	// Armed but stopped before the deadline: done, cancelled.
	var c auditCtx
	c.init(parent, time.Hour)
	if c.Err() != nil {
		t.Fatal("done early")
	}
	c.stop()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err after stop = %v", c.Err())
	}
}

// A decision whose wait gave up (AuditTimeout; here at once) is answered
// 503 and never forwarded, but once queued it is still recorded: it must
// then get an outcome saying so, not stand alone as a forwarded request
// whose outcome was lost. (A wait that saw its answer first forwards.)
func TestLateDecisionGetsItsOutcome(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.AuditTimeout = time.Nanosecond })
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	forwarded := 0
	for range 40 {
		switch resp, _ := h.raw("GET", "/gw/api/repos/acme/app/x", bearer(tok)); resp.StatusCode {
		case http.StatusOK:
			forwarded++
		case http.StatusServiceUnavailable:
		default:
			t.Fatalf("status %d, want 503 (or 200)", resp.StatusCode)
		}
	}
	if h.up.count() != forwarded {
		t.Fatalf("the upstream saw %d requests, %d were answered by it", h.up.count(), forwarded)
	}
	var decisions, outcomes map[int64]int // outcome status by decision index
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		decisions, outcomes = map[int64]int{}, map[int64]int{}
		for _, e := range h.entries() {
			switch {
			case e.Type == TypeRequest && e.Detail["decision"] == "allow":
				decisions[e.Index] = 0
			case e.Type == TypeResponse:
				if i, ok := e.Detail["request_index"].(float64); ok {
					outcomes[int64(i)] = e.Status
				}
			}
		}
		if len(decisions) > forwarded && len(outcomes) == len(decisions) || time.Now().After(deadline) {
			break
		}
	}
	if len(decisions) == forwarded {
		t.Skip("no decision was recorded after its wait gave up this run")
	}
	late := 0
	for i := range decisions {
		st, ok := outcomes[i]
		if !ok {
			t.Fatalf("decision %d recorded without an outcome (%d decisions, %d outcomes, %d forwarded): it reads as forwarded", i, len(decisions), len(outcomes), forwarded)
		}
		if st == http.StatusServiceUnavailable {
			late++
		}
	}
	if late != len(decisions)-forwarded {
		t.Fatalf("%d decisions, %d forwarded, but %d outcomes say 503", len(decisions), forwarded, late)
	}
}
