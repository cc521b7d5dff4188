package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.AddKeyVersion(ctx, KeyVersion{Version: 1, Sealed: []byte("s1"), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := db.PutSecret(ctx, Secret{Name: fmt.Sprint("s", i), Version: 1, KEKVersion: 1, WrappedDEK: []byte("d"), Ciphertext: []byte("c"), CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	db.stmts.mu.Lock()
	cached := len(db.stmts.stmts)
	db.stmts.mu.Unlock()
	if cached == 0 {
		t.Fatal("no statement was prepared after repeated writes")
	}
	// Many distinct queries: the cache stays bounded.
	for i := 0; i < 3*maxCached; i++ {
		db.stmts.get(fmt.Sprintf("SELECT %d", i))
		db.stmts.prepare()
	}
	db.stmts.mu.Lock()
	defer db.stmts.mu.Unlock()
	if n := len(db.stmts.stmts) + len(db.stmts.pending); n > maxCached {
		t.Fatalf("cache grew to %d", n)
	}
}
