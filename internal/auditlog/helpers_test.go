package auditlog

import (
	"context"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// appendDurable, appendWritten and appendAsync add ev with the durability
// a test needs, whatever Options.Requests says of its type (the log's
// callers have only Add, which picks it from the options).
func (l *Log) appendDurable(ctx context.Context, ev audit.Event) (int64, error) {
	return l.add(ctx, ev, false).Wait(ctx)
}

func (l *Log) appendWritten(ctx context.Context, ev audit.Event) (int64, error) {
	return l.add(ctx, ev, true).Wait(ctx)
}

func (l *Log) appendAsync(ev audit.Event) <-chan result {
	f := l.addLazy(ev)
	if f.ch != nil {
		return f.ch
	}
	ch := make(chan result, 1)
	ch <- f.res
	return ch
}

// begin is Begin and the wait for its Intent.
func (l *Log) begin(ctx context.Context, ev audit.Event) (*Intent, error) {
	in := l.Begin(ctx, ev)
	if _, err := in.Wait(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// sealed is rec ("HEAD\nBODY") as a node of the tests' cluster (testSigner)
// writes it to audit_pending.
func sealed(rec []byte) []byte {
	m, err := newPendingMAC(testSigner)
	if err != nil {
		panic(err)
	}
	return m.seal(append(make([]byte, sealLen, sealLen+len(rec)), rec...))
}
