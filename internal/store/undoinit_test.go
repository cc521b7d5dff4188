package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// UndoInit erases an init's rows only when the keyring there is the
// caller's: never a database another init won, never one without a keyring.
func TestUndoInit(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		keyring    bool
		ours       bool
		wantErased bool
	}{
		{"the caller's keyring", true, true, true},
		{"another init's keyring", true, false, false},
		{"no keyring", false, true, false},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					var db *store.DB
					if b.Name == "sqlite" {
						db = storetest.SQLite(t).DB
					} else {
						db = storetest.Postgres(t).DB
					}
					if tt.keyring {
						if err := db.AddKeyVersion(ctx, store.KeyVersion{Version: 1, Sealed: []byte("s1"), CreatedAt: time.Now()}); err != nil {
							t.Fatal(err)
						}
						if err := db.PutSecret(ctx, store.Secret{Name: "sys/token-hmac", Version: 1, KEKVersion: 1, WrappedDEK: []byte("w"), Ciphertext: []byte("c"), CreatedAt: time.Now()}); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := db.PutMetaIfAbsent(ctx, "audit_key", []byte("k")); err != nil {
						t.Fatal(err)
					}
					var saw []store.KeyVersion
					erased, err := db.UndoInit(ctx, func(kvs []store.KeyVersion) bool { saw = kvs; return tt.ours })
					if err != nil || erased != tt.wantErased {
						t.Fatalf("UndoInit = %v %v, want %v", erased, err, tt.wantErased)
					}
					if tt.keyring && (len(saw) != 1 || string(saw[0].Sealed) != "s1") {
						t.Fatalf("ours was shown %+v", saw)
					}
					kvs, _ := db.KeyVersions(ctx)
					_, serr := db.GetSecret(ctx, "sys/token-hmac")
					_, merr := db.GetMeta(ctx, "audit_key")
					_, verr := db.GetMeta(ctx, "schema_version")
					gone := len(kvs) == 0 && errors.Is(serr, store.ErrNotFound) && errors.Is(merr, store.ErrNotFound)
					kept := (len(kvs) == 1) == tt.keyring && (serr == nil) == tt.keyring && merr == nil
					if verr != nil || (tt.wantErased && !gone) || (!tt.wantErased && !kept) {
						t.Fatalf("after: keyring %d, secret %v, meta %v, schema version %v", len(kvs), serr, merr, verr)
					}
				})
			}
		})
	}
}
