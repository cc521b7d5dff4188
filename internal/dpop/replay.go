package dpop

import (
	"container/heap"
	"sync"
)

const replayShards = 16

type replayResult int

const (
	replayFresh replayResult = iota
	replaySeen
	replayFull
)

// replayCache remembers proof keys until they expire. Memory is bounded:
// each shard holds at most its share of the size, and expired entries are
// dropped (oldest expiry first) before every insert.
type replayCache struct {
	perShard int
	shards   [replayShards]replayShard
}

type replayShard struct {
	mu   sync.Mutex
	seen map[[32]byte]struct{}
	exp  expiryHeap
}

type expiry struct {
	key [32]byte
	at  int64
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newReplayCache(size int) *replayCache {
	per := (size + replayShards - 1) / replayShards
	c := &replayCache{perShard: per}
	for i := range c.shards {
		c.shards[i].seen = make(map[[32]byte]struct{})
	}
	return c
}

// add records key until expiresAt (unix ns) and reports whether it was new.
func (c *replayCache) add(key [32]byte, expiresAt, now int64) replayResult {
	s := &c.shards[key[0]%replayShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	// Kept while now == at: a proof is accepted up to and including
	// iat + window, so forgetting it at that instant would accept it twice.
	for len(s.exp) > 0 && s.exp[0].at < now {
		e := heap.Pop(&s.exp).(expiry)
		delete(s.seen, e.key)
	}
	if _, ok := s.seen[key]; ok {
		return replaySeen
	}
	if len(s.seen) >= c.perShard {
		return replayFull
	}
	s.seen[key] = struct{}{}
	heap.Push(&s.exp, expiry{key: key, at: expiresAt})
	return replayFresh
}

// len counts the remembered keys (tests).
func (c *replayCache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += len(c.shards[i].seen)
		c.shards[i].mu.Unlock()
	}
	return n
}
