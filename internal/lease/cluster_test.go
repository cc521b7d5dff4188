package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A transaction that took an event's sequence number before a later one
// committed, and commits long after (a mass revocation), is still applied
// by other nodes: the poller waits for the transaction to end, with no
// timeout, and meanwhile applies the later events.
func TestFeedNeverSkipsALongTransaction(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	b := storetest.Postgres(t)
	c := &clock{t: time.Now()}
	a := newManager(t, b.DB, c)
	other := newManager(t, b.Another(t), c)
	slow, _, err := a.Issue(ctx, req("deploy"))
	if err != nil {
		t.Fatal(err)
	}
	quick, ql, err := a.Issue(ctx, req("read"))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	sl, err := other.Lookup(ctx, slow)
	if err != nil {
		t.Fatal(err)
	}
	// The slow revocation, as RevokeLeases writes it, left open.
	tx, err := b.Another(t).SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE leases SET revoked_at = $1, revoke_reason = 'slow' WHERE id = $2`, time.Now().UnixNano(), sl.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO lease_events (lease_id, kind, origin) VALUES ($1, 'revoke', 'test')`, sl.ID); err != nil {
		t.Fatal(err)
	}
	// A later revocation commits first and is applied at once.
	if _, err := a.Revoke(ctx, store.LeaseFilter{ID: ql.ID}, "quick"); err != nil {
		t.Fatal(err)
	}
	if err := other.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lookup(ctx, quick); !errors.Is(err, ErrRevoked) {
		t.Fatalf("later revocation not applied while an earlier one runs: %v", err)
	}
	// Longer than the old poller waited for a skipped number.
	for range 3 {
		time.Sleep(2500 * time.Millisecond)
		if err := other.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Lookup(ctx, slow); err != nil {
		t.Fatalf("uncommitted revocation applied: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := other.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lookup(ctx, slow); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revocation committed late was skipped: %v", err)
	}
}

// The poll never skips the events of a transaction that is not in its
// snapshot's in-progress list because its xid is at or above the
// snapshot's xmax: pg_current_snapshot() lists only running xids below
// xmax (one past the highest completed xid). S, as any node's group commit
// does, takes its xid with a first write (a use count), and E (a
// revocation on another node) a later xid and then sequence numbers below
// the one S's later request (a renewal) takes; S commits, a node reads S's
// event and moves its cursor past E's, and E commits. The read after that
// must bring E's events, paging through them if there are more than a
// page, in the same poll.
func TestFeedReadsTransactionsFromSnapshotXmaxOn(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	for _, tc := range []struct {
		name    string
		revoked int
	}{
		{"one revocation", 1},
		{"more revocations than a page", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := storetest.Postgres(t)
			c := &clock{t: time.Now()}
			a := newManager(t, b.DB, c)
			var toks []string
			for range tc.revoked {
				tok, _, err := a.Issue(ctx, req("deploy"))
				if err != nil {
					t.Fatal(err)
				}
				toks = append(toks, tok)
			}
			_, other, err := a.Issue(ctx, req("read"))
			if err != nil {
				t.Fatal(err)
			}
			follower := New(b.Another(t), a.hasher, Options{Now: c.Now, PageSize: 2}) // node B: follows by polling
			if err := follower.Load(ctx); err != nil {
				t.Fatal(err)
			}
			nodeC := b.Another(t) // node C: revokes
			if err := follower.Poll(ctx); err != nil {
				t.Fatal(err)
			}

			// S: node A's group commit. Its first write takes the lower xid.
			s, err := b.Another(t).SQL().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Rollback()
			if _, err := s.ExecContext(ctx, `UPDATE leases SET uses = uses WHERE id = $1`, other.ID); err != nil {
				t.Fatal(err)
			}

			// E: node C revokes through the store; its commit is held at its
			// audit note (after its UPDATE and its events).
			inE, releaseE := make(chan struct{}), make(chan struct{})
			doneE := make(chan error, 1)
			go func() {
				ids, err := nodeC.RevokeLeasesNoted(ctx, store.LeaseFilter{Grant: "deploy"}, c.Now(), "leak", &store.Note{Make: func(store.Changes) ([][]byte, error) {
					close(inE)
					<-releaseE
					return nil, nil
				}})
				if err == nil && len(ids) != tc.revoked {
					err = fmt.Errorf("revoked %d leases, want %d", len(ids), tc.revoked)
				}
				doneE <- err
			}()
			select {
			case <-inE:
			case err := <-doneE:
				t.Fatalf("revocation ended before its note: %v", err)
			}

			// S's later request takes a higher number; S commits.
			if _, err := s.ExecContext(ctx, `UPDATE leases SET expires_at = expires_at + 1 WHERE id = $1`, other.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ExecContext(ctx, `INSERT INTO lease_events (lease_id, kind, origin) VALUES ($1, 'renew', 'nodea')`, other.ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
			// B polls while E still runs: it reads S's event and moves past E's.
			if err := follower.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			close(releaseE)
			if err := <-doneE; err != nil {
				t.Fatal(err)
			}
			if err := follower.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			for i, tok := range toks {
				if _, err := follower.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
					t.Errorf("revocation %d, committed after the poll read past it, was skipped: Lookup err = %v", i, err)
				}
			}
		})
	}
}

// A node that loads while a transaction with events runs applies them
// once it commits.
func TestLoadDuringATransaction(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	b := storetest.Postgres(t)
	c := &clock{t: time.Now()}
	a := newManager(t, b.DB, c)
	tok, l, err := a.Issue(ctx, req("deploy"))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := b.Another(t).SQL().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE leases SET revoked_at = $1 WHERE id = $2`, time.Now().UnixNano(), l.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO lease_events (lease_id, kind, origin) VALUES ($1, 'revoke', 'test')`, l.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Issue(ctx, req("read")); err != nil { // a later number, committed
		t.Fatal(err)
	}
	other := newManager(t, b.Another(t), c)
	if _, err := other.Lookup(ctx, tok); err != nil {
		t.Fatalf("loaded: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := other.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revocation committed during load was skipped: %v", err)
	}
}

// Notifications carry revocations to a node that does not poll (its poll
// interval is an hour), which reads new leases on first use.
func TestNotificationsReachOtherNodes(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	b := storetest.Postgres(t)
	h := newManager(t, b.DB, &clock{t: time.Now()}).hasher
	a := New(b.DB, h, Options{PollInterval: time.Hour})
	other := New(b.Another(t), h, Options{PollInterval: time.Hour})
	for _, m := range []*Manager{a, other} {
		if err := m.Load(ctx); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { m.Run(rctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never reached the other node", what)
			}
		}
	}
	// A new lease is read on first use; a revocation is pushed.
	tok, l, err := a.Issue(ctx, req("deploy"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Lookup(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revoke(ctx, store.LeaseFilter{ID: l.ID}, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor("a revocation", func() bool { _, err := other.Lookup(ctx, tok); return errors.Is(err, ErrRevoked) })
	// A revocation of more leases than one notification names.
	var toks []string
	for range maxNotifyIDs + 10 {
		tok, _, err := a.Issue(ctx, req("mass"))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	for _, tok := range toks { // into the other node's view: the revocation must reach it there
		if _, err := other.Lookup(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := a.Revoke(ctx, store.LeaseFilter{Grant: "mass"}, "test"); err != nil || len(ids) != len(toks) {
		t.Fatalf("revoked %d: %v", len(ids), err)
	}
	for _, tok := range toks {
		waitFor("a mass revocation", func() bool { _, err := other.Lookup(ctx, tok); return errors.Is(err, ErrRevoked) })
	}
}

func TestParseNotification(t *testing.T) {
	id := "lse_0123456789abcdef01234567"
	for _, tc := range []struct {
		in      string
		ok      bool
		revoked int
	}{
		{"c 0123456789ab", true, 0},
		{"r 0123456789ab " + id, true, 1},
		{"r 0123456789ab " + id + " " + id, true, 2},
		{"r 0123456789ab", false, 0},
		{"c 0123456789ab extra", false, 0},
		{"c 0123456789AB", false, 0},
		{"c short", false, 0},
		{"r 0123456789ab lse_nothex", false, 0},
		{"r 0123456789ab " + id + "0", false, 0},
		{"x 0123456789ab", false, 0},
		{"", false, 0},
		{"r 0123456789ab " + strings.Repeat(id+" ", 300), false, 0},
	} {
		n, ok := ParseNotification(tc.in)
		if ok != tc.ok || len(n.Revoked) != tc.revoked {
			t.Errorf("%.40q: ok %v revoked %d", tc.in, ok, len(n.Revoked))
		}
	}
}

func FuzzParseNotification(f *testing.F) {
	f.Add("c 0123456789ab")
	f.Add("r 0123456789ab lse_0123456789abcdef01234567")
	f.Fuzz(func(t *testing.T, p string) {
		n, ok := ParseNotification(p)
		if !ok {
			return
		}
		for _, id := range n.Revoked {
			if len(id) != 28 || !strings.HasPrefix(id, "lse_") || !strings.Contains(p, id) {
				t.Fatalf("bad id %q from %q", id, p)
			}
		}
	})
}

// BenchmarkFollowMassRevocation times another node's poll (the safety net,
// no notification) applying a revocation of 100,000 leases: how long a
// node that missed the notifications takes to catch up.
// Run: MAYFLY_TEST_POSTGRES=… go test ./internal/lease -run XXX -bench FollowMass -benchtime 1x
func BenchmarkFollowMassRevocation(b *testing.B) {
	storetest.PostgresDSN(b)
	be := storetest.Postgres(b)
	c := &clock{t: time.Now()}
	const n = 100000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		grant := fmt.Sprintf("%04d", i)
		now := time.Now()
		if _, err := be.DB.SQL().Exec(`INSERT INTO leases (id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoke_reason)
			SELECT 'lse_' || lpad(to_hex(i), 20, '0') || $4, sha256((i::text || $4)::bytea), 'dev', 's', 'j', '{}', $4, $1, $2, $2, '', 0, '', 0, 0, ''
			FROM generate_series(1, $3) AS i`, now.UnixNano(), now.Add(time.Hour).UnixNano(), n, grant); err != nil {
			b.Fatal(err)
		}
		a := newManager(b, be.DB, c)
		other := newManager(b, be.Another(b), c)
		if other.LiveCount() < n {
			b.Fatalf("view holds %d", other.LiveCount())
		}
		start := time.Now()
		if ids, err := a.Revoke(ctx, store.LeaseFilter{Grant: grant}, "mass"); err != nil || len(ids) != n {
			b.Fatalf("revoked %d: %v", len(ids), err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-revoke")
		b.StartTimer()
		if err := other.Poll(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		other.mu.RLock()
		live := 0
		for _, l := range other.byID {
			if !l.Revoked() {
				live++
			}
		}
		other.mu.RUnlock()
		if live != 0 {
			b.Fatalf("%d leases still live on the other node", live)
		}
		b.StartTimer()
	}
}

// feedCounter counts reads of the lease feed.
type feedCounter struct {
	*store.DB
	reads atomic.Int64
}

func (c *feedCounter) LeaseFeedRead(ctx context.Context, r store.LeaseFeedRequest) (store.LeaseFeed, error) {
	c.reads.Add(1)
	return c.DB.LeaseFeedRead(ctx, r)
}

// A poll reads the feed once a page: the events of a transaction that was
// in progress at the last read and has ended since come in the same read
// as the new ones, not in a read of their own, and a transaction with more
// events than a page is paged through.
func TestPollReadsOncePerPage(t *testing.T) {
	storetest.PostgresDSN(t) // skips without PostgreSQL
	for _, tc := range []struct {
		name   string
		slow   int // leases a transaction left open at the last read revokes
		issued int // leases issued and committed meanwhile
		reads  int64
	}{
		{"new leases only", 0, 1, 1},
		{"a transaction that was in progress ended", 1, 1, 1},
		{"it ended with nothing new", 1, 0, 1},
		{"it ended with more events than a page", 3, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := storetest.Postgres(t)
			c := &clock{t: time.Now()}
			a := newManager(t, b.DB, c)
			var toks, ids []string
			for range max(tc.slow, 1) {
				tok, l, err := a.Issue(ctx, req("deploy"))
				if err != nil {
					t.Fatal(err)
				}
				toks, ids = append(toks, tok), append(ids, l.ID)
			}
			cs := &feedCounter{DB: b.Another(t)}
			other := New(cs, a.hasher, Options{Now: c.Now, PageSize: 2})
			if err := other.Load(ctx); err != nil {
				t.Fatal(err)
			}
			tx, err := b.Another(t).SQL().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			for _, id := range ids[:tc.slow] {
				if _, err := tx.ExecContext(ctx, `UPDATE leases SET revoked_at = $1, revoke_reason = 'slow' WHERE id = $2`, time.Now().UnixNano(), id); err != nil {
					t.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO lease_events (lease_id, kind, origin) VALUES ($1, 'revoke', 'test')`, id); err != nil {
					t.Fatal(err)
				}
			}
			// A later event committed: the poll reads past the open
			// transaction's, which it sees in progress.
			if _, _, err := a.Issue(ctx, req("read")); err != nil {
				t.Fatal(err)
			}
			if err := other.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			var fresh []string
			for range tc.issued {
				tok, _, err := a.Issue(ctx, req("read"))
				if err != nil {
					t.Fatal(err)
				}
				fresh = append(fresh, tok)
			}
			n := cs.reads.Load()
			if err := other.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			if got := cs.reads.Load() - n; got != tc.reads {
				t.Errorf("the poll read the feed %d times, want %d", got, tc.reads)
			}
			for _, tok := range toks[:tc.slow] {
				if _, err := other.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
					t.Errorf("a revocation of the transaction that ended was not applied: %v", err)
				}
			}
			for _, tok := range fresh {
				if _, err := other.Lookup(ctx, tok); err != nil {
					t.Errorf("a new lease was not applied: %v", err)
				}
			}
		})
	}
}

// hashReads counts the store reads of leases by token hash, and can hold
// the first one after it has read (held non-nil) until released.
type hashReads struct {
	*store.DB
	reads         atomic.Int64
	held, release chan struct{}
	once          sync.Once
}

func (h *hashReads) LeaseByHash(ctx context.Context, hash [32]byte) (store.Lease, error) {
	h.reads.Add(1)
	l, err := h.DB.LeaseByHash(ctx, hash)
	if h.held != nil {
		h.once.Do(func() { close(h.held); <-h.release })
	}
	return l, err
}

// A revocation applied on a node while it reads that lease from the store
// (the lease was not in its view, so the revocation changed nothing there)
// is not lost when the read is put in: the read is made again.
func TestLookupReadOverlappingARevocation(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			a := newManager(t, b.DB, c)
			reads := &hashReads{DB: b.Another(t), held: make(chan struct{}), release: make(chan struct{})}
			other := newManager(t, reads, c)
			tok, l, err := a.Issue(ctx, req("deploy")) // after other loaded: not in its view
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() { _, err := other.Lookup(ctx, tok); got <- err }()
			<-reads.held // read live, not yet in the view
			if _, err := a.Revoke(ctx, store.LeaseFilter{ID: l.ID}, "test"); err != nil {
				t.Fatal(err)
			}
			other.markRevoked([]string{l.ID}) // as a notification applies it
			close(reads.release)
			if err := <-got; !errors.Is(err, ErrRevoked) {
				t.Fatalf("lookup = %v, want %v", err, ErrRevoked)
			}
			if n := reads.reads.Load(); n != 2 {
				t.Fatalf("%d reads, want 2 (the overlapped one again)", n)
			}
		})
	}
}
