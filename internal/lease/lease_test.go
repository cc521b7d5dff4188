package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

var ctx = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newManager(t testing.TB, st Store, c *clock) *Manager {
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(st, h, Options{Now: c.Now})
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}

func req(grants ...string) Request {
	return Request{Issuer: "github", Subject: "repo:acme/app", Job: "42", Claims: map[string]string{"run_id": "42"},
		Grants: grants, TTL: 10 * time.Minute, MaxTTL: time.Hour, Source: netip.MustParseAddr("127.0.0.1")}
}

func TestLifecycle(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			m := newManager(t, b.DB, c)
			tok, l, err := m.Issue(ctx, req("deploy"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := token.Parse(tok); err != nil {
				t.Fatalf("issued token malformed: %v", err)
			}
			got, err := m.Lookup(ctx, tok)
			if err != nil || got.ID != l.ID {
				t.Fatalf("lookup = %v %v", got, err)
			}
			// The store holds no token in the clear.
			var n int
			b.DB.SQL().QueryRow(b.DB.Rebind(`SELECT COUNT(*) FROM leases WHERE token_hash = ? OR id = ?`), []byte(tok), tok).Scan(&n)
			if n != 0 {
				t.Fatal("token stored in the clear")
			}
			// Renew: by ttl from now, capped at max.
			c.Add(5 * time.Minute)
			r, err := m.Renew(ctx, tok, 10*time.Minute)
			if err != nil || !r.ExpiresAt().Equal(c.Now().Add(10*time.Minute).UTC()) {
				t.Fatalf("renew = %v %v", r.ExpiresAt(), err)
			}
			for i := 0; !r.ExpiresAt().Equal(l.MaxExpiresAt); i++ {
				if i > 10 {
					t.Fatal("renewals never reached max")
				}
				c.Add(9 * time.Minute)
				if r, err = m.Renew(ctx, tok, 10*time.Minute); err != nil {
					t.Fatalf("renew %d: %v", i, err)
				}
				if r.ExpiresAt().After(l.MaxExpiresAt) {
					t.Fatalf("renewed past max: %v > %v", r.ExpiresAt(), l.MaxExpiresAt)
				}
			}
			if !r.ExpiresAt().Equal(l.MaxExpiresAt) {
				t.Fatalf("renewals stopped at %v, want max %v", r.ExpiresAt(), l.MaxExpiresAt)
			}
			c.t = l.MaxExpiresAt
			if _, err := m.Lookup(ctx, tok); !errors.Is(err, ErrExpired) {
				t.Fatalf("after max = %v", err)
			}
			if _, err := m.Renew(ctx, tok, time.Minute); !errors.Is(err, ErrExpired) {
				t.Fatalf("renew expired = %v", err)
			}
		})
	}
}

func TestRevokeAndUnknown(t *testing.T) {
	c := &clock{t: time.Now()}
	b := storetest.SQLite(t)
	m := newManager(t, b.DB, c)
	tok, _, _ := m.Issue(ctx, req("deploy"))
	forged, _ := token.New(token.Job)
	tests := []struct {
		name string
		tok  string
		want error
	}{
		{"not a token", "hello", ErrUnknown},
		{"admin token", "mfya_" + forged[4:], ErrUnknown},
		{"well-formed but never issued", forged, ErrUnknown},
	}
	for _, tt := range tests {
		if _, err := m.Lookup(ctx, tt.tok); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	l, revoked, err := m.RevokeToken(ctx, tok, "test")
	if err != nil || !revoked || l == nil {
		t.Fatalf("revoke = %v %v", revoked, err)
	}
	if _, err := m.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revoke: %v", err)
	}
	if _, again, _ := m.RevokeToken(ctx, tok, "test"); again {
		t.Fatal("revoked twice")
	}
	// After a sweep the lease leaves the view but is still known as revoked.
	m.Sweep(ctx)
	if l, again, err := m.RevokeToken(ctx, tok, "x"); err != nil || again || l == nil {
		t.Fatalf("swept revoke = %v %v %v", l, again, err)
	}
	if l, _, _ := m.RevokeToken(ctx, forged, "x"); l != nil {
		t.Fatal("forged token found")
	}
}

// Ended tells a gateway whether a lease it looked up has since ended: by
// revocation or expiry (renewals move it), not by its use limit, which
// counts requests, not what one request keeps open.
func TestEnded(t *testing.T) {
	for _, tc := range []struct {
		name string
		then func(t *testing.T, m *Manager, c *clock, tok string, l *Live)
		want error
	}{
		{"live", func(*testing.T, *Manager, *clock, string, *Live) {}, nil},
		{"used up", func(t *testing.T, m *Manager, _ *clock, _ string, l *Live) {
			if err := m.Use(ctx, l); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"renewed past its first expiry", func(t *testing.T, m *Manager, c *clock, tok string, _ *Live) {
			c.Add(9 * time.Minute)
			if _, err := m.Renew(ctx, tok, 10*time.Minute); err != nil {
				t.Fatal(err)
			}
			c.Add(5 * time.Minute)
		}, nil},
		{"expired", func(_ *testing.T, _ *Manager, c *clock, _ string, _ *Live) { c.Add(10 * time.Minute) }, ErrExpired},
		{"revoked", func(t *testing.T, m *Manager, _ *clock, tok string, _ *Live) {
			if _, ok, err := m.RevokeToken(ctx, tok, "test"); err != nil || !ok {
				t.Fatalf("revoke: %v %v", ok, err)
			}
		}, ErrRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			m := newManager(t, storetest.SQLite(t).DB, c)
			r := req("deploy")
			r.MaxUses = 1
			tok, l, err := m.Issue(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			tc.then(t, m, c, tok, l)
			if err := m.Ended(l); !errors.Is(err, tc.want) {
				t.Fatalf("Ended = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestUseLimit(t *testing.T) {
	c := &clock{t: time.Now()}
	b := storetest.SQLite(t)
	m := newManager(t, b.DB, c)
	r := req("deploy")
	r.MaxUses = 2
	tok, l, _ := m.Issue(ctx, r)
	for i := 0; i < 2; i++ {
		if err := m.Use(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Use(ctx, l); !errors.Is(err, ErrUsedUp) {
		t.Fatalf("third use: %v", err)
	}
	if _, err := m.Lookup(ctx, tok); !errors.Is(err, ErrUsedUp) {
		t.Fatalf("lookup used up: %v", err)
	}
	m.flushUses(ctx)
	s, _ := b.DB.LeaseByID(ctx, l.ID)
	if s.Uses != 2 {
		t.Fatalf("stored uses = %d", s.Uses)
	}
}

// A use limit holds across nodes and restarts: each use of a limited lease
// is counted in the store before it is granted.
func TestUseLimitAcrossNodes(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			a := newManager(t, b.DB, c)
			r := req("deploy")
			r.MaxUses = 3
			tok, _, err := a.Issue(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			other := newManager(t, b.Another(t), c) // loads the lease
			la, err := a.Lookup(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			lo, err := other.Lookup(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			// Concurrent uses on both nodes: exactly three are granted.
			var granted, refused atomic.Int64
			var wg sync.WaitGroup
			for i := range 12 {
				m, l := a, la
				if i%2 == 1 {
					m, l = other, lo
				}
				wg.Go(func() {
					switch err := m.Use(ctx, l); {
					case err == nil:
						granted.Add(1)
					case errors.Is(err, ErrUsedUp):
						refused.Add(1)
					default:
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if granted.Load() != 3 || refused.Load() != 9 {
				t.Fatalf("granted %d, refused %d; want 3 and 9", granted.Load(), refused.Load())
			}
			// A restarted node knows the lease is used up.
			fresh := newManager(t, b.DB, c)
			if _, err := fresh.Lookup(ctx, tok); !errors.Is(err, ErrUsedUp) {
				t.Fatalf("after restart: %v", err)
			}
		})
	}
}

// Two nodes on one database: a token issued on one works on the other at
// once (read from the store on its first use there, from memory after), an
// unknown token costs one read however often it is sent, and a revocation
// on one node is refused by the other after one poll.
func TestClusterFollow(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			a := newManager(t, b.DB, c)
			reads := &hashReads{DB: b.Another(t)}
			other := newManager(t, reads, c)
			tok, _, _ := a.Issue(ctx, req("deploy"))
			bogus, err := token.New(token.Job)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := other.Lookup(ctx, tok); err != nil {
					t.Fatalf("issued on the other node: %v", err)
				}
				if _, err := other.Lookup(ctx, bogus); !errors.Is(err, ErrUnknown) {
					t.Fatalf("unknown token: %v", err)
				}
			}
			if n := reads.reads.Load(); n != 2 {
				t.Fatalf("%d store reads for 3 lookups of each token, want 1 each", n)
			}
			if _, err := a.Revoke(ctx, store.LeaseFilter{Job: "42"}, "by job"); err != nil {
				t.Fatal(err)
			}
			if err := other.Poll(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := other.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
				t.Fatalf("other node after revoke: %v", err)
			}
			// A restart loads live leases only.
			tok2, _, _ := a.Issue(ctx, req("read"))
			fresh := newManager(t, b.DB, c)
			if _, err := fresh.Lookup(ctx, tok2); err != nil {
				t.Fatalf("restart lost live lease: %v", err)
			}
			if _, err := fresh.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) { // not loaded; read as it is stored
				t.Fatalf("restart revived revoked lease: %v", err)
			}
		})
	}
}

func TestMassRevoke(t *testing.T) {
	c := &clock{t: time.Now()}
	b := storetest.SQLite(t)
	m := newManager(t, b.DB, c)
	var toks []string
	for i := 0; i < 300; i++ {
		g := "deploy"
		if i%3 == 0 {
			g = "read"
		}
		tok, _, err := m.Issue(ctx, req(g))
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	ids, err := m.Revoke(ctx, store.LeaseFilter{Grant: "deploy"}, "mass")
	if err != nil || len(ids) != 200 {
		t.Fatalf("revoked %d %v", len(ids), err)
	}
	for i, tok := range toks {
		_, err := m.Lookup(ctx, tok)
		if i%3 == 0 && err != nil || i%3 != 0 && !errors.Is(err, ErrRevoked) {
			t.Fatalf("token %d: %v", i, err)
		}
	}
}

// BenchmarkMassRevoke revokes 100,000 live leases by one grant filter.
// Target: ≤ 2 s per op. Run: go test ./internal/lease -bench MassRevoke -benchtime 1x
func BenchmarkMassRevoke(b *testing.B) {
	for _, be := range storetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			c := &clock{t: time.Now()}
			m := newManager(b, be.DB, c)
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				grant := fmt.Sprintf("g%d", i)
				var wg sync.WaitGroup
				toks := make([]string, 100000)
				for w := 0; w < 64; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						for j := w; j < len(toks); j += 64 {
							tok, _, err := m.Issue(ctx, req(grant))
							if err != nil {
								b.Error(err)
								return
							}
							toks[j] = tok
						}
					}(w)
				}
				wg.Wait()
				b.StartTimer()
				ids, err := m.Revoke(ctx, store.LeaseFilter{Grant: grant}, "mass")
				if err != nil || len(ids) != len(toks) {
					b.Fatalf("revoked %d %v", len(ids), err)
				}
				b.StopTimer()
				for _, tok := range toks {
					if _, err := m.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
						b.Fatalf("not refused: %v", err)
					}
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkLookup(b *testing.B) {
	c := &clock{t: time.Now()}
	be := storetest.SQLite(b)
	m := newManager(b, be.DB, c)
	tok, _, _ := m.Issue(ctx, req("deploy"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Lookup(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// hookStore runs afterInsert once a lease is committed, before Issue
// returns: where another node's revocation and this node's poll can land.
type hookStore struct {
	Store
	afterInsert func()
}

func (h *hookStore) InsertLease(ctx context.Context, l store.Lease) error {
	if err := h.Store.InsertLease(ctx, l); err != nil {
		return err
	}
	if h.afterInsert != nil {
		h.afterInsert()
	}
	return nil
}

// A lease revoked by filter right after it is committed, and that
// revocation polled, before Issue has put it in the view, stays revoked.
func TestRevokeDuringIssue(t *testing.T) {
	c := &clock{t: time.Now()}
	b := storetest.SQLite(t)
	hs := &hookStore{Store: b.DB}
	a := newManager(t, hs, c)
	other := newManager(t, b.Another(t), c)
	hs.afterInsert = func() {
		if ids, err := other.Revoke(ctx, store.LeaseFilter{Job: "42"}, "by job"); err != nil || len(ids) != 1 {
			t.Errorf("revoke: %v %v", ids, err)
		}
		if err := a.Poll(ctx); err != nil {
			t.Error(err)
		}
	}
	tok, _, err := a.Issue(ctx, req("deploy"))
	if err != nil {
		t.Fatal(err)
	}
	hs.afterInsert = nil
	if err := a.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Lookup(ctx, tok); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked while issuing, then: %v", err)
	}
}

// A failed insert leaves nothing in the view.
func TestIssueFailureLeavesNoLease(t *testing.T) {
	c := &clock{t: time.Now()}
	b := storetest.SQLite(t)
	m := newManager(t, &failInsert{Store: b.DB}, c)
	if _, _, err := m.Issue(ctx, req("deploy")); err == nil {
		t.Fatal("issue succeeded")
	}
	if n := m.LiveCount(); n != 0 {
		t.Fatalf("view holds %d leases", n)
	}
}

type failInsert struct{ Store }

func (failInsert) InsertLease(context.Context, store.Lease) error {
	return errors.New("test: insert fails")
}

// countingStore is the real store, counting the lookups by hash.
type countingStore struct {
	*store.DB
	one, many atomic.Int64
}

func (c *countingStore) LeaseByHash(ctx context.Context, h [32]byte) (store.Lease, error) {
	c.one.Add(1)
	return c.DB.LeaseByHash(ctx, h)
}

func (c *countingStore) LeasesByHashes(ctx context.Context, hs [][32]byte) (map[[32]byte]store.Lease, error) {
	c.many.Add(1)
	return c.DB.LeasesByHashes(ctx, hs)
}

// RevokeTokens revokes what is live, knows what was revoked or swept, and
// looks unknown tokens up in batches: a report of thousands of made-up
// tokens costs a few queries, not one each.
func TestRevokeTokensBatched(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			st := &countingStore{DB: b.DB}
			m := newManager(t, st, c)
			live, _, _ := m.Issue(ctx, req("deploy"))
			already, _, _ := m.Issue(ctx, req("deploy"))
			swept, _, _ := m.Issue(ctx, req("deploy"))
			if _, _, err := m.RevokeToken(ctx, already, "t"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := m.RevokeToken(ctx, swept, "t"); err != nil {
				t.Fatal(err)
			}
			m.Sweep(ctx) // swept (and already) leave the view
			admin, _ := token.New(token.Admin)
			toks := []string{"not a token", admin, live, already, swept}
			const unknown = 2*store.HashBatch + 10
			for range unknown {
				f, _ := token.New(token.Job)
				toks = append(toks, f)
			}
			st.one.Store(0)
			res, _, _, err := m.RevokeTokens(ctx, toks, store.Leaked{}, "leaked", nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(toks) {
				t.Fatalf("%d results for %d tokens", len(res), len(toks))
			}
			type want struct{ known, revoked bool }
			for i, w := range []want{{false, false}, {false, false}, {true, true}, {true, false}, {true, false}} {
				if got := (want{res[i].Lease != nil, res[i].Revoked}); got != w {
					t.Errorf("token %d: %+v, want %+v", i, got, w)
				}
			}
			for i, r := range res[5:] {
				if r.Lease != nil || r.Revoked {
					t.Fatalf("made-up token %d found: %+v", i, r)
				}
			}
			if _, err := m.Lookup(ctx, live); !errors.Is(err, ErrRevoked) {
				t.Fatalf("live token after the report: %v", err)
			}
			// One call; the store splits it into queries of HashBatch.
			if one, many := st.one.Load(), st.many.Load(); one != 0 || many != 1 {
				t.Fatalf("%d single and %d batched lookups for %d unknown tokens, want 0 and 1", one, many, unknown)
			}
			// Nothing unknown: no query at all.
			st.many.Store(0)
			if res, _, _, err := m.RevokeTokens(ctx, []string{live, "x"}, store.Leaked{}, "leaked", nil); err != nil || res[0].Revoked || st.many.Load() != 0 {
				t.Fatalf("second report: %+v %v, %d queries", res, err, st.many.Load())
			}
		})
	}
}

// Active (the view) and Counts (the store) count the tokens that work now:
// not revoked, not expired, even while the view still holds the others
// until the next sweep.
func TestActive(t *testing.T) {
	c := &clock{t: time.Now()}
	m := newManager(t, storetest.SQLite(t).DB, c)
	short := req("deploy")
	short.TTL = time.Minute
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"empty", func() {}, 0},
		{"two issued", func() {
			m.Issue(ctx, req("deploy"))
			m.Issue(ctx, short)
		}, 2},
		{"one revoked", func() {
			tok, _, _ := m.Issue(ctx, req("deploy"))
			m.RevokeToken(ctx, tok, "test")
		}, 2},
		{"short one expired", func() { c.Add(2 * time.Minute) }, 1},
		{"all expired", func() { c.Add(time.Hour) }, 0},
	}
	for _, s := range steps {
		s.do()
		if n := m.Active(); n != s.want {
			t.Errorf("%s: Active() = %d, want %d (view %d)", s.name, n, s.want, m.LiveCount())
		}
		n, byGrant, err := m.Counts(ctx)
		if err != nil || n != s.want || byGrant["deploy"] != s.want {
			t.Errorf("%s: Counts() = %d, %v, %v; want %d", s.name, n, byGrant, err, s.want)
		}
	}
}

// A renewal whose note takes the token past its expiry (the authority
// extends the lease's minted credentials there, a round trip to the
// upstream of up to the mint timeout) must not bring the expired lease
// back: meanwhile the gateway refused the token, and the mint worker found
// the lease ended and revoked its credentials.
func TestRenewDoesNotReviveALeaseThatExpiredMeanwhile(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			m := newManager(t, b.DB, c)
			r := req("deploy")
			r.TTL = time.Minute
			tok, l, err := m.Issue(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			c.Add(time.Minute - time.Second) // a second left
			_, err = m.RenewWith(ctx, tok, 10*time.Minute, func(*Live, time.Time) (*store.Note, error) {
				c.Add(5 * time.Second) // the slow part of a renewal
				return nil, nil
			})
			if !errors.Is(err, ErrExpired) {
				t.Errorf("renewal that ended after the token expired: %v, want ErrExpired", err)
			}
			s, err := b.DB.LeaseByHash(ctx, l.hash)
			if err != nil {
				t.Fatal(err)
			}
			if s.ExpiresAt.After(c.Now()) {
				t.Fatalf("the lease expired at %s, and a renewal that finished at %s made it live again until %s",
					l.IssuedAt.Add(time.Minute).UTC(), c.Now().UTC(), s.ExpiresAt.UTC())
			}
			if _, err := m.Lookup(ctx, tok); !errors.Is(err, ErrExpired) {
				t.Fatalf("lookup after: %v", err)
			}
		})
	}
}

// Two nodes renew one token at once: while this node's renewal is being
// recorded (its note may call an upstream), the other's, computed later,
// commits and reaches this node through the feed. This node must not then
// cut its own view back to the earlier expiry it computed, refusing a
// token the store and the other node still hold live.
func TestRenewalsOnTwoNodesKeepTheLaterExpiry(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := &clock{t: time.Now()}
			one := newManager(t, b.DB, c)
			two := newManager(t, b.Another(t), c)
			tok, _, err := one.Issue(ctx, req("deploy"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := two.Lookup(ctx, tok); err != nil {
				t.Fatal(err)
			}
			c.Add(time.Minute)
			var theirs time.Time
			mine := c.Now().Add(10 * time.Minute)
			_, err = one.RenewWith(ctx, tok, 10*time.Minute, func(l *Live, exp time.Time) (*store.Note, error) {
				c.Add(time.Minute)
				r, err := two.Renew(ctx, tok, 10*time.Minute)
				if err != nil {
					return nil, err
				}
				theirs = r.ExpiresAt()
				return nil, one.Poll(ctx)
			})
			if err != nil {
				t.Fatal(err)
			}
			if !theirs.After(mine) {
				t.Fatalf("the other node's renewal (%v) is not the later one (%v)", theirs, mine)
			}
			c.Add(10*time.Minute - time.Second) // past this node's expiry, before the other's
			for name, m := range map[string]*Manager{"this node": one, "the other node": two} {
				l, err := m.Lookup(ctx, tok)
				if err != nil || !l.ExpiresAt().Equal(theirs) {
					t.Errorf("%s: %v, expires %v; want live until %v", name, err, l.ExpiresAt(), theirs)
				}
			}
		})
	}
}
