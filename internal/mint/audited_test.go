package mint

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Every path that creates, renews or destroys a minted credential (for a
// job or shared by a grant, and its failures) leaves an audit entry naming
// what a reviewer needs: its kind, grant, upstream, record id, lease (or
// shared delivery), expiry. A shared GitHub installation token used to be
// created, refreshed and retired with no entry at all, and no creation or
// renewal had one of its own. No entry and no log line holds a credential's
// value (the double's values all start with "plantedsecretvalue").
func TestEveryCredentialIsAudited(t *testing.T) {
	tests := []struct {
		name string
		// run acts and returns the record id the entries name ("{id}").
		run func(t *testing.T, h *harness) string
		// want lists entries: each is the fragments one entry holds.
		want [][]string
	}{
		{
			name: "job credential minted",
			run:  func(t *testing.T, h *harness) string { h.lease(t, "lse_a"); return h.mint(t, "lse_a").ID },
			want: [][]string{{`"type":"credential.mint"`, `"lease":"lse_a"`, `"grant":"migrate"`, `"upstream":"db"`, `"status":200`,
				`"credential":"{id}"`, `"kind":"postgres"`, `"name":"role_`, `"expires_at":"`, `"deliver":"job"`}},
		},
		{
			name: "shared credential minted",
			run: func(t *testing.T, h *harness) string {
				is, err := h.m.Shared(ctx, h.pol.Upstreams["db"], h.pol.Grants["migrate"])
				if err != nil {
					t.Fatal(err)
				}
				return is.ID
			},
			want: [][]string{{`"type":"credential.mint"`, `"grant":"migrate"`, `"upstream":"db"`, `"status":200`, `"credential":"{id}"`,
				`"kind":"postgres"`, `"expires_at":"`, `"deliver":"gateway"`, `"cache_key":"`}},
		},
		{
			name: "shared credential replaced: the new one minted, the old one retired",
			run: func(t *testing.T, h *harness) string {
				up, g := h.pol.Upstreams["db"], h.pol.Grants["migrate"]
				first, err := h.m.Shared(ctx, up, g)
				if err != nil {
					t.Fatal(err)
				}
				h.clk.add(58*time.Minute + 30*time.Second) // too little left: minted again before answering
				next, err := h.m.Shared(ctx, up, g)
				if err != nil || next.ID == first.ID {
					t.Fatalf("not replaced: %v", err)
				}
				return first.ID
			},
			want: [][]string{
				{`"type":"credential.mint"`, `"credential":"{id}"`, `"deliver":"gateway"`},
				{`"type":"credential.renew"`, `"credential":"{id}"`, `"grant":"migrate"`, `"upstream":"db"`, `"status":200`, `"reason":"replaced`, `"expires_at":"`},
			},
		},
		{
			name: "mint failed upstream",
			run: func(t *testing.T, h *harness) string {
				h.lease(t, "lse_f")
				h.up.failMint = Errorf(502, "upstream_refused", "creation SQL failed: syntax error")
				if _, err := h.m.Mint(ctx, "lse_f", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(time.Minute)); err == nil {
					t.Fatal("minted")
				}
				return ""
			},
			want: [][]string{
				{`"type":"credential.mint"`, `"lease":"lse_f"`, `"grant":"migrate"`, `"upstream":"db"`, `"status":502`, `creation SQL failed`, `"kind":"postgres"`},
				{`"type":"credential.revoke"`, `"lease":"lse_f"`, `"reason":"mint failed"`, `"status":200`},
			},
		},
		{
			name: "mint refused before anything was made",
			run: func(t *testing.T, h *harness) string {
				h.lease(t, "lse_p")
				h.up.failPlan = Errorf(500, "misconfigured", "upstream db: no admin_dsn_secret")
				if _, err := h.m.Mint(ctx, "lse_p", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(time.Minute)); err == nil {
					t.Fatal("minted")
				}
				return ""
			},
			want: [][]string{{`"type":"credential.mint"`, `"lease":"lse_p"`, `"status":500`, `no admin_dsn_secret`}},
		},
		{
			name: "renewed with its lease",
			run: func(t *testing.T, h *harness) string {
				h.lease(t, "lse_r")
				is := h.mint(t, "lse_r")
				exp := h.clk.Now().Add(20 * time.Minute)
				if err := h.m.Renew(ctx, "lse_r", exp); err != nil {
					t.Fatal(err)
				}
				return is.ID
			},
			want: [][]string{{`"type":"credential.renew"`, `"lease":"lse_r"`, `"credential":"{id}"`, `"grant":"migrate"`, `"upstream":"db"`,
				`"status":200`, `"kind":"postgres"`, `"expires_at":"`}},
		},
		{
			name: "renewal failed upstream",
			run: func(t *testing.T, h *harness) string {
				h.lease(t, "lse_rf")
				is := h.mint(t, "lse_rf")
				h.up.failRenew = errors.New("upstream down")
				if err := h.m.Renew(ctx, "lse_rf", h.clk.Now().Add(20*time.Minute)); err == nil {
					t.Fatal("renewed")
				}
				return is.ID
			},
			want: [][]string{{`"type":"credential.renew"`, `"lease":"lse_rf"`, `"credential":"{id}"`, `"status":502`, `"reason":"upstream down"`}},
		},
		{
			name: "revoked with its lease",
			run: func(t *testing.T, h *harness) string {
				h.lease(t, "lse_v")
				is := h.mint(t, "lse_v")
				if _, err := h.db.RevokeLeases(ctx, store.LeaseFilter{ID: "lse_v"}, h.clk.Now(), "exec ended"); err != nil {
					t.Fatal(err)
				}
				if n := h.m.RevokeDue(ctx); n != 1 {
					t.Fatalf("revoked %d", n)
				}
				return is.ID
			},
			want: [][]string{{`"type":"credential.revoke"`, `"lease":"lse_v"`, `"credential":"{id}"`, `"status":200`, `"reason":"lease ended"`}},
		},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					fresh := storetest.SQLite(t)
					if b.Name != "sqlite" {
						fresh = storetest.Postgres(t)
					}
					h := newHarness(t, fresh)
					logs := &lockedBuffer{}
					h.m.cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
					id := tt.run(t, h)
					log := h.entries(t)
					lines := strings.Split(log, "\n")
				want:
					for _, frags := range tt.want {
						for _, l := range lines {
							ok := true
							for _, f := range frags {
								ok = ok && strings.Contains(l, strings.ReplaceAll(f, "{id}", id))
							}
							if ok {
								continue want
							}
						}
						t.Errorf("no entry holds all of %q; the log:\n%s", frags, log)
					}
					for what, s := range map[string]string{"the audit log": log, "the log lines": logs.String()} {
						if strings.Contains(s, "planted"+"secretvalue") {
							t.Errorf("%s holds a credential value:\n%s", what, s)
						}
					}
					assertNoValue(t, h, "planted"+"secretvalue", log)
				})
			}
		})
	}
}

// A credential whose creation cannot be recorded in the audit log (a full
// disk) is never handed out: it is destroyed upstream and the mint fails.
func TestCreationNotRecordedNotHandedOut(t *testing.T) {
	h := newHarness(t, storetest.SQLite(t))
	h.lease(t, "lse_nr")
	h.m.cfg.Audit = refusingLog{h.log}
	is, err := h.m.Mint(ctx, "lse_nr", h.pol.Upstreams["db"], h.pol.Grants["migrate"], h.clk.Now().Add(10*time.Minute))
	if err == nil {
		t.Fatalf("minted %s with the audit log refusing", is.ID)
	}
	h.up.mu.Lock()
	left := len(h.up.live)
	h.up.mu.Unlock()
	if left != 0 {
		t.Fatalf("a credential whose creation was not audited stays upstream: %v", h.up.live)
	}
}
