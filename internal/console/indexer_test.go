package console

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// TestIndexerLongValues: an entry whose subject, lease or upstream is
// long (a refused exchange records the sub of any ID token its issuer
// signs, up to the 16 KiB token limit; an operator's lease filter is
// recorded as given) is indexed, and so is the entry after it, on both
// backends: PostgreSQL refuses a B-tree row over 2,704 bytes, and a batch
// it refuses is retried for ever, so the index stopped at such an entry.
// The indexed value is cut where a filter is (maxFilter), so the entry's
// own link still finds it.
func TestIndexerLongValues(t *testing.T) {
	// Random text does not compress: PostgreSQL cannot squeeze it under
	// its limit.
	raw := make([]byte, 9000)
	rand.Read(raw)
	long := base64.RawURLEncoding.EncodeToString(raw)
	// A multi-byte character across the cut.
	longUTF8 := strings.Repeat("a", maxFilter-1) + "é" + long
	cases := []struct {
		name string
		ev   audit.Event
		q    func(v string) store.AuditQuery // the filter of the entry's own link
		val  string
	}{
		{"subject", audit.Event{Type: audit.TypeExchange, Subject: long, Status: 403}, func(v string) store.AuditQuery { return store.AuditQuery{Subject: v} }, long},
		{"lease", audit.Event{Type: audit.TypeRevoke, Lease: long, Status: 200}, func(v string) store.AuditQuery { return store.AuditQuery{Lease: v} }, long},
		{"upstream", audit.Event{Type: audit.TypeGateway, Upstream: long, Status: 404}, func(v string) store.AuditQuery { return store.AuditQuery{Upstream: v} }, long},
		{"subject cut at a character's edge", audit.Event{Type: audit.TypeExchange, Subject: longUTF8, Status: 403}, func(v string) store.AuditQuery { return store.AuditQuery{Subject: v} }, longUTF8},
	}
	for _, tc := range cases {
		for _, be := range storetest.Backends(t) {
			t.Run(be.Name+"/"+tc.name, func(t *testing.T) {
				db := be.DB
				next := audit.Event{Type: audit.TypeExchange, Subject: "repo:acme/app:ref:refs/heads/main", Status: 200}
				es := appendEntries(t, db, tc.ev, next)
				if err := (Indexer{Store: db}).Write(t.Context(), es, 0); err != nil {
					t.Fatalf("indexing: %v", err)
				}
				if n, err := db.AuditIndexSize(t.Context()); err != nil || n != 2 {
					t.Fatalf("index size %d, %v; want 2", n, err)
				}
				// As the console reads the filter of the entry's link.
				req := httptest.NewRequest("GET", "/ui/audit?"+url.Values{"v": {tc.val}}.Encode(), nil)
				page, err := db.FindAudit(t.Context(), tc.q(param(req, "v")))
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Indexes) != 1 || page.Indexes[0] != 0 || !bytes.Equal(page.Entries[0], es[0]) {
					t.Errorf("the filter of the entry's link found %v, want [0]", page.Indexes)
				}
			})
		}
	}
}

// appendEntries stores evs as the log's first entries (their hashes too).
func appendEntries(t *testing.T, db *store.DB, evs ...audit.Event) [][]byte {
	t.Helper()
	var hashes []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = hashes[x]
		}
		return out, nil
	})
	var es [][]byte
	var hs [][32]byte
	for i, ev := range evs {
		body, err := audit.EncodeEvent(nil, &ev)
		if err != nil {
			t.Fatal(err)
		}
		e := audit.AppendEntry(nil, int64(i), audit.FormatTime(time.Now()), body)
		sh, err := tlog.StoredHashes(int64(i), e, r)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, sh...)
		for _, h := range sh {
			hs = append(hs, h)
		}
		es = append(es, e)
	}
	if err := db.AppendAudit(t.Context(), 0, es, 0, hs, store.AuditDurable); err != nil {
		t.Fatal(err)
	}
	return es
}

// An entry whose subject holds a NUL (the sub of a sign-in refusal is
// whatever the provider sent) is indexed, and so is the entry after it:
// PostgreSQL refuses a NUL in text, and a batch it refuses is retried for
// ever, so the index stopped at such an entry.
func TestIndexerNUL(t *testing.T) {
	for _, be := range storetest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			es := appendEntries(t, be.DB,
				audit.Event{Type: audit.TypeExchange, Subject: "user\x00admin", Upstream: "a\x00b", Status: 403},
				audit.Event{Type: audit.TypeExchange, Subject: "repo:acme/app:ref:refs/heads/main", Status: 200})
			if err := (Indexer{Store: be.DB}).Write(t.Context(), es, 0); err != nil {
				t.Fatalf("indexing: %v", err)
			}
			if n, err := be.DB.AuditIndexSize(t.Context()); err != nil || n != 2 {
				t.Fatalf("index size %d, %v; want 2", n, err)
			}
		})
	}
}
