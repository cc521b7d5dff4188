package dpop

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// With a shared store, a proof used on one node is a replay on another
// (each has its own local cache), and after a restart.
func TestSharedReplay(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			clk := newClock()
			nodeA := NewVerifier(Options{Now: clk.Now, Shared: b.DB})
			nodeB := NewVerifier(Options{Now: clk.Now, Shared: b.DB})
			proof, err := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := nodeA.Verify(proof, "GET", testURL, testToken, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := nodeB.Verify(proof, "GET", testURL, testToken, ""); CheckOf(err) != CheckReplay {
				t.Fatalf("replay on another node: %v", err)
			}
			restarted := NewVerifier(Options{Now: clk.Now, Shared: b.DB})
			if _, err := restarted.Verify(proof, "GET", testURL, testToken, ""); CheckOf(err) != CheckReplay {
				t.Fatalf("replay after a restart: %v", err)
			}
			// A fresh proof passes on either node.
			fresh, _ := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
			if _, err := nodeB.Verify(fresh, "GET", testURL, testToken, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}

type downStore struct{}

func (downStore) UseJTI(context.Context, string, string, time.Time) (bool, error) {
	return false, errors.New("connection refused")
}

// A shared store that cannot answer is an outage, not a verdict on the proof.
func TestSharedReplayUnavailable(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now, Shared: downStore{}})
	proof, _ := NewProof(ecKey(), "GET", testURL, testToken, clk.Now())
	_, err := v.Verify(proof, "GET", testURL, testToken, "")
	if !errors.Is(err, failclosed.ErrUnavailable) || CheckOf(err) != "" {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// A full local cache does not turn honest proofs away when a shared store
// keeps the record (a flood of proofs sent with garbage ID tokens fills the
// memory): the store still catches every replay. Without one, full refuses.
func TestFullCacheFallsBackToSharedStore(t *testing.T) {
	b := storetest.SQLite(t)
	clk := newClock()
	for _, tc := range []struct {
		name   string
		shared SharedReplay
		want   string // the fresh proof's check after the flood; "" accepted
	}{
		{"shared store", b.DB, ""},
		{"memory only", nil, CheckReplayCacheFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(Options{Now: clk.Now, ReplayCacheSize: 16, Shared: tc.shared})
			flooder := ecKey()
			var full bool
			for range 200 {
				p, _ := NewProof(flooder, "POST", testURL, "", clk.Now())
				_, err := v.Verify(p, "POST", testURL, "", "")
				full = full || CheckOf(err) == CheckReplayCacheFull
			}
			if full != (tc.shared == nil) {
				t.Fatalf("flood refused as cache-full: %v", full)
			}
			honest, _ := NewProof(ecKey(), "POST", testURL, "", clk.Now())
			if _, err := v.Verify(honest, "POST", testURL, "", ""); CheckOf(err) != tc.want {
				t.Fatalf("honest proof after the flood: %v, want check %q", err, tc.want)
			}
			if tc.shared != nil {
				if _, err := v.Verify(honest, "POST", testURL, "", ""); CheckOf(err) != CheckReplay {
					t.Fatalf("replay with a full cache: %v", err)
				}
			}
		})
	}
}
