package ratelimit

import (
	"strconv"
	"testing"
	"time"
)

// When the table is full of busy keys, an eviction frees about a tenth of
// it, so a flood of new addresses does not rescan the whole table (under
// the lock) on every request.
func TestLimiterEvictsATenth(t *testing.T) {
	tests := []struct {
		name     string
		max      int
		wantAtMo int // keys left right after the eviction, at most
	}{
		{"100", 100, 91},
		{"1000", 1000, 901},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(1, 1000, tt.max)
			for i := 0; i < tt.max; i++ {
				l.Allow("k" + strconv.Itoa(i))
			}
			if len(l.keys) != tt.max {
				t.Fatalf("table holds %d keys, want %d", len(l.keys), tt.max)
			}
			l.Allow("new")
			if n := len(l.keys); n > tt.wantAtMo {
				t.Fatalf("after one eviction the table holds %d keys, want at most %d", n, tt.wantAtMo)
			}
			if l.keys["new"] == nil {
				t.Fatal("the new key was not added")
			}
		})
	}
}

// A key gets its burst, then waits; another key has its own bucket.
func TestLimiterPerKey(t *testing.T) {
	l := New(1, 3, 100)
	allowed := 0
	for i := 0; i < 10; i++ {
		if l.Allow("10.0.0.1") {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d of 10 allowed with burst 3", allowed)
	}
	if !l.Allow("10.0.0.2") {
		t.Fatal("another address shares the bucket")
	}
}

// Keys seen just now are busy, whatever the rate and burst: a bucket that
// takes longer to refill than time.Duration holds (a slow rate with a
// large burst) must not count as idle, or a flood of new keys would empty
// the table and hand the busy keys fresh buckets.
func TestLimiterEvictionKeepsBusyKeysAtSlowRates(t *testing.T) {
	for _, tt := range []struct {
		name  string
		rate  float64
		burst int
	}{
		{"default-like", 100, 1000},
		{"slowest rate, large burst", 0.001, 10_000_000},
		{"refill beyond time.Duration", 1e-9, 1 << 40},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := New(tt.rate, tt.burst, 10)
			for i := 0; i < 10; i++ {
				l.Allow("k" + strconv.Itoa(i))
			}
			l.Allow("new")
			if n := len(l.keys); n < 9 {
				t.Fatalf("one new key evicted %d of 10 busy keys, want at most a tenth", 11-n)
			}
		})
	}
}

// Concurrent lets max in at once per key, whatever the other keys hold, and
// forgets a key once its last place is given back.
func TestConcurrent(t *testing.T) {
	p := NewConcurrent(2)
	tests := []struct {
		name  string
		key   string
		enter bool // else leave
		want  bool
	}{
		{"first", "a", true, true},
		{"second", "a", true, true},
		{"third refused", "a", true, false},
		{"another key", "b", true, true},
		{"one given back", "a", false, true},
		{"its place again", "a", true, true},
		{"still two at most", "a", true, false},
	}
	for _, tt := range tests {
		if !tt.enter {
			p.Leave(tt.key)
			continue
		}
		if got := p.Enter(tt.key); got != tt.want {
			t.Fatalf("%s: Enter(%q) = %v, want %v", tt.name, tt.key, got, tt.want)
		}
	}
	p.Leave("a")
	p.Leave("a")
	p.Leave("b")
	if len(p.n) != 0 {
		t.Fatalf("%d keys kept with no place taken", len(p.n))
	}
}

// Spend may overdraw a key's bucket; Wait then says how long until it
// holds one again, for that key only.
func TestLimiterSpendAndWait(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name  string
		spend []int // spent at now, in turn
		at    time.Duration
		want  time.Duration
	}{
		{"untouched", nil, 0, 0},
		{"within the burst", []int{99}, 0, 0},
		{"the burst spent", []int{100}, 0, 10 * time.Millisecond},
		{"into debt", []int{50, 100}, 0, 510 * time.Millisecond},
		{"more than the burst counts as the burst", []int{1000}, 0, 10 * time.Millisecond},
		{"debt paid off", []int{50, 100}, 510 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(100, 100, 10)
			for _, n := range tt.spend {
				l.Spend("a", now, n)
			}
			if got := l.Wait("a", now.Add(tt.at)); got < tt.want-time.Millisecond || got > tt.want+time.Millisecond {
				t.Fatalf("Wait = %v, want %v", got, tt.want)
			}
			if got := l.Wait("b", now.Add(tt.at)); got != 0 {
				t.Fatalf("another key waits %v", got)
			}
		})
	}
}
