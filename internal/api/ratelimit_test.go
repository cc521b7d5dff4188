package api

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/ratelimit"
)

// The leak gate lets n work, q wait, turns the rest away at once, and gives
// a place back when a waiter's request ends or a turn is done.
func TestGate(t *testing.T) {
	g := newGate(1, 2)
	for i := range 3 {
		if !g.enter() {
			t.Fatalf("place %d refused", i)
		}
	}
	if g.enter() {
		t.Fatal("a fourth place with 1 working and 2 waiting")
	}
	if !g.start(context.Background()) {
		t.Fatal("first turn refused")
	}
	// The second waits for the turn; its request ends: it gives its place up.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if g.start(ctx) {
		t.Fatal("a second turn while the first runs")
	}
	if !g.enter() {
		t.Fatal("the place of an ended waiter was not given back")
	}
	g.done()
	// The two left waiting have their turns one after the other.
	for i := range 2 {
		if !g.start(context.Background()) {
			t.Fatalf("no turn %d after the first was done", i+2)
		}
		g.done()
	}
	// Every place is free again: three, not four.
	for i := range 3 {
		if !g.enter() {
			t.Fatalf("place %d not given back", i+1)
		}
	}
	if g.enter() {
		t.Fatal("a fourth place")
	}
}

// The default exchange limits let a CI fleet behind one NAT address start
// 1,000 jobs at once (each exchanging once), from one address and one
// issuer; a flood beyond that from the address is still cut off.
func TestDefaultLimitsAdmitAFleetBehindOneAddress(t *testing.T) {
	var lim Limits
	lim.defaults()
	if lim.TokenRate < 100 || lim.TokenBurst < 1000 || lim.IssuerBurst < lim.TokenBurst {
		t.Fatalf("defaults %+v", lim)
	}
	perAddr := ratelimit.New(lim.TokenRate, lim.TokenBurst, lim.RateLimitTables)
	perIssuer := ratelimit.New(lim.IssuerRate, lim.IssuerBurst, 10000)
	for i := 0; i < 1000; i++ {
		if !perAddr.Allow("203.0.113.7") || !perIssuer.Allow("https://token.actions.githubusercontent.com") {
			t.Fatalf("job %d of a 1,000-job fan-out from one address refused", i+1)
		}
	}
	refused := 0
	for i := 0; i < 2000; i++ {
		if !perAddr.Allow("203.0.113.7") {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("3,000 exchanges at once from one address: none refused")
	}
}

// The leak budget lets a report in while its balance is at least 1, takes
// what the report cost even into debt, and says how long until it is
// positive again; the debt is paid back at the rate.
func TestBudget(t *testing.T) {
	tests := []struct {
		name     string
		rate     float64
		capacity int
		spend    []int
		wantOpen bool
		wantWait time.Duration
	}{
		{"full", 10, 100, nil, true, 0},
		{"partly spent", 10, 100, []int{50}, true, 0},
		{"one left", 10, 100, []int{99}, true, 0},
		{"spent exactly", 10, 100, []int{100}, false, 100 * time.Millisecond},
		{"in debt", 10, 100, []int{60, 60}, false, 2100 * time.Millisecond},
		{"a charge past the capacity takes the capacity", 10, 100, []int{1000}, false, 100 * time.Millisecond},
		{"nothing to pay", 10, 100, []int{0, -5}, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBudget(tt.rate, tt.capacity)
			now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
			for _, n := range tt.spend {
				b.spend(now, n)
			}
			w := b.wait(now)
			if (w == 0) != tt.wantOpen {
				t.Fatalf("wait %v, want open %v", w, tt.wantOpen)
			}
			if w != tt.wantWait {
				t.Fatalf("wait %v, want %v", w, tt.wantWait)
			}
			// The debt is paid back at the rate: open once that time has
			// passed.
			if w > 0 && b.wait(now.Add(w)) != 0 {
				t.Fatalf("still closed %v later", w)
			}
		})
	}
}

// TestDoSExchangeRateLimitPerIPv6Address: per-address limits count an IPv6
// client by its /64. Keyed by the full address, one host (handed a whole
// /64) found a fresh bucket at each address and was never limited, and
// every refused exchange or control-plane call is a durable audit entry:
// one host could grow the append-only log without bound.
func TestDoSExchangeRateLimitPerIPv6Address(t *testing.T) {
	const n = 1000
	addrs := []struct {
		name string
		addr func(i int) string
	}{
		{"one IPv4 address", func(int) string { return "192.0.2.7" }},
		{"one IPv6 /64", func(i int) string { return fmt.Sprintf("2001:db8:1:2::%x", i+1) }},
	}
	endpoints := []struct {
		name string
		max  int // entries one address may make: the burst and a little
		run  func(t *testing.T, from func(i int) string) int
	}{
		{"refused exchanges (token_burst 5)", 10, func(t *testing.T, from func(i int) string) int {
			log := &entries{fail: map[string]bool{}}
			a, err := New(Config{Authority: authority.New(authority.Config{Audit: log}), Limits: Limits{MaxBody: 100, TokenRate: 1, TokenBurst: 5}})
			if err != nil {
				t.Fatal(err)
			}
			body := "grant_type=" + grantTokenExchange + "&subject_token_type=" + typeIDToken + "&subject_token=" + strings.Repeat("a", 200)
			for i := range n {
				r := httptest.NewRequest("POST", "/v1/token", strings.NewReader(body))
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				r.RemoteAddr = "[" + from(i) + "]:40000"
				a.ServeHTTP(httptest.NewRecorder(), r)
			}
			return len(log.all())
		}},
		{"refused control-plane calls (admin_burst 200)", n / 2, func(t *testing.T, from func(i int) string) int {
			b := newAdminBench(t, nil)
			for i := range n {
				b.do("GET", "/v1/secrets", "["+from(i)+"]", "", "", false)
			}
			return len(b.log.all())
		}},
	}
	for _, ep := range endpoints {
		for _, ad := range addrs {
			t.Run(ep.name+"/"+ad.name, func(t *testing.T) {
				if got := ep.run(t, ad.addr); got > ep.max {
					t.Errorf("%d requests from %s wrote %d durable audit entries, want at most %d: the rate limit did not apply", n, ad.name, got, ep.max)
				}
			})
		}
	}
}
