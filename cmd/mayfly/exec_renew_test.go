package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
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

// A renewal the server turns away for a moment (429, 5xx, a dropped
// connection: a restart, a rolling deploy) is tried again before the
// token expires: giving up at once let the token die under a long CMD. A
// refusal (the token revoked) is not tried again.
func TestRenewLoopRetriesTemporaryFailures(t *testing.T) {
	tests := []struct {
		name         string
		status       int // of the failed attempts; 0: the connection is dropped
		retryAfter   string
		failures     int
		wantAttempts int // requests that reach the server
	}{
		{"503 then renewed", http.StatusServiceUnavailable, "", 1, 3},
		{"429 with Retry-After then renewed", http.StatusTooManyRequests, "1", 1, 3},
		{"connection dropped then renewed", 0, "", 1, 3},
		{"401 revoked: not retried", http.StatusUnauthorized, "", 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &stepClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			tok, err := token.New(token.Job)
			if err != nil {
				t.Fatal(err)
			}
			// After the failures: one renewal that extends the token,
			// then one that no longer does (max_ttl reached).
			answers := []int64{60, 10}
			var mu sync.Mutex
			attempts := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				attempts++
				if attempts <= tc.failures {
					if tc.status == 0 {
						conn, _, _ := w.(http.Hijacker).Hijack()
						_ = conn.Close()
						return
					}
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.status)
					_ = json.NewEncoder(w).Encode(map[string]string{"error": "temporarily_unavailable"})
					return
				}
				n := attempts - tc.failures - 1
				if n >= len(answers) {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				_ = json.NewEncoder(w).Encode(apitype.RenewResponse{LeaseID: "lse_test", ExpiresIn: answers[n]})
			}))
			t.Cleanup(srv.Close)
			c, err := client.New(client.Config{Addr: srv.URL, Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatal(err)
			}
			ex := &exchanged{client: c, resp: &apitype.TokenResponse{AccessToken: tok, ExpiresIn: 60}, sentAt: clk.now()}
			var stderr strings.Builder
			renewLoop(make(chan struct{}), ex, &stderr, clk.clock())
			mu.Lock()
			defer mu.Unlock()
			if attempts != tc.wantAttempts {
				t.Fatalf("%d renewal requests, want %d; stderr: %s", attempts, tc.wantAttempts, stderr.String())
			}
			if strings.Contains(stderr.String(), tok) {
				t.Errorf("the token in stderr: %s", stderr.String())
			}
		})
	}
}

// A renewal being tried again stops as soon as CMD ends: exec must not
// wait out the retries before it revokes the token.
func TestRenewLoopStopsRetryingWhenCMDEnds(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{Addr: srv.URL, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	ex := &exchanged{client: c, resp: &apitype.TokenResponse{AccessToken: tok, ExpiresIn: 3600}, sentAt: clk.now()}
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		renewLoop(done, ex, io.Discard, clk.clock())
		close(ended)
	}()
	<-arrived
	close(done)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("renewLoop still waiting to try again 5s after CMD ended")
	}
}
