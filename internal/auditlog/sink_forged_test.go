package auditlog

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// An entry is one line of JSON: the log never writes a line break into
// one. A row someone wrote into audit_entries by SQL with a line break
// in it became two lines in a file sink (and a message with a line break
// in a syslog collector's line-based store): the second a forged entry of
// their choosing, a grant that never happened, in the SIEM that is to be
// the log's copy out of reach. The forwarder now stops at such a row, as
// it stops at a gap, and says so; nothing is delivered from it on.
func TestForwarderRefusesEntryWithLineBreak(t *testing.T) {
	ctx := context.Background()
	for _, b := range realBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := sqlTamper{t: t, db: b.db}
			for _, tbl := range []string{"audit_entries", "audit_hashes", "audit_hash_runs", "audit_checkpoints"} {
				s.exec(`DELETE FROM ` + tbl)
			}
			l := openLog(t, b.st, Options{})
			appendN(t, l, 5)
			path := filepath.Join(t.TempDir(), "siem.jsonl")
			sink, err := NewFileSink(path, FileSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			f := NewForwarder(b.st, sink, ForwarderOptions{Batch: 100})
			if n, err := f.Pump(ctx); err != nil || n != 5 {
				t.Fatalf("Pump = %d, %v", n, err)
			}
			forged := `{"index":5,"time":"2026-01-01T00:00:00Z","type":"server.start"}` + "\n" +
				`{"index":6,"time":"2026-01-01T00:00:00Z","type":"token.exchange","subject":"repo:evil/x:ref:refs/heads/main","grant":"deploy","status":200}`
			s.exec(`INSERT INTO audit_entries (idx, data) VALUES (?, ?)`, 5, []byte(forged))
			n, err := f.Pump(ctx)
			if err == nil || n != 0 || !strings.Contains(err.Error(), "line break") {
				t.Fatalf("Pump over a row with a line break = %d, %v; want a refusal naming it", n, err)
			}
			lines := readLines(t, path)
			if len(lines) != 5 {
				t.Fatalf("sink file has %d lines, want the 5 genuine entries: %q", len(lines), lines)
			}
			if c, _ := b.st.AuditCursor(ctx, "sink:"+sink.Name()); c != 5 {
				t.Fatalf("cursor moved to %d past the refused row", c)
			}
		})
	}
}
