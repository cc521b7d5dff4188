package auditlog

import (
	"context"
	"fmt"
)

// Future is the answer to Add, Begin and Recorded: Wait returns once the
// entry is as safe as the log's Options promise for its type and, for an
// action's own entry on a node with its store to itself, once it has its
// index. A Future is a small value; copies share its
// answer, and Wait may be called again.
type Future struct {
	ch       chan result // holds the answer once there is one; nil: answered at once
	res      result      // the answer when ch is nil
	typ      string
	recorded bool // from Recorded: durable already, waiting for its index
}

// answered is a Future whose answer is known already.
func answered(index int64, err error) Future {
	return Future{res: result{Index: index, Err: err}}
}

// Answered returns a Future already answered with index and err: for test
// doubles of a Log, and for callers that must hand on a refusal decided
// before any entry.
func Answered(index int64, err error) Future { return answered(index, err) }

// Wait returns the entry's index once it is safe, or an error: one wrapping
// failclosed.ErrUnavailable if the log could not record it, ErrClosed after
// Close, or ctx's error if ctx ends first (the entry may then still be
// recorded). Shared mode answers once the entry is recorded pending, with
// index -1 (its index is the sequencer's to give). For an action's own
// entry (Recorded), durable before its Future existed, an error says only
// that its index is not known yet.
func (f Future) Wait(ctx context.Context) (int64, error) {
	if f.ch == nil {
		return f.res.Index, f.res.Err
	}
	select {
	case r := <-f.ch:
		f.ch <- r // the channel holds one answer, kept for the next Wait
		return r.Index, r.Err
	case <-ctx.Done():
		if f.recorded {
			return -1, fmt.Errorf("audit: waiting for the index of a recorded entry (it is recorded, pending): %w", ctx.Err())
		}
		return -1, fmt.Errorf("audit: waiting for durable %s entry: %w", f.typ, ctx.Err())
	}
}

// answer waits for the answer without a deadline (for a Future already
// waited for).
func (f Future) answer() result {
	if f.ch == nil {
		return f.res
	}
	r := <-f.ch
	f.ch <- r
	return r
}
