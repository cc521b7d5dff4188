package auditlog

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// TestReloadHoldsTreeToWhatThisNodeSigned: an insider with write access to
// the database (not to audit.key) deletes the checkpoint rows after 40 of
// a running log that has signed 50 entries, then truncates or rewrites the
// entries after 45 (hashes recomputed). The log's next append finds the
// store changed under it and reloads the tree. The stored checkpoints now
// end at 40, which the tampered tree extends; but this node signed 50
// itself, and verifiers may hold that checkpoint: signing on over the
// tampered tree would publish a fork (two signed trees, neither a prefix of
// the other) that a verifier without a state file finds intact. The reload
// must hold the tree to the checkpoint the node signed too: it refuses,
// turns unhealthy saying why, and signs nothing more.
func TestReloadHoldsTreeToWhatThisNodeSigned(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		tamper func(s sqlTamper)
		refuse string
	}{
		{name: "truncated after its checkpoints were deleted", tamper: func(s sqlTamper) {
			s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, 45)
			s.editHashes(func(m map[int64][32]byte) { dropFrom(m, tlog.StoredHashCount(45)) })
		}, refuse: "entries lost"},
		{name: "rewritten and grown after its checkpoints were deleted", tamper: func(s sqlTamper) {
			es := s.entries()
			forged := bytes.Replace(es[49], []byte(`{"index":49,`), []byte(`{"index":50,`), 1)
			s.setEntry(47, bytes.Replace(es[47], []byte(`"status":200`), []byte(`"status":403`), 1))
			s.exec(`INSERT INTO audit_entries (idx, data) VALUES (?, ?)`, 50, forged)
			s.rehash()
		}, refuse: "does not extend this node's own tree of 50"},
	}
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s := sqlTamper{t: t, db: b.db}
					for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
						s.exec(`DELETE FROM ` + tbl)
					}
					l := openLog(t, b.st, Options{CheckpointInterval: 1 << 40})
					appendN(t, l, 40)
					if err := l.Sync(ctx); err != nil {
						t.Fatal(err)
					}
					appendN(t, l, 10)
					if err := l.Sync(ctx); err != nil {
						t.Fatal(err)
					}
					if last, _, _ := b.st.LatestAuditCheckpoint(ctx); last != 50 {
						t.Fatalf("latest checkpoint %d, want 50", last)
					}

					s.exec(`DELETE FROM audit_checkpoints WHERE size > ?`, 40)
					c.tamper(s)

					// The next appends find the store changed and reload.
					var appended int
					for i := 0; i < 20; i++ {
						if _, err := l.appendDurable(ctx, gatewayEvent(100+i)); err == nil {
							appended++
						}
					}
					_ = l.Sync(ctx)
					if last, note, _ := b.st.LatestAuditCheckpoint(ctx); last != 40 {
						t.Fatalf("after the tampering %d appends were taken and a checkpoint of %d was signed over the tampered tree:\n%s", appended, last, note)
					}
					if appended > 0 {
						t.Fatalf("%d appends were taken over the tampered tree", appended)
					}
					err := l.Healthy()
					if !errors.Is(err, errRewritten) || !strings.Contains(err.Error(), c.refuse) {
						t.Fatalf("Healthy = %v, want the rewritten tree named, saying %q", err, c.refuse)
					}
				})
			}
		})
	}
}

// TestReloadHoldsTreeToWhatThisNodeStored: the entries a node stored after
// its latest checkpoint are covered by no signature yet (for up to the
// checkpoint interval), but the node knows their tree. An insider who
// rewrites or deletes some of them in the database, and makes the node
// reload (an entry row added past the end, so that its next commit
// conflicts), must not get the next checkpoint signed over the changed
// tail, nor the node's next entries written over deleted ones.
func TestReloadHoldsTreeToWhatThisNodeStored(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		tamper func(s sqlTamper)
		refuse string
	}{
		{name: "unsigned tail rewritten", tamper: func(s sqlTamper) {
			es := s.entries()
			forged := bytes.Replace(es[49], []byte(`{"index":49,`), []byte(`{"index":50,`), 1)
			s.setEntry(45, bytes.Replace(es[45], []byte(`"status":200`), []byte(`"status":403`), 1))
			s.exec(`INSERT INTO audit_entries (idx, data) VALUES (?, ?)`, 50, forged)
			s.rehash()
		}, refuse: "does not extend this node's own tree of 50"},
		{name: "unsigned tail deleted", tamper: func(s sqlTamper) {
			s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, 45)
			s.editHashes(func(m map[int64][32]byte) { dropFrom(m, tlog.StoredHashCount(45)) })
		}, refuse: "entries lost"},
	}
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s := sqlTamper{t: t, db: b.db}
					for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
						s.exec(`DELETE FROM ` + tbl)
					}
					l := openLog(t, b.st, Options{CheckpointInterval: 1 << 40})
					appendN(t, l, 40)
					if err := l.Sync(ctx); err != nil {
						t.Fatal(err)
					}
					appendN(t, l, 10) // not signed yet
					l.mu.Lock()
					own := l.root
					l.mu.Unlock()
					c.tamper(s)

					var appended int
					for i := 0; i < 20; i++ {
						if _, err := l.appendDurable(ctx, gatewayEvent(100+i)); err == nil {
							appended++
						}
					}
					// A checkpoint may still be signed, of the node's own tree.
					_ = l.Sync(ctx)
					last, note, _ := b.st.LatestAuditCheckpoint(ctx)
					if size, root, err := audit.ParseCheckpoint(note, testVerifier); err != nil || size > 50 || size == 50 && root != own {
						t.Fatalf("after the tampering %d appends were taken and a checkpoint of %d was signed over the tampered tree:\n%s", appended, last, note)
					}
					if appended > 0 {
						t.Fatalf("%d appends were taken over the tampered tree", appended)
					}
					err := l.Healthy()
					if !errors.Is(err, errRewritten) || !strings.Contains(err.Error(), c.refuse) {
						t.Fatalf("Healthy = %v, want the rewritten tree named, saying %q", err, c.refuse)
					}
				})
			}
		})
	}
}
