package store

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestNotifyLeases sends notifications through PostgreSQL and checks that
// a listener gets each accepted payload as sent, and that a refused one is
// never sent.
func TestNotifyLeases(t *testing.T) {
	pg := postgresSyncBackend(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(ctx, pg.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	got := make(chan string, 16)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.ListenLeases(lctx, func(p string) { got <- p }, func(err error) { t.Log("listen:", err) })
	}()
	defer func() { stop(); <-done }()
	if p := <-got; p != "" {
		t.Fatalf("first call %q, want \"\" (read the feed)", p)
	}

	long := strings.Repeat("a", MaxNotifyPayload)
	for _, tc := range []struct {
		payload string
		ok      bool
	}{
		{"r lease_1 lease_2", true},
		{"x', 'y') --", false}, // quotes and punctuation: refused, not sent
		{"UPPER", false},
		{long, true},
		{long + "a", false},
		{"r lease_3", true}, // the prepared statement serves again
	} {
		err := db.NotifyLeases(ctx, tc.payload)
		if (err == nil) != tc.ok {
			t.Fatalf("NotifyLeases(%.20q) = %v, want ok %v", tc.payload, err, tc.ok)
		}
		if !tc.ok {
			continue
		}
		select {
		case p := <-got:
			if p != tc.payload {
				t.Fatalf("listener got %.30q, want %.30q", p, tc.payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no notification for %.20q", tc.payload)
		}
	}
	select {
	case p := <-got:
		t.Fatalf("unexpected notification %.30q", p)
	case <-time.After(100 * time.Millisecond):
	}
}
