package auditlog

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"

	"golang.org/x/mod/sumdb/tlog"
)

// TestReopenSignsOverRewrittenHistory: an insider with write access to the
// database (not to audit.key) rewrites an entry already covered by a signed
// checkpoint and recomputes the stored hashes. The next server start must
// not load that tree, whose root the signed checkpoint contradicts, and sign
// a new checkpoint over the rewritten history: a verifier without a state
// file (a first run, the console, audit prove) would then find the log
// intact. Open refuses it; an untouched log, also one that grew past its
// latest checkpoint, opens as before.
func TestReopenSignsOverRewrittenHistory(t *testing.T) {
	ctx := context.Background()
	rewrite5 := func(s sqlTamper) {
		e := s.entries()[5]
		s.setEntry(5, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
		s.rehash()
	}
	cases := []struct {
		name   string
		tamper func(s sqlTamper, at20 audit.TreeHead)
		refuse string // what Open's error says; empty: it opens
	}{
		{name: "intact", tamper: func(sqlTamper, audit.TreeHead) {}},
		{name: "grown past its latest checkpoint", tamper: func(s sqlTamper, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_checkpoints WHERE size > ?`, 20)
		}},
		{name: "rewritten under the latest checkpoint", tamper: func(s sqlTamper, _ audit.TreeHead) { rewrite5(s) },
			refuse: "another root than the signed checkpoint"},
		{name: "rewritten under a checkpoint the log grew past", tamper: func(s sqlTamper, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_checkpoints WHERE size > ?`, 20)
			rewrite5(s)
		}, refuse: "does not extend the signed checkpoint of 20"},
		{name: "right-edge hash edited", tamper: func(s sqlTamper, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { m[tlog.StoredHashIndex(5, 0)] = [32]byte{1} })
		}, refuse: "another root"},
		{name: "right-edge hash deleted", tamper: func(s sqlTamper, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { delete(m, tlog.StoredHashIndex(3, 4)) })
		}, refuse: "right-edge hashes of its 40 entries are missing"},
		{name: "entries truncated", tamper: func(s sqlTamper, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, 30)
			s.editHashes(func(m map[int64][32]byte) { dropFrom(m, tlog.StoredHashCount(30)) })
		}, refuse: "entries lost"},
		{name: "old checkpoint filed under a larger size", tamper: func(s sqlTamper, at20 audit.TreeHead) {
			// It would hide checkpoint 40 and the entries it covers.
			n, err := s.db.AuditCheckpoint(ctx, 20)
			if err != nil {
				s.t.Fatal(err)
			}
			s.exec(`INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)`, 1000, n)
		}, refuse: "filed under size 1000 but its signed note is for 20"},
	}
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s := sqlTamper{t: t, db: b.db}
					for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
						s.exec(`DELETE FROM ` + tbl)
					}
					at20, _ := tamperLog(t, b.st) // signed checkpoints at 20 and 40
					c.tamper(s, at20)
					before, _, _ := b.st.LatestAuditCheckpoint(ctx)

					// The server restarts and logs one more request.
					l, err := Open(ctx, b.st, testSigner, Options{CheckpointInterval: 1 << 40})
					if c.refuse != "" {
						if err == nil {
							l.Close(ctx)
							t.Fatalf("Open took the tampered log")
						}
						if !errors.Is(err, errRewritten) || !strings.Contains(err.Error(), c.refuse) {
							t.Fatalf("Open: %v, want a refusal saying %q", err, c.refuse)
						}
						if after, _, _ := b.st.LatestAuditCheckpoint(ctx); after != before {
							t.Fatalf("a checkpoint was signed over the tampered log: latest %d, was %d", after, before)
						}
						return
					}
					if err != nil {
						t.Fatalf("Open: %v", err)
					}
					if _, err := l.appendDurable(ctx, gatewayEvent(40)); err != nil {
						t.Fatal(err)
					}
					if err := l.Close(ctx); err != nil {
						t.Fatal(err)
					}
					res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{Seen: &at20})
					if err != nil || !res.OK() || res.Checkpoint.Size != 41 {
						t.Fatalf("Verify after reopening: %+v, %v", res, err)
					}
				})
			}
		})
	}
}

// TestStaleReloadRefusesRewrittenTree: a running node that reloads the tree
// (after a failed commit) finds the stored hashes rewritten under its own
// signed checkpoint: it turns unhealthy, saying why, refuses appends and
// signs nothing over that tree.
func TestStaleReloadRefusesRewrittenTree(t *testing.T) {
	ctx := context.Background()
	m := newMemStore()
	l := openLog(t, m, Options{CheckpointInterval: 20 * time.Millisecond})
	appendN(t, l, 40)
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	m.setFail(errInjected)
	if _, err := l.appendDurable(ctx, gatewayEvent(40)); err == nil {
		t.Fatal("append with a failing store succeeded")
	}
	m.mu.Lock()
	m.hashes[tlog.StoredHashIndex(5, 0)] = [32]byte{1}
	m.fail = nil
	m.mu.Unlock()
	if _, err := l.appendDurable(ctx, gatewayEvent(41)); err == nil {
		t.Fatal("append over a rewritten tree succeeded")
	}
	waitFor(t, func() bool { return errors.Is(l.Healthy(), errRewritten) })
	if err := l.Healthy(); !strings.Contains(err.Error(), "another root than the signed checkpoint") {
		t.Fatalf("Healthy = %v", err)
	}
	if got := counterValue(t, l.metrics.treeErrors); got == 0 {
		t.Fatal("no tree mismatch counted")
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if last, _, _ := m.LatestAuditCheckpoint(ctx); last != 40 {
		t.Fatalf("latest checkpoint %d, want 40", last)
	}
}

// TestSequencerRefusesRewrittenTree: on PostgreSQL the node that becomes
// the sequencer after history was rewritten under the signed checkpoint
// does not sign over it: it gives the lock up, turns unhealthy with the
// reason, refuses appends, and no checkpoint follows.
func TestSequencerRefusesRewrittenTree(t *testing.T) {
	ctx := context.Background()
	logs, dbs, _ := sharedNodes(t, 2)
	seq := waitSequencer(t, logs)
	other := 1 - seq
	appendN(t, logs[seq], 40)
	waitSize(t, 10*time.Second, 40, logs[seq])
	if err := logs[seq].Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s := sqlTamper{t: t, db: dbs[other]}
	e := s.entries()[5]
	s.setEntry(5, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
	s.rehash()
	if err := logs[seq].Close(ctx); err != nil { // the other node takes over
		t.Fatal(err)
	}
	waitFor(t, func() bool { return errors.Is(logs[other].Healthy(), errRewritten) })
	if err := logs[other].Healthy(); !errors.Is(err, failclosed.ErrUnavailable) || !strings.Contains(err.Error(), "another root than the signed checkpoint") {
		t.Fatalf("Healthy = %v", err)
	}
	if _, err := logs[other].appendDurable(ctx, gatewayEvent(40)); err == nil {
		t.Fatal("append accepted while the stored tree is rewritten")
	}
	time.Sleep(3 * electInterval) // elections come and fail
	if logs[other].sh.leader.Load() {
		t.Fatal("the node sequences the rewritten tree")
	}
	if last, _, _ := dbs[other].LatestAuditCheckpoint(ctx); last != 40 {
		t.Fatalf("latest checkpoint %d, want 40", last)
	}
}
