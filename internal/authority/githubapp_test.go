package authority

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/githubapp"
	"github.com/mayfly-sh/mayfly/internal/githubtest"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// ghBench is an authority whose github_app upstreams mint with the real
// source against the GitHub double.
type ghBench struct {
	*bench
	gh *githubtest.Server
	mt *mint.Manager
}

func newGHBench(t *testing.T, b storetest.Backend) *ghBench {
	t.Helper()
	gh, err := githubtest.Start(githubtest.Options{Installations: []githubtest.Installation{
		{ID: 7890, Owner: "acme", Repositories: []string{"app", "lib"}, Permissions: map[string]string{"contents": "write", "issues": "read"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	iss := devissuertest.Start(t)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(b.DB, h, lease.Options{})
	gb := &ghBench{bench: &bench{db: b.DB, m: m, iss: iss, rec: newRecorder(t, b.DB), sec: newVaultSecrets(t, b.DB)}, gh: gh}
	gb.mt, err = mint.New(mint.Config{Store: b.DB, Hasher: h, SealKey: bytes.Repeat([]byte{2}, 32), Audit: gb.rec,
		Sources: map[string]mint.Source{policy.KindGitHubApp: githubapp.New(githubapp.Config{Secrets: gb.sec.v})}})
	if err != nil {
		t.Fatal(err)
	}
	gb.a = New(Config{Leases: m, Verifier: identity.NewVerifier(identity.Options{}), Policies: b.DB, Audit: gb.rec, Secrets: gb.sec, Minter: gb.mt})
	gb.sec.set(t, "gh-app-key", string(gh.PrivateKey))
	gb.sec.set(t, "bad-key", "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n")
	app := func(key, inst string) string {
		return fmt.Sprintf(`{url: %q, credential: {github_app: {app_id: %q, private_key_secret: %s, installation_id: %q}}}`, gh.URL, gh.AppID, key, inst)
	}
	grant := func(up, deliver, scope string) string {
		return fmt.Sprintf(`{upstream: %s, ttl: 10m, deliver: %s, bind_source_ip: true, github: %s, allow: [{methods: [GET], paths: ["/**"]}], who: [{issuer: ci, claims: {repository: acme/app}}]}`,
			up, deliver, scope)
	}
	pol := fmt.Sprintf(`issuers:
  ci: {url: %s, audience: %s, algorithms: [%s]}
upstreams:
  gh: %s
  gh-badkey: %s
  gh-missing: %s
grants:
  job: %s
  shared: %s
  badkey: %s
  missing: %s
  refused: %s
  shared-refused: %s
`, iss.URL(), benchAudience, iss.Algorithm(), app("gh-app-key", "7890"), app("bad-key", "7890"), app("gh-app-key", "999"),
		grant("gh", "job", "{repositories: [app], permissions: {contents: write}}"),
		grant("gh", "gateway", "{repositories: [app], permissions: {contents: read}}"),
		grant("gh-badkey", "job", "{permissions: {contents: read}}"),
		grant("gh-missing", "job", "{permissions: {contents: read}}"),
		grant("gh", "job", "{permissions: {administration: write}}"),
		grant("gh", "gateway", "{permissions: {issues: write}}"))
	if _, err := gb.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(pol)}}, "test"); err != nil {
		t.Fatal(err)
	}
	return gb
}

func (gb *ghBench) exchange(t *testing.T, grant string) (*ExchangeResult, error) {
	t.Helper()
	return gb.a.Exchange(ctx, ExchangeRequest{SubjectToken: gb.mint(t, map[string]any{"repository": "acme/app"}), Scope: []string{grant}, Source: corpAddr})
}

// refused checks that err is the exchange's answer with status, code and
// words, and that its audit entry says so; it returns the entry's lease.
func (gb *ghBench) refused(t *testing.T, err error, status int, code, says string) string {
	t.Helper()
	var re *Error
	if !errors.As(err, &re) || re.Status != status || re.Code != code || !strings.Contains(re.Description, says) {
		t.Fatalf("err = %v, want %d %s saying %q", err, status, code, says)
	}
	ev, _ := gb.rec.last("token.exchange")
	if ev.Status != status || ev.Check != "upstream_credential" || !strings.Contains(ev.Reason, code) || !strings.Contains(ev.Reason, says) {
		t.Fatalf("audit entry %+v", ev)
	}
	if strings.Contains(ev.Reason, "ghs_") || strings.Contains(ev.Reason, "PRIVATE KEY") {
		t.Fatal("the audit entry holds a secret")
	}
	return ev.Lease
}

// GitHub App installation tokens through the exchange, with the real
// source against the GitHub double, on both stores (SPEC section 9).
func TestGitHubAppExchange(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			// A key that does not parse, an installation that does not
			// exist, a permission GitHub refuses (for a job's token and for
			// a grant's shared one): a clear answer naming the cause, in
			// the audit log, no lease left, no token at GitHub.
			t.Run("faults", func(t *testing.T) {
				gb := newGHBench(t, b)
				for _, tt := range []struct {
					grant, code, says string
					status            int
				}{
					{"badkey", "upstream_misconfigured", "private key in secret bad-key does not parse", 500},
					{"missing", "upstream_refused", "GitHub: installation 999 of App", 502},
					{"refused", "upstream_refused", "GitHub refused the token's scope (422)", 502},
					{"shared-refused", "upstream_refused", "GitHub refused the token's scope (422)", 502},
				} {
					_, err := gb.exchange(t, tt.grant)
					lid := gb.refused(t, err, tt.status, tt.code, tt.says)
					if !strings.Contains(err.Error(), "grant "+tt.grant+": ") {
						t.Fatalf("%v does not name the grant", err)
					}
					if lid != "" {
						if ls, _ := gb.m.List(ctx, store.LeaseFilter{ID: lid}); len(ls) != 1 || ls[0].RevokedAt.IsZero() {
							t.Fatalf("%s: the lease of a failed mint lives", tt.grant)
						}
					}
					gb.mt.RevokeDue(ctx)
					if n := gb.gh.LiveCount(); n != 0 {
						t.Fatalf("%s: %d tokens left at GitHub", tt.grant, n)
					}
				}
			})
			// Under either GitHub rate limit, a grant whose shared token is
			// cached goes on; a job's own token cannot be had, and the
			// exchange says why without asking GitHub again.
			for _, lim := range []struct {
				name, says string
				set        func(*githubtest.Server)
			}{
				{"primary rate limit", "rate limit is spent until", func(gh *githubtest.Server) { gh.LimitPrimary(time.Now().Add(time.Hour)) }},
				{"secondary rate limit", "secondary rate limit (429, retry after 600s)", func(gh *githubtest.Server) { gh.LimitSecondary(1000, 600) }},
			} {
				t.Run(lim.name, func(t *testing.T) {
					gb := newGHBench(t, b)
					if _, err := gb.exchange(t, "shared"); err != nil {
						t.Fatal(err)
					}
					lim.set(gb.gh)
					_, err := gb.exchange(t, "job")
					gb.refused(t, err, 503, "upstream_unavailable", lim.says)
					asked := len(gb.gh.Refused())
					for range 3 {
						if res, err := gb.exchange(t, "shared"); err != nil || len(res.Credentials) != 0 {
							t.Fatalf("a cached shared token did not serve under the limit: %v", err)
						}
					}
					_, err = gb.exchange(t, "job")
					gb.refused(t, err, 503, "upstream_unavailable", "not asking again")
					if n := len(gb.gh.Refused()); n != asked {
						t.Fatalf("GitHub asked %d more times during its rate limit", n-asked)
					}
				})
			}
			// A leaked token, shared or a job's, is deleted at GitHub; the
			// grant's next exchange mints a fresh shared one.
			t.Run("leaks", func(t *testing.T) {
				gb := newGHBench(t, b)
				if _, err := gb.exchange(t, "shared"); err != nil {
					t.Fatal(err)
				}
				var shared string
				for tok, info := range gb.gh.Tokens() {
					if !info.Deleted {
						shared = tok
					}
				}
				res, err := gb.exchange(t, "job")
				if err != nil {
					t.Fatal(err)
				}
				own := res.Credentials["gh"].Token
				if shared == "" || !gb.gh.Live(own) || own == shared {
					t.Fatal("no shared and own token at GitHub")
				}
				lr, err := gb.a.Leak(ctx, []string{shared, own}, LeakOrigin{}, corpAddr)
				if err != nil || len(lr.Revoked) != 2 {
					t.Fatalf("leak = %+v %v", lr, err)
				}
				if _, err := gb.m.Lookup(ctx, res.Token); !errors.Is(err, lease.ErrRevoked) {
					t.Fatalf("the job's lease lives: %v", err)
				}
				if n := gb.mt.RevokeDue(ctx); n != 2 || gb.gh.Live(shared) || gb.gh.Live(own) {
					t.Fatalf("revoked %d; shared live %v, own live %v", n, gb.gh.Live(shared), gb.gh.Live(own))
				}
				before := gb.gh.Calls("POST /app/installations/{id}/access_tokens")
				if _, err := gb.exchange(t, "shared"); err != nil {
					t.Fatal(err)
				}
				if gb.gh.Calls("POST /app/installations/{id}/access_tokens") != before+1 || gb.gh.LiveCount() != 1 {
					t.Fatal("no fresh shared token after the leak")
				}
			})
		})
	}
}
