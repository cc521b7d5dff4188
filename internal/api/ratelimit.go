package api

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// gate lets n callers work at once and up to queue more wait for a turn;
// the rest are turned away at once. Waiting costs no CPU.
type gate struct {
	admit chan struct{} // working or waiting
	run   chan struct{} // working
}

func newGate(n, queue int) *gate {
	return &gate{admit: make(chan struct{}, n+queue), run: make(chan struct{}, n)}
}

// enter takes a place in the queue, or reports false when it is full.
func (g *gate) enter() bool {
	select {
	case g.admit <- struct{}{}:
		return true
	default:
		return false
	}
}

// start waits for a turn (after enter); false when ctx ended first, the
// place then given up.
func (g *gate) start(ctx context.Context) bool {
	select {
	case g.run <- struct{}{}:
		return true
	case <-ctx.Done():
		<-g.admit
		return false
	}
}

// done ends a turn begun by start.
func (g *gate) done() { <-g.run; <-g.admit }

// budget is a token bucket shared by every caller that may go into debt:
// a caller is let in while the balance is positive, then pays what its
// work turned out to cost, so that one costly request is never refused
// halfway through and the work done per second stays bounded by the rate
// (plus one request's worth).
type budget struct {
	l *rate.Limiter
}

func newBudget(perSecond float64, capacity int) *budget {
	return &budget{l: rate.NewLimiter(rate.Limit(perSecond), capacity)}
}

// wait is how long after now until the balance is at least 1 again; 0
// when it is.
func (b *budget) wait(now time.Time) time.Duration {
	t := b.l.TokensAt(now)
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / float64(b.l.Limit()) * float64(time.Second))
}

// spend takes n from the balance, into debt if need be (n is at most the
// capacity).
func (b *budget) spend(now time.Time, n int) {
	if n <= 0 {
		return
	}
	b.l.ReserveN(now, min(n, b.l.Burst()))
}
