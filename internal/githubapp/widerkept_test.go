package githubapp

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// GitHub (or whatever answers as it) grants a token wider than the grant
// asks, and the deletion of it fails (GitHub briefly down): the token is
// refused, and deleted once GitHub answers again, retried by the worker
// like any other minted credential. Before, the one inline DELETE was the
// only try: when it failed, the token, which no record held, stayed alive
// at GitHub with the wider scope for up to an hour, and its record said
// revoked.
func TestWiderTokenDeletedOnceGitHubAnswers(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h := &harness{clk: &clock{t: time.Now().UTC().Truncate(time.Second)}, db: b.DB}
			gh, err := githubtest.Start(githubtest.Options{Now: h.clk.Now, WidePermissions: true, Installations: []githubtest.Installation{{ID: 7890, Owner: "acme",
				Repositories: []string{"app", "lib"}, Permissions: map[string]string{"contents": "write", "pull_requests": "write", "metadata": "read"}}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gh.Close() })
			target, _ := url.Parse(gh.URL)
			proxy := httputil.NewSingleHostReverseProxy(target)
			var failDeletes atomic.Int32
			failDeletes.Store(3)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodDelete && failDeletes.Add(-1) >= 0 {
					http.Error(w, `{"message":"Server Error"}`, http.StatusServiceUnavailable)
					return
				}
				proxy.ServeHTTP(w, r)
			}))
			t.Cleanup(front.Close)
			vault, err := secret.Open(ctx, b.DB, bytes.Repeat([]byte{3}, 32), secret.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(vault.Close)
			if _, err := vault.Put(ctx, "gh-key", gh.PrivateKey); err != nil {
				t.Fatal(err)
			}
			h.gh = gh
			if h.pol, err = policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", front.URL))}}, nil); err != nil {
				t.Fatal(err)
			}
			h.src = New(Config{Secrets: vault, Now: h.clk.Now})
			m, log, _ := h.manager(t)
			now := h.clk.Now()
			if err := h.db.InsertLease(ctx, store.Lease{ID: "lse_wide", Hash: [32]byte{2}, Issuer: "ci", Subject: "s", Job: "j", Claims: map[string]string{},
				Grants: []string{"release"}, IssuedAt: now, ExpiresAt: now.Add(30 * time.Minute), MaxExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			_, err = m.Mint(ctx, "lse_wide", h.pol.Upstreams["gh"], h.pol.Grants["release"], now.Add(30*time.Minute))
			var me *mint.Error
			if !errors.As(err, &me) || !strings.Contains(me.Description, "more than the grant asks for") {
				t.Fatalf("err = %v, want the wider token refused", err)
			}
			if gh.LiveCount() != 1 {
				t.Fatalf("%d tokens live at GitHub; the test wants its deletion to have failed", gh.LiveCount())
			}
			// Well within the token's hour: past every backoff.
			for i := 0; i < 5 && gh.LiveCount() > 0; i++ {
				h.clk.add(5 * time.Minute)
				m.RevokeDue(ctx)
			}
			if n := gh.LiveCount(); n != 0 {
				t.Fatalf("the wider token is alive at GitHub once it answers again (%d live): nothing retried its deletion", n)
			}
			es, err := log.Entries(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			for tok := range gh.Tokens() {
				if strings.Contains(string(bytes.Join(es, nil)), tok) {
					t.Fatal("an audit entry holds the token")
				}
			}
		})
	}
}
