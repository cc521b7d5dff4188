package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// stepClock is a renewClock that moves only when renewLoop waits (by the
// wait asked) or the test moves it: no test waits on real time.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(max(d, 0))
}

func (c *stepClock) clock() renewClock {
	return renewClock{now: c.now, after: func(d time.Duration) <-chan time.Time {
		c.advance(d)
		ch := make(chan time.Time, 1)
		ch <- c.now()
		return ch
	}}
}

// exec renews the token once a third of its life is left, that life
// counted from when the request that got it was sent (the exchange, then
// each renewal), not from when exec came to wait: an exchange or a
// renewal that took a while must not push the renewal past the expiry.
func TestRenewLoopCountsFromTheIssuingRequest(t *testing.T) {
	type renewal struct {
		answer int64         // the expires_in the server answers
		took   time.Duration // how long the request takes
	}
	tests := []struct {
		name     string
		life     int64         // the exchange's expires_in
		exchange time.Duration // how long the exchange took
		renewals []renewal
		want     []time.Duration // when each renewal reaches the server, since the exchange was sent
	}{
		{name: "prompt exchange and renewals", life: 60,
			renewals: []renewal{{answer: 60}, {answer: 10}},
			want:     []time.Duration{40 * time.Second, 80 * time.Second}},
		{name: "slow exchange", life: 60, exchange: 30 * time.Second,
			renewals: []renewal{{answer: 60}, {answer: 10}},
			want:     []time.Duration{40 * time.Second, 80 * time.Second}},
		{name: "exchange slower than two thirds of the life", life: 60, exchange: 50 * time.Second,
			renewals: []renewal{{answer: 60}, {answer: 10}},
			want:     []time.Duration{50 * time.Second, 90 * time.Second}},
		{name: "slow renewal", life: 60,
			renewals: []renewal{{answer: 60, took: 20 * time.Second}, {answer: 60}, {answer: 10}},
			want:     []time.Duration{40 * time.Second, 80 * time.Second, 120 * time.Second}},
		{name: "server shortened the life", life: 30, exchange: 5 * time.Second,
			renewals: []renewal{{answer: 30, took: 5 * time.Second}, {answer: 5}},
			want:     []time.Duration{20 * time.Second, 40 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sent := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			clk := &stepClock{t: sent.Add(tc.exchange)}
			tok, err := token.New(token.Job)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var arrived []time.Duration
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				n := len(arrived)
				if r.URL.Path != "/v1/token/renew" || r.Header.Get("Authorization") != "Bearer "+tok || n >= len(tc.renewals) {
					w.WriteHeader(http.StatusBadRequest)
					_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request"})
					return
				}
				arrived = append(arrived, clk.now().Sub(sent))
				clk.advance(tc.renewals[n].took)
				_ = json.NewEncoder(w).Encode(apitype.RenewResponse{LeaseID: "lse_test", ExpiresIn: tc.renewals[n].answer})
			}))
			t.Cleanup(srv.Close)
			c, err := client.New(client.Config{Addr: srv.URL, Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatal(err)
			}
			ex := &exchanged{client: c, resp: &apitype.TokenResponse{AccessToken: tok, ExpiresIn: tc.life}, sentAt: sent}
			renewLoop(make(chan struct{}), ex, io.Discard, clk.clock())
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(arrived, tc.want) {
				t.Fatalf("renewals reached the server at %v after the exchange was sent; want %v", arrived, tc.want)
			}
		})
	}
}
