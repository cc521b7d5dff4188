package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/datadir"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// upstreamDouble counts the requests it gets and whether any carried the
// injected credential.
type upstreamDouble struct {
	srv      *httptest.Server
	hits     atomic.Int64
	credSeen atomic.Bool
}

func newUpstreamDouble(t *testing.T) *upstreamDouble {
	u := &upstreamDouble{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if strings.Contains(r.Header.Get("Authorization"), plantedSecret) {
			u.credSeen.Store(true)
		}
		w.Write([]byte("ok"))
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// policyTo is the harness policy with its upstream at url.
func (h *harness) policyTo(url string) string {
	return strings.Replace(policyYAML(h.issuer.srv.URL, ""), "http://127.0.0.1:1", url, 1)
}

// gatewayGET exchanges a token and calls the gateway with it through hs.
func (h *harness) gatewayGET(t *testing.T, hs *httptest.Server) int {
	t.Helper()
	return h.gatewayGETWith(t, hs, h.exchange(t))
}

func (h *harness) exchange(t *testing.T) string {
	t.Helper()
	return h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)["access_token"].(string)
}

// gatewayGETWith calls the gateway with tok through hs.
func (h *harness) gatewayGETWith(t *testing.T, hs *httptest.Server, tok string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", hs.URL+"/gw/api/repos/acme/app/issues", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// plantPolicy inserts version v with src into policy_versions as a
// database writer without the node's keys can (no MAC: the columns every
// schema has), policy_head following it.
func plantPolicy(t *testing.T, db *store.DB, v int64, src string) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.SQL().ExecContext(ctx, db.Rebind(`INSERT INTO policy_versions (version, hash, source, applied_at, applied_by) VALUES (?, ?, ?, ?, ?)`),
		v, "planted", []byte(src), time.Now().UnixNano(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, db.Rebind(`UPDATE policy_head SET version = ? WHERE id = 1`), v); err != nil {
		t.Fatal(err)
	}
}

// openStore opens the database of a data dir whose server is stopped.
func openStore(t *testing.T, dir string, cfg Config) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{Path: datadir.Dir(dir).Database(), PostgresDSN: cfg.Postgres})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// restart starts the harness's data dir again with a fresh server,
// returning New's error.
func (h *harness) restart(t *testing.T, cfg Config) error {
	t.Helper()
	if h.srv != nil {
		h.srv.Close(context.Background())
	}
	cfg.DataDir, cfg.InsecureHTTP, cfg.Listen = h.dir, true, "127.0.0.1:0"
	h.logs.Reset()
	srv, err := New(context.Background(), cfg, NewLogger(&lockedWriter{w: h.logs}, "json", "debug"))
	if err != nil {
		return err
	}
	h.srv = srv
	t.Cleanup(func() { srv.Close(context.Background()) })
	h.http = httptest.NewServer(srv.Handler())
	t.Cleanup(h.http.Close)
	return nil
}

// A database writer without the node's keys inserted a policy version
// pointing the upstream at their server: the next policy sync put it in
// force and the gateway sent the upstream credential there. Now the
// version is refused (logged by number, counted), the gateway keeps
// forwarding to the genuine upstream, and a restart refuses to start
// rather than enforce it.
func TestPlantedPolicyVersionIsNotEnforced(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		h := newHarness(t, cfg)
		genuine, attacker := newUpstreamDouble(t), newUpstreamDouble(t)
		h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(genuine.srv.URL), 200) // version 2
		tok := h.exchange(t)
		// policy_head follows, as it must for a node that put version 3
		// in force to issue tokens under it.
		plantPolicy(t, h.srv.store, 3, h.policyTo(attacker.srv.URL))
		if err := h.srv.authority.SyncPolicy(ctx); err != nil {
			t.Fatalf("sync: %v", err)
		}
		if st := h.gatewayGETWith(t, h.http, tok); st != 200 {
			t.Fatalf("gateway status %d", st)
		}
		if attacker.hits.Load() != 0 || attacker.credSeen.Load() {
			t.Fatalf("the gateway forwarded to the planted upstream (%d requests, credential seen %v)", attacker.hits.Load(), attacker.credSeen.Load())
		}
		if genuine.hits.Load() != 1 {
			t.Fatalf("genuine upstream got %d requests, want 1", genuine.hits.Load())
		}
		logs := h.logs.String()
		if !strings.Contains(logs, "not authenticated") || !strings.Contains(logs, `"version":3`) || strings.Contains(logs, attacker.srv.URL) {
			t.Fatalf("the refusal is not logged by version number alone: %s", logs)
		}
		if n := counter(t, h.srv, "mayfly_policy_refused_total"); n != 1 {
			t.Fatalf("mayfly_policy_refused_total = %v, want 1", n)
		}

		err := h.restart(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "policy version 3 is not authenticated") || strings.Contains(err.Error(), attacker.srv.URL) {
			t.Fatalf("restart over a planted latest version: %v", err)
		}
		if attacker.hits.Load() != 0 {
			t.Fatal("the planted upstream was called")
		}
	})
}

// An installation from before policy versions had MACs upgrades: its
// first start seals them (once, recorded in the audit log and in the data
// dir) and enforces them. A database writer who then plants a version and
// makes the database look unsealed again (every MAC removed) does not get
// it sealed: the node refuses it.
func TestLegacyPolicyVersionsSealedOnceAtUpgrade(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		h := newHarness(t, cfg)
		genuine, attacker := newUpstreamDouble(t), newUpstreamDouble(t)
		h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(genuine.srv.URL), 200) // version 2
		h.srv.Close(ctx)
		// What the previous release left: rows without a MAC, a data dir
		// without the sealing's record.
		db := openStore(t, h.dir, cfg)
		if _, err := db.SQL().ExecContext(ctx, `UPDATE policy_versions SET mac = NULL`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if err := os.Remove(datadir.Dir(h.dir).PolicySealed()); err != nil {
			t.Fatal(err)
		}

		if err := h.restart(t, cfg); err != nil {
			t.Fatalf("upgrade start: %v", err)
		}
		if v := h.srv.authority.PolicyVersion(); v != 2 {
			t.Fatalf("version %d in force after the upgrade, want 2", v)
		}
		if st := h.gatewayGET(t, h.http); st != 200 || genuine.hits.Load() != 1 {
			t.Fatalf("gateway status %d, genuine upstream hits %d", st, genuine.hits.Load())
		}
		if _, err := os.Stat(datadir.Dir(h.dir).PolicySealed()); err != nil {
			t.Fatalf("the sealing is not recorded in the data dir: %v", err)
		}
		seals := sealEntries(t, h.srv)
		if len(seals) != 1 || seals[0].Count != 2 {
			t.Fatalf("policy.seal entries %+v, want one for 2 versions", seals)
		}

		// The attack: a planted version 3, every MAC removed.
		h.srv.Close(ctx)
		db = openStore(t, h.dir, cfg)
		plantPolicy(t, db, 3, h.policyTo(attacker.srv.URL))
		if _, err := db.SQL().ExecContext(ctx, `UPDATE policy_versions SET mac = NULL`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		err := h.restart(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "policy version 3 is not authenticated") {
			t.Fatalf("start over a planted version after the upgrade: %v", err)
		}
		db = openStore(t, h.dir, cfg)
		defer db.Close()
		unsealed, err := db.UnsealedPolicyVersions(ctx)
		if err != nil || len(unsealed) != 3 {
			t.Fatalf("unsealed versions %d (%v), want all 3 left unsealed", len(unsealed), err)
		}
		if attacker.hits.Load() != 0 {
			t.Fatal("the planted upstream was called")
		}
	})
}

// sealEntries are the policy.seal entries of srv's log.
func sealEntries(t *testing.T, srv *Server) []audit.Event {
	t.Helper()
	var out []audit.Event
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		lines, err := srv.store.AuditEntries(context.Background(), 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		out = out[:0]
		for _, line := range lines {
			if !bytes.Contains(line, []byte(audit.TypePolicySeal)) {
				continue
			}
			e, err := audit.ParseEntry(line)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e.Event)
		}
		if len(out) > 0 {
			break
		}
	}
	return out
}

func counter(t *testing.T, srv *Server, name string) float64 {
	t.Helper()
	mfs, err := srv.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A node whose data dir does not record the sealing (a node added with
// init --join, or one whose file was lost) starts on a database whose
// policy versions are authenticated, a version planted there without a
// MAC: it must not seal it, since sealing is the upgrade's step for a
// database never sealed. Before, it sealed every version without a MAC
// and enforced the planted one. Now it seals nothing, records that in its
// data dir, and refuses the planted version like any other node.
func TestUnmarkedNodeDoesNotSealOverSealedDatabase(t *testing.T) {
	onBothBackends(t, func(t *testing.T, cfg Config) {
		ctx := context.Background()
		h := newHarness(t, cfg)
		genuine, attacker := newUpstreamDouble(t), newUpstreamDouble(t)
		h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(genuine.srv.URL), 200) // version 2
		h.srv.Close(ctx)
		db := openStore(t, h.dir, cfg)
		plantPolicy(t, db, 3, h.policyTo(attacker.srv.URL))
		db.Close()
		if err := os.Remove(datadir.Dir(h.dir).PolicySealed()); err != nil {
			t.Fatal(err)
		}

		err := h.restart(t, cfg)
		if err == nil || !strings.Contains(err.Error(), "policy version 3 is not authenticated") {
			t.Fatalf("start without the sealing's record over a planted version: %v", err)
		}
		if logs := h.logs.String(); !strings.Contains(logs, "not sealing") || !strings.Contains(logs, `"versions":"[3]"`) || strings.Contains(logs, attacker.srv.URL) {
			t.Fatalf("the versions left unsealed are not logged by number alone: %s", logs)
		}
		db = openStore(t, h.dir, cfg)
		defer db.Close()
		unsealed, err := db.UnsealedPolicyVersions(ctx)
		if err != nil || len(unsealed) != 1 || unsealed[0].Version != 3 {
			t.Fatalf("unsealed versions %+v (%v), want version 3 left unsealed", unsealed, err)
		}
		if _, err := os.Stat(datadir.Dir(h.dir).PolicySealed()); err != nil {
			t.Fatalf("the node does not record that it must never seal: %v", err)
		}
		if attacker.hits.Load() != 0 {
			t.Fatal("the planted upstream was called")
		}
	})
}

// init --join records in the new data dir that the node must never seal a
// policy version when the cluster's database has none that needs it (its
// versions authenticated, or none at all), so that a database writer who
// plants a version and removes every MAC before the node's first start
// does not get it sealed. Before, a joined node's data dir never had the
// record and its first start sealed whatever it found. A cluster still on
// the previous release's unauthenticated versions is left to be sealed by
// its first upgraded start.
func TestJoinRecordsPolicySealing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		versions   bool // a policy applied before the join
		stripMACs  bool // every MAC removed before the join (a pre-MAC cluster)
		wantMarker bool
	}{
		{"authenticated versions", true, false, true},
		{"no version", false, false, true},
		{"unauthenticated versions only", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Postgres: storetest.FreshSchema(t, storetest.PostgresDSN(t))}
			attacker := newUpstreamDouble(t)
			var h *harness
			if tc.versions {
				h = newHarness(t, cfg) // its policy: version 1
				h.srv.Close(ctx)
			} else {
				h = &harness{t: t, dir: filepath.Join(t.TempDir(), "first"), issuer: newTestIssuer(t), logs: &bytes.Buffer{}}
				if _, err := Init(ctx, InitOptions{DataDir: h.dir, Postgres: cfg.Postgres}); err != nil {
					t.Fatal(err)
				}
			}
			first := datadir.Dir(h.dir)
			if tc.stripMACs {
				db := openStore(t, h.dir, cfg)
				if _, err := db.SQL().ExecContext(ctx, `UPDATE policy_versions SET mac = NULL`); err != nil {
					t.Fatal(err)
				}
				db.Close()
			}

			joined := datadir.Dir(filepath.Join(t.TempDir(), "joined"))
			if _, err := Join(ctx, JoinOptions{DataDir: string(joined), Postgres: cfg.Postgres, MasterKeyFile: first.MasterKey(),
				AuditKeyFile: first.AuditKey(), CACert: first.CACert(), CAKey: first.CAKey()}); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(joined.PolicySealed())
			if got := err == nil; got != tc.wantMarker {
				t.Fatalf("joined data dir records the sealing: %v (%v), want %v", got, err, tc.wantMarker)
			}
			if !tc.wantMarker {
				// The upgrade's sealing, at the joined node's first start.
				h.dir = string(joined)
				if err := h.restart(t, cfg); err != nil {
					t.Fatalf("first start of a node joined to a pre-MAC cluster: %v", err)
				}
				if v := h.srv.authority.PolicyVersion(); v != 1 {
					t.Fatalf("version %d in force, want 1", v)
				}
				return
			}
			// The attack before the joined node's first start: a planted
			// version, every MAC removed.
			db := openStore(t, string(first), cfg)
			plantPolicy(t, db, 9, h.policyTo(attacker.srv.URL))
			if _, err := db.SQL().ExecContext(ctx, `UPDATE policy_versions SET mac = NULL`); err != nil {
				t.Fatal(err)
			}
			db.Close()
			h.dir = string(joined)
			err = h.restart(t, cfg)
			if err == nil || !strings.Contains(err.Error(), "policy version 9 is not authenticated") {
				t.Fatalf("first start of the joined node over a planted version: %v", err)
			}
			db = openStore(t, string(first), cfg)
			defer db.Close()
			var sealed int
			if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM policy_versions WHERE mac IS NOT NULL`).Scan(&sealed); err != nil || sealed != 0 {
				t.Fatalf("the joined node sealed %d versions (%v)", sealed, err)
			}
		})
	}
}
