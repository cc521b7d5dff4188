package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
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
