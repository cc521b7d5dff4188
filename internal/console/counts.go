package console

import (
	"context"
	"sync"
	"time"
)

// countsFresh is how long the live-lease counts of the leases page are
// reused: counting walks every live lease in memory (tens of milliseconds
// at 100,000), or reads the store on a shared one, too much for every page
// view. A confirmation counts anew.
const countsFresh = 5 * time.Second

// liveCounts caches the live leases, in all and by grant. A stale value
// is served while one refresh runs in the background, so no page view
// waits for a count but the first.
type liveCounts struct {
	mu         sync.Mutex
	at         time.Time
	total      int
	byGrant    map[string]int
	refreshing bool
}

func (c *Console) counts() (total int, byGrant map[string]int, at time.Time) {
	lc := &c.live
	lc.mu.Lock()
	defer lc.mu.Unlock()
	now := c.cfg.Now()
	switch {
	case lc.at.IsZero():
		lc.total, lc.byGrant, lc.at = c.count(now)
	case now.Sub(lc.at) > countsFresh && !lc.refreshing:
		lc.refreshing = true
		go func() {
			total, byGrant, at := c.count(c.cfg.Now())
			lc.mu.Lock()
			lc.total, lc.byGrant, lc.at, lc.refreshing = total, byGrant, at, false
			lc.mu.Unlock()
		}()
	}
	return lc.total, lc.byGrant, lc.at
}

// count counts the live leases: the store's on a shared store (every
// node's), the view's otherwise. A count that fails is reported as made
// never (the zero time), so that the next view tries again.
func (c *Console) count(now time.Time) (int, map[string]int, time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), countTimeout)
	defer cancel()
	total, byGrant, err := c.cfg.Leases.Counts(ctx)
	if err != nil {
		c.cfg.Logger.Warn("console: live leases not counted", "err", err)
		return 0, map[string]int{}, time.Time{}
	}
	return total, byGrant, now
}

// countTimeout bounds one count of the live leases.
const countTimeout = 5 * time.Second
