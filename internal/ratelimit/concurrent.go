package ratelimit

import "sync"

// Concurrent lets at most max holders per key at once (connections from
// one address, leak report bodies being read). A key has an entry only
// while someone holds it, so the table is no larger than the work in
// progress. It is safe for concurrent use.
type Concurrent struct {
	mu  sync.Mutex
	max int
	n   map[string]int
}

// NewConcurrent returns a Concurrent with max places per key.
func NewConcurrent(max int) *Concurrent {
	return &Concurrent{max: max, n: map[string]int{}}
}

// Enter takes one of key's places, or reports false when it has none left.
func (c *Concurrent) Enter(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

// Leave gives back a place taken by Enter.
func (c *Concurrent) Leave(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key]--; c.n[key] <= 0 {
		delete(c.n, key)
	}
}
