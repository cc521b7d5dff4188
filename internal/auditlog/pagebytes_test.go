package auditlog

import (
	"context"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// A page of Entries holds at most MaxPageBytes of entries, however many
// were asked for: MaxPageSize entries near audit.MaxEntrySize were
// ~640 MiB held in memory for one GET /v1/audit/entries, which any
// auditor could ask for again and again. A page always holds its first
// entry, and reading on from start+len(page) gets every entry once.
func TestEntriesPageBoundedByBytes(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{})
			big := strings.Repeat("p", audit.MaxEntrySize-1024)
			n := MaxPageBytes/len(big) + 20
			for i := 0; i < n; i++ {
				ev := gatewayEvent(i)
				ev.Path = "/" + big
				if _, err := l.appendDurable(ctx, ev); err != nil {
					t.Fatal(err)
				}
			}
			first, err := l.Entries(ctx, 0, MaxPageSize)
			if err != nil {
				t.Fatal(err)
			}
			if size := pageSize(first); len(first) == 0 || len(first) >= n || size > MaxPageBytes {
				t.Fatalf("a page of %d of %d large entries, %d bytes: want fewer, at most %d bytes", len(first), n, size, MaxPageBytes)
			}
			var got int
			for pos := int64(0); ; {
				es, err := l.Entries(ctx, pos, MaxPageSize)
				if err != nil {
					t.Fatal(err)
				}
				if len(es) == 0 {
					break
				}
				if pageSize(es) > MaxPageBytes {
					t.Fatalf("page at %d: %d bytes", pos, pageSize(es))
				}
				for _, e := range es {
					if audit.EntryIndex(e) != pos {
						t.Fatalf("entry %d where %d was due", audit.EntryIndex(e), pos)
					}
					pos++
					got++
				}
			}
			if got != n {
				t.Fatalf("read %d entries page by page, want %d", got, n)
			}
			if es, err := l.Entries(ctx, int64(n-1), MaxPageSize); err != nil || len(es) != 1 {
				t.Fatalf("the last entry alone: %d entries, %v", len(es), err)
			}
		})
	}
}

func pageSize(es [][]byte) int {
	n := 0
	for _, e := range es {
		n += len(e)
	}
	return n
}
