package authority

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// foundThen is an AdminStore that runs meanwhile once, just after it has
// found a token by its hash: what an admin does between that read and the
// revocation it leads to.
type foundThen struct {
	*store.DB
	once      sync.Once
	meanwhile func()
}

func (s *foundThen) AdminTokenByHash(ctx context.Context, h [32]byte) (store.AdminToken, error) {
	t, err := s.DB.AdminTokenByHash(ctx, h)
	s.once.Do(s.meanwhile)
	return t, err
}

func (s *foundThen) AdminTokensByHashes(ctx context.Context, hs [][32]byte) (map[[32]byte]store.AdminToken, error) {
	m, err := s.DB.AdminTokensByHashes(ctx, hs)
	s.once.Do(s.meanwhile)
	return m, err
}

// A leaked admin token revoked by whoever holds it (RFC 7009) or by a leak
// report is that token, not its name: when an admin revoked it and made a
// new token of the same name meanwhile (replacing a leaked token), the new
// one lives on.
func TestRevokingAnAdminTokenSparesItsNamesNewToken(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		revoke func(a *Authority, old string) error
	}{
		{"revoked by its holder", func(a *Authority, old string) error {
			return a.RevokeToken(ctx, old, netip.Addr{}, "holder")
		}},
		{"leak report", func(a *Authority, old string) error {
			_, err := a.Leak(ctx, []string{old}, LeakOrigin{Source: "github"}, netip.Addr{})
			return err
		}},
	}
	for _, tt := range tests {
		for _, b := range storetest.Backends(t) {
			t.Run(tt.name+"/"+b.Name, func(t *testing.T) {
				h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
				if err != nil {
					t.Fatal(err)
				}
				rec := newRecorder(t, b.DB)
				direct := NewAdmins(b.DB, h, rec, nil)
				old, _, err := direct.Create(ctx, "ci", RoleOperator, 0, "root", netip.Addr{})
				if err != nil {
					t.Fatal(err)
				}
				var replacement string
				st := &foundThen{DB: b.DB, meanwhile: func() {
					if err := direct.Revoke(ctx, "ci", "root", netip.Addr{}); err != nil {
						t.Errorf("revoke: %v", err)
					}
					if replacement, _, err = direct.Create(ctx, "ci", RoleOperator, 0, "root", netip.Addr{}); err != nil {
						t.Errorf("create: %v", err)
					}
				}}
				admins := NewAdmins(st, h, rec, nil)
				a := New(Config{Leases: lease.New(b.DB, h, lease.Options{}), Verifier: nopVerifier{}, Policies: b.DB, Audit: rec, AdminTokens: admins})
				if err := tt.revoke(a, old); err != nil {
					t.Fatal(err)
				}
				if replacement == "" {
					t.Fatal("no replacement made")
				}
				if _, err := direct.Authenticate(ctx, replacement); err != nil {
					t.Fatalf("the new token of the name was revoked with the old one: %v", err)
				}
				if _, err := direct.Authenticate(ctx, old); err == nil {
					t.Fatal("the old token works")
				}
			})
		}
	}
}

// Of admin tokens made at once under one name, new or revoked before, one
// is made and the others are refused as taken (409): none is made only to
// be overwritten by another, unseen, with its creation recorded.
func TestConcurrentAdminTokensOfOneName(t *testing.T) {
	ctx := context.Background()
	for _, reused := range []bool{false, true} {
		for _, b := range storetest.Backends(t) {
			t.Run(fmt.Sprintf("reused %v/%s", reused, b.Name), func(t *testing.T) {
				h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
				if err != nil {
					t.Fatal(err)
				}
				admins := NewAdmins(b.DB, h, newRecorder(t, b.DB), nil)
				// Half of them on another node: one node's writes are
				// committed one batch at a time, two nodes' are not.
				other := NewAdmins(b.Another(t), h, newRecorder(t, b.DB), nil)
				for round := range 5 {
					name := fmt.Sprintf("ci-%d", round)
					if reused {
						if _, _, err := admins.Create(ctx, name, RoleOperator, 0, "root", netip.Addr{}); err != nil {
							t.Fatal(err)
						}
						if err := admins.Revoke(ctx, name, "root", netip.Addr{}); err != nil {
							t.Fatal(err)
						}
					}
					const n = 8
					toks := make([]string, n)
					errs := make([]error, n)
					var wg sync.WaitGroup
					start := make(chan struct{})
					for i := range n {
						on := admins
						if i%2 == 1 {
							on = other
						}
						wg.Go(func() {
							<-start
							toks[i], _, errs[i] = on.Create(ctx, name, RoleAdmin, 0, "root", netip.Addr{})
						})
					}
					close(start)
					wg.Wait()
					made := 0
					for i := range n {
						var re *Error
						switch {
						case errs[i] == nil:
							made++
							if _, err := admins.Authenticate(ctx, toks[i]); err != nil {
								t.Errorf("round %d: a token answered as made does not work: %v", round, err)
							}
						case errors.As(errs[i], &re) && re.Status == 409:
						default:
							t.Errorf("round %d, creation %d: %v, want made or 409", round, i, errs[i])
						}
					}
					if made != 1 {
						t.Errorf("round %d: %d tokens made under one name, want 1", round, made)
					}
				}
			})
		}
	}
}
