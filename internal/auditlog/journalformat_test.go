package auditlog

import (
	"bytes"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// The journal's file format and records, which are portable: only the
// journal's files (journal_linux.go) are Linux's.

// journalFile is a journal file of generation gen holding recs; gen 0 is
// an earlier version's file, without a header.
func journalFile(gen uint64, recs ...[]byte) []byte {
	var b, g []byte
	if gen > 0 {
		g = genBytes(gen)
		b = append([]byte(journalMagic), g...)
	}
	for _, r := range recs {
		b = append(appendRecordHeader(b, g, r), r...)
	}
	return b
}

func FuzzReadJournal(f *testing.F) {
	entry := audit.AppendEntry(nil, 0, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`))
	intent := append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, 7}, "2026-01-01T00:00:00Z\n{\"type\":\"x\"}"...)
	done := append([]byte{recComplete, 0, 0, 0, 0, 0, 0, 0, 7}, audit.AppendEntry(nil, 1, "t", []byte(`{"type":"x"}`))...)
	f.Add([]byte{})
	for _, gen := range []uint64{0, 1, 1 << 40} {
		f.Add(journalFile(gen, entry))
		f.Add(append(journalFile(gen, entry), 0, 0, 0, 9, 1, 2))
		f.Add(append(journalFile(gen, intent, done), make([]byte, 64)...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _, end := readJournal(data)
		if end > len(data) {
			t.Fatalf("end %d past %d bytes", end, len(data))
		}
		// What was read re-encodes to exactly the prefix it came from.
		for _, e := range recs {
			if !validRecord(e) {
				t.Fatalf("invalid record accepted: %q", e)
			}
		}
		c := parseRecords(recs) // must not panic
		for _, e := range c.entries {
			if audit.EntryIndex(e) < 0 {
				t.Fatalf("entry without an index: %q", e)
			}
		}
		hasHeader := len(data) >= fileHeader && string(data[:len(journalMagic)]) == journalMagic
		var re []byte
		if hasHeader {
			re = append(re, data[:fileHeader]...)
			for _, e := range recs {
				re = append(appendRecordHeader(re, data[len(journalMagic):fileHeader], e), e...)
			}
		} else {
			re = journalFile(0, recs...)
		}
		if !bytes.Equal(re, data[:end]) {
			t.Fatal("records do not re-encode to their bytes")
		}
	})
}
