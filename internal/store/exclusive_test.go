package store_test

import (
	"context"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// One node at a time holds a named right; another name is another right;
// it passes on when released, and when the holder's session dies.
func TestExclusive(t *testing.T) {
	ctx := context.Background()
	b := storetest.Postgres(t)
	a, other := b.DB, b.Another(t)
	x, err := a.TryExclusive(ctx, "sink:alerts")
	if err != nil || x == nil {
		t.Fatalf("first taker: %v %v", x, err)
	}
	if err := x.Alive(ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		lock   string
		wantOK bool
	}{
		{"the same right, held", "sink:alerts", false},
		{"another right", "sink:other", true},
	}
	for _, tt := range tests {
		y, err := other.TryExclusive(ctx, tt.lock)
		if err != nil || (y != nil) != tt.wantOK {
			t.Fatalf("%s: got %v %v", tt.name, y, err)
		}
		if y != nil {
			y.Release()
		}
	}
	if err := x.Release(); err != nil {
		t.Fatal(err)
	}
	y, err := other.TryExclusive(ctx, "sink:alerts")
	if err != nil || y == nil {
		t.Fatalf("after release: %v %v", y, err)
	}
	// The holder's session dies: the right is free again, and Alive says so.
	// (The timeout makes the terminate wait for the backend to exit, which
	// is when its locks go; without it the next line could run first.)
	if _, err := a.SQL().ExecContext(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7303887
		AND objid = hashtext(current_schema() || ':sink:alerts')::oid AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if err := y.Alive(ctx); err == nil {
		t.Fatal("Alive after its session was terminated")
	}
	y.Release()
	z, err := a.TryExclusive(ctx, "sink:alerts")
	if err != nil || z == nil {
		t.Fatalf("after the holder died: %v %v", z, err)
	}
	z.Release()
}
