package auditlog

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tamperLog builds a log of 40 entries with checkpoints at 20 and 40 and
// returns the trees seen at those sizes.
func tamperLog(t *testing.T, st Storage) (at20, at40 audit.TreeHead) {
	t.Helper()
	ctx := context.Background()
	l, err := Open(ctx, st, testSigner, Options{CheckpointInterval: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	head := func() audit.TreeHead {
		if err := l.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		cp, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s, r, err := audit.ParseCheckpoint(cp, testVerifier)
		if err != nil {
			t.Fatal(err)
		}
		return audit.TreeHead{Size: s, Root: r}
	}
	appendN(t, l, 20)
	at20 = head()
	for i := 20; i < 40; i++ {
		if _, err := l.appendDurable(ctx, gatewayEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	at40 = head()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return at20, at40
}

type sqlTamper struct {
	t  *testing.T
	db *store.DB
}

func (s sqlTamper) exec(q string, args ...any) {
	s.t.Helper()
	if _, err := s.db.SQL().ExecContext(context.Background(), s.db.Rebind(q), args...); err != nil {
		s.t.Fatalf("%s: %v", q, err)
	}
}

func (s sqlTamper) entries() [][]byte {
	s.t.Helper()
	es, err := s.db.AuditEntries(context.Background(), 0, 1000)
	if err != nil {
		s.t.Fatal(err)
	}
	return es
}

// hashes reads every stored hash, from the runs and the one-row-per-hash
// table of earlier versions.
func (s sqlTamper) hashes() map[int64][32]byte {
	s.t.Helper()
	m := map[int64][32]byte{}
	s.rows(`SELECT first_id, hashes FROM audit_hash_runs`, func(first int64, b []byte) {
		for i := 0; i+32 <= len(b); i += 32 {
			m[first+int64(i/32)] = [32]byte(b[i : i+32])
		}
	})
	s.rows(`SELECT id, hash FROM audit_hashes`, func(id int64, b []byte) { m[id] = [32]byte(b) })
	return m
}

// rows calls f with each (id, bytes) row q returns.
func (s sqlTamper) rows(q string, f func(int64, []byte)) {
	s.t.Helper()
	rows, err := s.db.SQL().QueryContext(context.Background(), q)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			s.t.Fatal(err)
		}
		f(id, b)
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
}

// setHashes replaces every stored hash with m, in runs of consecutive ones.
func (s sqlTamper) setHashes(m map[int64][32]byte) {
	s.exec(`DELETE FROM audit_hash_runs`)
	s.exec(`DELETE FROM audit_hashes`)
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i := 0; i < len(ids); {
		j := i
		var b []byte
		for ; j < len(ids) && ids[j] == ids[i]+int64(j-i); j++ {
			h := m[ids[j]]
			b = append(b, h[:]...)
		}
		s.exec(`INSERT INTO audit_hash_runs (first_id, hashes) VALUES (?, ?)`, ids[i], b)
		i = j
	}
}

// editHashes changes the stored hashes with f.
func (s sqlTamper) editHashes(f func(m map[int64][32]byte)) {
	m := s.hashes()
	f(m)
	s.setHashes(m)
}

// rewriteFrom replaces every entry from index from with es.
func (s sqlTamper) rewriteFrom(from int64, es [][]byte) {
	s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, from)
	for i, e := range es {
		s.exec(`INSERT INTO audit_entries (idx, data) VALUES (?, ?)`, from+int64(i), e)
	}
}

// rehash replaces the whole stored-hash table with hashes recomputed from
// the (tampered) entries, as a careful attacker would.
func (s sqlTamper) rehash() {
	es := s.entries()
	hs := map[int64]tlog.Hash{}
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hs[x]
		}
		return out, nil
	})
	all := map[int64][32]byte{}
	for i, e := range es {
		add, err := tlog.StoredHashes(int64(i), e, r)
		if err != nil {
			s.t.Fatal(err)
		}
		base := tlog.StoredHashCount(int64(i))
		for j, h := range add {
			hs[base+int64(j)] = h
			all[base+int64(j)] = h
		}
	}
	s.setHashes(all)
}

func (s sqlTamper) setEntry(i int64, data []byte) {
	s.exec(`UPDATE audit_entries SET data = ? WHERE idx = ?`, data, i)
}

// dropFrom deletes the hashes at from and after.
func dropFrom(m map[int64][32]byte, from int64) {
	for id := range m {
		if id >= from {
			delete(m, id)
		}
	}
}

func forgedNote(t *testing.T, text string) []byte {
	skey, _ := mustKey("mayfly.test/audit") // same name, other key
	sg, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Sign(&note.Note{Text: text}, sg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestVerifyDetectsTampering(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name     string
		tamper   func(s sqlTamper, at20, at40 audit.TreeHead)
		seen     func(at20, at40 audit.TreeHead) *audit.TreeHead
		firstBad int64
		reason   string
	}{
		{name: "intact", tamper: func(sqlTamper, audit.TreeHead, audit.TreeHead) {}, firstBad: -1},
		{name: "intact with seen", tamper: func(sqlTamper, audit.TreeHead, audit.TreeHead) {},
			seen: func(a, b audit.TreeHead) *audit.TreeHead { return &a }, firstBad: -1},
		{name: "changed entry", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			e := s.entries()[17]
			s.setEntry(17, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
		}, firstBad: 17, reason: "stored hash"},
		{name: "changed entry and rehashed", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			e := s.entries()[25]
			s.setEntry(25, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
			s.rehash()
		}, seen: func(a, b audit.TreeHead) *audit.TreeHead { return &a }, firstBad: 20, reason: "signed checkpoint"},
		{name: "changed first entry and rehashed", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			e := s.entries()[0]
			s.setEntry(0, bytes.Replace(e, []byte(`"status":200`), []byte(`"status":403`), 1))
			s.rehash()
		}, firstBad: 0, reason: "signed checkpoint"},
		{name: "deleted entry", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_entries WHERE idx = ?`, 17)
		}, firstBad: 17, reason: "index"},
		{name: "deleted entry renumbered", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			es := s.entries()
			var rest [][]byte
			for i, e := range es[18:] {
				rest = append(rest, bytes.Replace(e, []byte(`{"index":`+itoa(18+i)+`,`), []byte(`{"index":`+itoa(17+i)+`,`), 1))
			}
			s.rewriteFrom(17, rest)
		}, firstBad: 17},
		{name: "reordered entries", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			es := s.entries()
			s.setEntry(12, es[17])
			s.setEntry(17, es[12])
		}, firstBad: 12, reason: "index"},
		{name: "inserted entry", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			es := s.entries()
			forged := bytes.Replace(es[17], []byte(`"lease":"lse_17"`), []byte(`"lease":"lse_evil"`), 1)
			s.rewriteFrom(17, append([][]byte{forged}, es[17:]...))
		}, firstBad: 17},
		{name: "appended entry without hashes", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			es := s.entries()
			s.exec(`INSERT INTO audit_entries (idx, data) VALUES (?, ?)`, 40,
				bytes.Replace(es[39], []byte(`{"index":39,`), []byte(`{"index":40,`), 1))
		}, firstBad: 40, reason: "missing"},
		{name: "truncated tail", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, 35)
			s.editHashes(func(m map[int64][32]byte) { dropFrom(m, tlog.StoredHashCount(35)) })
		}, firstBad: 35, reason: "missing"},
		{name: "edited leaf hash", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { m[tlog.StoredHashIndex(0, 17)] = [32]byte{} })
		}, firstBad: 17, reason: "stored hash"},
		{name: "edited interior hash", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { m[tlog.StoredHashIndex(2, 4)] = [32]byte{} })
		}, firstBad: 16, reason: "level 2"},
		{name: "edited hash above a page", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { m[tlog.StoredHashIndex(4, 1)] = [32]byte{} })
		}, firstBad: 16, reason: "level 4"},
		{name: "deleted hash", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.editHashes(func(m map[int64][32]byte) { delete(m, tlog.StoredHashIndex(1, 3)) })
		}, firstBad: 6, reason: "missing"},
		{name: "rolled back below seen checkpoint", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_entries WHERE idx >= ?`, 30)
			s.editHashes(func(m map[int64][32]byte) { dropFrom(m, tlog.StoredHashCount(30)) })
			s.exec(`DELETE FROM audit_checkpoints WHERE size > ?`, 20)
		}, seen: func(a, b audit.TreeHead) *audit.TreeHead { return &b }, firstBad: 30, reason: "rolled back"},
		{name: "forged checkpoint", tamper: func(s sqlTamper, _, at40 audit.TreeHead) {
			s.exec(`UPDATE audit_checkpoints SET note = ? WHERE size = ?`,
				forgedNote(s.t, string(audit.FormatCheckpoint("mayfly.test/audit", 40, at40.Root))), 40)
		}, firstBad: 0, reason: "not valid"},
		{name: "forged checkpoint after seen", tamper: func(s sqlTamper, _, at40 audit.TreeHead) {
			s.exec(`UPDATE audit_checkpoints SET note = ? WHERE size = ?`,
				forgedNote(s.t, string(audit.FormatCheckpoint("mayfly.test/audit", 40, at40.Root))), 40)
		}, seen: func(a, b audit.TreeHead) *audit.TreeHead { return &a }, firstBad: 20, reason: "not valid"},
		{name: "checkpoint size edited", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			n, _ := s.db.AuditCheckpoint(context.Background(), 40)
			s.exec(`UPDATE audit_checkpoints SET note = ? WHERE size = ?`, bytes.Replace(n, []byte("\n40\n"), []byte("\n39\n"), 1), 40)
		}, firstBad: 0, reason: "not valid"},
		{name: "old checkpoint filed under a larger size", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			n, _ := s.db.AuditCheckpoint(context.Background(), 20)
			s.exec(`INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)`, 1000, n)
		}, firstBad: 20, reason: "filed under size 1000 but its signed note is for 20"},
		{name: "checkpoints deleted", tamper: func(s sqlTamper, _, _ audit.TreeHead) {
			s.exec(`DELETE FROM audit_checkpoints`)
		}, firstBad: 0, reason: "no signed checkpoint"},
	}
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					// A fresh log per case: clean tables.
					s := sqlTamper{t: t, db: b.db}
					for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
						s.exec(`DELETE FROM ` + tbl)
					}
					at20, at40 := tamperLog(t, b.st)
					c.tamper(s, at20, at40)
					var seen *audit.TreeHead
					if c.seen != nil {
						seen = c.seen(at20, at40)
					}
					// 7: entry by entry; powers of two: pages checked
					// whole by their readers where nothing is wrong in
					// them. Every page size gives the same verdict.
					var first *audit.VerifyResult
					for _, size := range []int{7, 1, 2, 4, 8, 16, 0} {
						res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{PageSize: size, Seen: seen})
						if err != nil {
							t.Fatalf("Verify: %v", err)
						}
						if res.FirstBad != c.firstBad || res.OK() != (c.firstBad == -1) {
							t.Fatalf("page size %d: FirstBad = %d (%q), want %d", size, res.FirstBad, res.Reason, c.firstBad)
						}
						if !strings.Contains(res.Reason, c.reason) {
							t.Fatalf("page size %d: Reason %q does not mention %q", size, res.Reason, c.reason)
						}
						if first == nil {
							first = res
						} else if *res != *first {
							t.Fatalf("page size %d: %+v, page size 7: %+v", size, res, first)
						}
						if c.firstBad == -1 {
							if res.Size != 40 || res.Root != at40.Root {
								t.Fatalf("intact result %+v", res)
							}
						}
					}
				})
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestVerifyStream(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	at20, at40 := tamperLog(t, st)
	cp40, _ := st.AuditCheckpoint(ctx, 40)
	cp20, _ := st.AuditCheckpoint(ctx, 20)
	es, _ := st.AuditEntries(ctx, 0, 100)
	ndjson := func(es [][]byte) []byte {
		var b bytes.Buffer
		for _, e := range es {
			b.Write(e)
			b.WriteByte('\n')
		}
		return b.Bytes()
	}
	changed := func(i int) [][]byte {
		out := append([][]byte(nil), es...)
		out[i] = bytes.Replace(out[i], []byte(`"status":200`), []byte(`"status":500`), 1)
		return out
	}
	cases := []struct {
		name     string
		body     []byte
		cp       []byte
		seen     *audit.TreeHead
		firstBad int64
	}{
		{"intact", ndjson(es), cp40, nil, -1},
		{"intact, no final newline", bytes.TrimSuffix(ndjson(es), []byte("\n")), cp40, nil, -1},
		{"intact, older checkpoint", ndjson(es), cp20, nil, -1},
		{"intact, seen", ndjson(es), cp40, &at20, -1},
		{"changed", ndjson(changed(33)), cp40, &at20, 20},
		{"changed before seen", ndjson(changed(3)), cp40, &at20, 0},
		{"missing tail", ndjson(es[:31]), cp40, nil, 31},
		{"reordered", ndjson(append(append([][]byte{}, es[:5]...), append([][]byte{es[6], es[5]}, es[7:]...)...)), cp40, nil, 5},
		{"rollback below seen", ndjson(es[:20]), cp20, &at40, 20},
		{"garbage line", append(ndjson(es[:9]), []byte("not json\n")...), cp40, nil, 9},
		{"overlong line", append(ndjson(es[:2]), bytes.Repeat([]byte("x"), 2*audit.MaxLineSize)...), cp40, nil, 2},
		{"forged checkpoint", ndjson(es), forgedNote(t, string(audit.FormatCheckpoint("mayfly.test/audit", 40, at40.Root))), nil, 0},
		{"no checkpoint", ndjson(es), nil, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := audit.VerifyStream(ctx, bytes.NewReader(c.body), c.cp, testVerifier, audit.VerifyOptions{Seen: c.seen})
			if err != nil {
				t.Fatal(err)
			}
			if res.FirstBad != c.firstBad {
				t.Fatalf("FirstBad = %d (%s), want %d", res.FirstBad, res.Reason, c.firstBad)
			}
		})
	}
}

// TestVerifyLiveLog verifies while appends continue.
func TestVerifyLiveLog(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{})
			appendN(t, l, 50)
			l.Sync(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < 100; i++ {
					l.appendDurable(ctx, gatewayEvent(i))
				}
			}()
			for i := 0; i < 5; i++ {
				res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{PageSize: 16})
				if err != nil || !res.OK() {
					t.Fatalf("Verify during appends = %+v, %v", res, err)
				}
			}
			<-done
		})
	}
}
