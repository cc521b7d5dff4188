package auditlog

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// TestVerifyPassesEntriesNoCheckpointCovers: an insider deletes the signed
// checkpoints made since the auditor's last verification (state file at 20)
// and rewrites entries after that point, stored hashes recomputed. Entries
// after the surviving checkpoint are proven by nothing but the hashes the
// insider wrote: Verify reports them unproven, never intact, and fails on
// them once the first is older than a running server would leave unsigned
// (MaxUnsignedAge: it signs every 500 ms, and at every stop).
func TestVerifyPassesEntriesNoCheckpointCovers(t *testing.T) {
	ctx := context.Background()
	later := func() time.Time { return time.Now().Add(2 * audit.MaxUnsignedAge) }
	earlier := func() time.Time { return time.Now().Add(-2 * audit.MaxUnsignedAge) }
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := sqlTamper{t: t, db: b.db}
			for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
				s.exec(`DELETE FROM ` + tbl)
			}
			at20, _ := tamperLog(t, b.st)
			// Closed: checkpoint 40 covers it all, however late it is read.
			res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{Now: later})
			if err != nil || !res.OK() || res.Unproven != 0 {
				t.Fatalf("untouched log read later: %+v, %v", res, err)
			}

			s.exec(`DELETE FROM audit_checkpoints WHERE size > ?`, 20)
			e := s.entries()[33]
			s.setEntry(33, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
			s.rehash()
			cases := []struct {
				name  string
				seen  *audit.TreeHead
				now   func() time.Time
				fails bool
			}{
				{"no state, just written", nil, nil, false},
				{"state at 20, just written", &at20, nil, false},
				{"no state, read later", nil, later, true},
				{"state at 20, read later", &at20, later, true},
				{"entries dated after the reading", nil, earlier, true},
			}
			for _, c := range cases {
				res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{Seen: c.seen, Now: c.now})
				if err != nil {
					t.Fatal(err)
				}
				if res.Checkpoint.Size != 20 || res.Unproven != 20 || res.UnprovenSince.IsZero() {
					t.Errorf("%s: entries [20, 40) not reported unproven: %+v", c.name, res)
				}
				if c.fails {
					if res.OK() || res.FirstBad != 20 || !strings.Contains(res.Reason, "covered by no signed checkpoint") {
						t.Errorf("%s: Verify = %+v, want a failure at 20", c.name, res)
					}
				} else if !res.OK() {
					t.Errorf("%s: a live log's newest entries fail: %+v", c.name, res)
				}
			}
		})
	}
}

// TestVerifyStreamUnproven: the same rule for entries read as NDJSON.
func TestVerifyStreamUnproven(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	tamperLog(t, st)
	cp20, _ := st.AuditCheckpoint(ctx, 20)
	es, _ := st.AuditEntries(ctx, 0, 100)
	body := append(bytes.Join(es, []byte("\n")), '\n')
	for _, c := range []struct {
		name  string
		now   func() time.Time
		fails bool
	}{
		{"just written", nil, false},
		{"read later", func() time.Time { return time.Now().Add(2 * audit.MaxUnsignedAge) }, true},
	} {
		res, err := audit.VerifyStream(ctx, bytes.NewReader(body), cp20, testVerifier, audit.VerifyOptions{Now: c.now})
		if err != nil {
			t.Fatal(err)
		}
		if res.Unproven != 20 || res.OK() == c.fails || (c.fails && res.FirstBad != 20) {
			t.Errorf("%s: %+v", c.name, res)
		}
	}
}
