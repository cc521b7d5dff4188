package store_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A node running while a newer mayfly migrates the database learns of it
// through a read it makes anyway, each of the three below, and from then
// on refuses every write (503: failclosed.ErrUnavailable) and every right
// it holds or asks for, naming both versions and what to do. Before, it
// went on writing rows in its own format under the newer schema, and its
// sequencer went on holding the log.
func TestNewerSchemaStopsARunningNode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		notice func(t *testing.T, db *store.DB, seq *store.AuditSequencer) error
	}{
		{"lease poll", func(t *testing.T, db *store.DB, _ *store.AuditSequencer) error {
			_, err := db.LeaseFeedRead(ctx, store.LeaseFeedRequest{})
			return err
		}},
		{"lease feed start", func(t *testing.T, db *store.DB, _ *store.AuditSequencer) error {
			_, _, err := db.LeaseFeedStart(ctx)
			return err
		}},
		{"readiness ping", func(t *testing.T, db *store.DB, _ *store.AuditSequencer) error {
			db.Ping(ctx) // fails: the newer schema is its answer
			return nil
		}},
		{"sequencer round", func(t *testing.T, db *store.DB, seq *store.AuditSequencer) error {
			// A newer node's record, sealed its way: never handed over.
			if _, err := db.SQL().ExecContext(ctx, `INSERT INTO audit_pending (data) VALUES ($1)`, []byte("m2 newer format")); err != nil {
				t.Fatal(err)
			}
			ids, _, err := seq.Pending(ctx, 0, 100, nil)
			if err == nil || len(ids) > 0 {
				t.Fatalf("the sequencer read %d pending records under a newer schema (err %v)", len(ids), err)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := storetest.Postgres(t)
			db := b.DB
			seq, err := db.TryAuditSequencer(ctx)
			if err != nil || seq == nil {
				t.Fatalf("sequencer: %v", err)
			}
			defer seq.Close()
			x, err := db.TryExclusive(ctx, "alerts")
			if err != nil || x == nil {
				t.Fatalf("exclusive: %v", err)
			}
			defer x.Release()
			if err := db.SchemaNewer(); err != nil {
				t.Fatalf("before any migration: %v", err)
			}
			newer := store.SchemaVersion() + 1
			if _, err := db.SQL().ExecContext(ctx, `UPDATE meta SET value = $1 WHERE key = 'schema_version'`, []byte(strconv.Itoa(newer))); err != nil {
				t.Fatal(err)
			}
			if err := tc.notice(t, db, seq); err != nil {
				t.Fatalf("the read that notices: %v", err)
			}
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Errorf("%s: done under a schema newer than this binary's", what)
					return
				}
				if !errors.Is(err, failclosed.ErrUnavailable) {
					t.Errorf("%s: %v, want it unavailable (503)", what, err)
				}
				for _, w := range []string{strconv.Itoa(newer), "(" + strconv.Itoa(store.SchemaVersion()) + ")", "upgrade this binary"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %q does not say %q", what, err, w)
					}
				}
			}
			check("SchemaNewer", db.SchemaNewer())
			check("ping", db.Ping(ctx))
			check("meta write (group commit)", db.PutMeta(ctx, "k", []byte("v")))
			_, err = db.AddAuditPending(ctx, [][]byte{[]byte("rec")}, store.AuditWritten)
			check("pending audit record (audit writer)", err)
			_, err = db.AddAuditPending(ctx, [][]byte{[]byte("rec")}, store.AuditDurable)
			check("pending audit record (durable)", err)
			_, _, err = seq.Pending(ctx, 0, 100, nil)
			check("held sequencer's read", err)
			check("held sequencer's fold", seq.Sequence(ctx, 0, [][]byte{[]byte("e")}, []int64{1}, nil, 0, nil))
			check("held exclusive right", x.Alive(ctx))
			s, err := db.TryAuditSequencer(ctx)
			if s != nil {
				s.Close()
			}
			check("taking the sequencer", err)
			y, err := db.TryExclusive(ctx, "sinks")
			if y != nil {
				y.Release()
			}
			check("taking an exclusive right", err)
		})
	}
}
