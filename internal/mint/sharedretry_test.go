package mint

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A shared credential whose refresh fails while the cached one still
// serves is tried again after a pause, not at every request: each try
// records a credential (and revokes what it half-made) and writes a failed
// credential.mint entry, so a gateway busy through an upstream's outage
// wrote an entry, a row and a revocation per request for one event.
// Before, 20 requests in the refresh window made 20 tries.
func TestSharedRefreshFailureNotRetriedPerRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		left time.Duration // the cached credential's life left when requests come
	}{
		{"background refresh", 10 * time.Minute},
		{"refresh before answering, cached one still valid", 100 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, storetest.SQLite(t))
			up, g := h.pol.Upstreams["db"], h.pol.Grants["migrate"]
			first, err := h.m.Shared(ctx, up, g)
			if err != nil {
				t.Fatal(err)
			}
			e := h.m.shared.entry(sharedKey(up, g))
			h.clk.add(sharedTTL - tc.left)
			h.up.mu.Lock()
			h.up.failMint = errors.New("upstream down")
			h.up.mu.Unlock()
			failures := func() int {
				return strings.Count(h.entries(t), `"type":"credential.mint"`) - 1
			}
			// request asks for the credential and waits for the refresh
			// it may start in the background; it returns what it got.
			request := func() *Issued {
				t.Helper()
				is, err := h.m.Shared(ctx, up, g)
				if err != nil {
					t.Fatalf("the cached credential must serve while the refresh fails: %v", err)
				}
				for deadline := time.Now().Add(20 * time.Second); e.busy.Load(); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the background refresh never ended")
					}
				}
				return is
			}
			for range 20 {
				if is := request(); is.ID != first.ID {
					t.Fatal("another credential served while the refresh fails")
				}
			}
			if got := failures(); got != 1 {
				t.Fatalf("20 requests while the refresh fails made %d tries, want 1", got)
			}
			// Tried again once the pause is over.
			h.clk.add(sharedRetry)
			for range 5 {
				request()
			}
			if got := failures(); got != 2 {
				t.Fatalf("after the pause: %d tries, want 2", got)
			}
			// The upstream is back: the next try after the pause serves a
			// fresh credential.
			h.up.mu.Lock()
			h.up.failMint = nil
			h.up.mu.Unlock()
			h.clk.add(sharedRetry)
			request()
			if is := request(); is.ID == first.ID {
				t.Fatal("not refreshed once the upstream is back")
			}
		})
	}
}

// A grant with no valid shared credential whose first mint fails is not
// minted again at every request either: each request in the pause is
// refused as the failed mint was (an error, which the gateway answers
// 503), without a new record, revocation or credential.mint entry. Before,
// 20 requests made 20 tries.
func TestSharedFirstMintFailureNotRetriedPerRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cached bool // a credential was cached, and has expired
	}{
		{"never minted", false},
		{"cached one expired", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, storetest.SQLite(t))
			up, g := h.pol.Upstreams["db"], h.pol.Grants["migrate"]
			before := 0
			if tc.cached {
				if _, err := h.m.Shared(ctx, up, g); err != nil {
					t.Fatal(err)
				}
				h.clk.add(sharedTTL + time.Second)
				before = 1
			}
			down := errors.New("upstream down")
			h.up.mu.Lock()
			h.up.failMint = down
			h.up.mu.Unlock()
			tries := func() int {
				return strings.Count(h.entries(t), `"type":"credential.mint"`) - before
			}
			for i := range 20 {
				if is, err := h.m.Shared(ctx, up, g); err == nil || !errors.Is(err, down) {
					t.Fatalf("request %d: %v, %v; want the failed mint's error", i, is, err)
				}
			}
			if got := tries(); got != 1 {
				t.Fatalf("20 requests while the first mint fails made %d tries, want 1", got)
			}
			// Tried again once the pause is over, by one request.
			h.clk.add(sharedRetry)
			for range 5 {
				if _, err := h.m.Shared(ctx, up, g); err == nil {
					t.Fatal("served while the upstream is down")
				}
			}
			if got := tries(); got != 2 {
				t.Fatalf("after the pause: %d tries, want 2", got)
			}
			// The upstream is back: the first request after the pause is
			// served a fresh credential.
			h.up.mu.Lock()
			h.up.failMint = nil
			h.up.mu.Unlock()
			h.clk.add(sharedRetry)
			if _, err := h.m.Shared(ctx, up, g); err != nil {
				t.Fatalf("not minted once the upstream is back: %v", err)
			}
		})
	}
}
