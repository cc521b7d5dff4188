package audit

import (
	"bytes"
	"testing"
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
		b = appendRecord(b, g, r)
	}
	return b
}

func FuzzReadJournal(f *testing.F) {
	entry := buildEntry(nil, 0, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`))
	intent := append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, 7}, "2026-01-01T00:00:00Z\n{\"type\":\"x\"}"...)
	done := append([]byte{recComplete, 0, 0, 0, 0, 0, 0, 0, 7}, buildEntry(nil, 1, "t", []byte(`{"type":"x"}`))...)
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
			if entryIndex(e) < 0 {
				t.Fatalf("entry without an index: %q", e)
			}
		}
		hasHeader := len(data) >= fileHeader && string(data[:len(journalMagic)]) == journalMagic
		var re []byte
		if hasHeader {
			re = append(re, data[:fileHeader]...)
			for _, e := range recs {
				re = appendRecord(re, data[len(journalMagic):fileHeader], e)
			}
		} else {
			re = journalFile(0, recs...)
		}
		if !bytes.Equal(re, data[:end]) {
			t.Fatal("records do not re-encode to their bytes")
		}
	})
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		name        string
		detail      map[string]any
		wantAborted bool
	}{
		{"finished", map[string]any{"decision": "allow", "rule": 0}, false},
		{"aborted", map[string]any{"decision": "allow", "rule": 0, "aborted": true}, true},
		{"no detail", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			whole := gatewayEvent(3)
			whole.Detail = tc.detail
			o := Outcome(whole, "gateway.response", 41)
			if o.Type != "gateway.response" || o.Path != whole.Path || o.Status != whole.Status || o.Detail["request_index"] != int64(41) {
				t.Fatalf("outcome %+v", o)
			}
			if _, ok := o.Detail["decision"]; ok {
				t.Fatal("the decision's detail repeated in the outcome")
			}
			if got := o.Detail["aborted"] == true; got != tc.wantAborted {
				t.Fatalf("aborted = %v, want %v", got, tc.wantAborted)
			}
			if whole.Detail != nil && len(whole.Detail) != len(tc.detail) {
				t.Fatal("Outcome changed the whole event's detail")
			}
		})
	}
}
