// Package ratelimit owns per-key limits: a token bucket per key (an
// address's clientip.RateKey, an issuer) in a table of bounded size, so
// that a flood of new keys cannot grow memory, and a cap on what one key
// holds at once (Concurrent). It answers only whether a key may go on
// now; what a caller is keyed by, and what a refusal says, is its user's.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter is a token bucket per key with a bounded table: when full, the
// oldest idle keys are dropped. It is safe for concurrent use.
type Limiter struct {
	mu    sync.Mutex
	r     rate.Limit
	burst int
	max   int
	keys  map[string]*bucket
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

// New returns a Limiter letting each key go on perSecond times a second
// on average and burst times at once, tracking at most max keys.
func New(perSecond float64, burst, max int) *Limiter {
	return &Limiter{r: rate.Limit(perSecond), burst: burst, max: max, keys: map[string]*bucket{}}
}

// Allow takes one from key's bucket, or reports false when it is empty.
func (l *Limiter) Allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bucket(key, now).AllowN(now, 1)
}

// Wait is how long after now until key's bucket holds at least one again:
// 0 when it does. With Spend it makes a budget per key that a caller may
// overdraw: let in while it is not in debt, charged once its work's cost
// is known.
func (l *Limiter) Wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.keys[key]
	if b == nil {
		return 0 // a full bucket
	}
	t := b.l.TokensAt(now)
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / float64(l.r) * float64(time.Second))
}

// Spend takes n (at most the burst) from key's bucket, into debt if need
// be.
func (l *Limiter) Spend(key string, now time.Time, n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bucket(key, now).ReserveN(now, min(n, l.burst))
}

// bucket is key's bucket, made when it has none; l.mu is held.
func (l *Limiter) bucket(key string, now time.Time) *rate.Limiter {
	b := l.keys[key]
	if b == nil {
		if len(l.keys) >= l.max {
			l.evict(now)
		}
		b = &bucket{l: rate.NewLimiter(l.r, l.burst)}
		l.keys[key] = b
	}
	b.seen = now
	return b.l
}

// evict drops buckets idle long enough to have refilled; if none are, it
// drops about a tenth of the table.
func (l *Limiter) evict(now time.Time) {
	full := refillTime(l.burst, float64(l.r))
	for k, b := range l.keys {
		if now.Sub(b.seen) > full {
			delete(l.keys, k)
		}
	}
	if len(l.keys) < l.max {
		return
	}
	// Drop a tenth at once: dropping one at a time would rescan the whole
	// table, under the lock, for every new address of a flood.
	n := max(len(l.keys)/10, 1)
	for k := range l.keys {
		if n <= 0 {
			break
		}
		delete(l.keys, k)
		n--
	}
}

// refillTime is how long an empty bucket takes to fill, plus a second. A
// refill longer than time.Duration holds (or a rate that is not a
// positive number) counts as forever: converting it would overflow to a
// negative time, after which every busy bucket looked idle.
func refillTime(burst int, perSecond float64) time.Duration {
	secs := float64(burst)/perSecond + 1
	if !(secs < float64(math.MaxInt64/int64(time.Second))) {
		return math.MaxInt64
	}
	return time.Duration(secs * float64(time.Second))
}
