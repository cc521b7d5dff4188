package server

import (
	"context"
	"strings"
	"testing"
)

// A database writer without master.key cannot forge a policy version, but
// could delete the newest genuine ones: the older genuine version left
// (one that granted more, here one pointing the upstream, and the
// credential the gateway injects, at another server) was put in force by
// every node that started next, and silently ignored by the running ones;
// with every version deleted, an apply started the numbering again below
// what running nodes enforce. Now a running node keeps its version and
// reports the rollback (logged, counted as a refusal), an apply over it is
// refused, and a node whose data dir has seen a newer version refuses to
// start.
func TestRolledBackPolicyVersionIsNotEnforced(t *testing.T) {
	tests := []struct {
		name   string
		delete string // the versions the attacker deletes
		latest string // the latest version left, as logged
	}{
		{"newest deleted", `DELETE FROM policy_versions WHERE version = 3`, `"version":2`},
		{"every version deleted", `DELETE FROM policy_versions`, `"version":0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			onBothBackends(t, func(t *testing.T, cfg Config) {
				ctx := context.Background()
				h := newHarness(t, cfg)
				old, genuine := newUpstreamDouble(t), newUpstreamDouble(t)
				h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(old.srv.URL), 200)     // version 2
				h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(genuine.srv.URL), 200) // version 3

				for _, q := range []string{tt.delete, `UPDATE policy_head SET version = 0 WHERE id = 1`} {
					if _, err := h.srv.store.SQL().ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				if err := h.srv.authority.SyncPolicy(ctx); err != nil {
					t.Fatalf("sync: %v", err)
				}
				if v := h.srv.authority.PolicyVersion(); v != 3 {
					t.Fatalf("version %d in force, want 3", v)
				}
				if n := counter(t, h.srv, "mayfly_policy_refused_total"); n != 1 {
					t.Fatalf("mayfly_policy_refused_total = %v, want 1 (the rollback is not reported)", n)
				}
				if logs := h.logs.String(); !strings.Contains(logs, "rolled back") || !strings.Contains(logs, tt.latest) {
					t.Fatalf("the rollback is not logged: %s", logs)
				}
				// An apply would number its version at or below what
				// nodes enforce: refused until an operator repairs it.
				h.do("PUT", "/v1/policy", h.admin, "application/yaml", h.policyTo(genuine.srv.URL)+"\n# again\n", 409)

				err := h.restart(t, cfg)
				if err == nil {
					h.gatewayGETWith(t, h.http, h.exchange(t))
					t.Fatalf("a restart over the rolled back policy started (version %d in force, older upstream called %d times)",
						h.srv.authority.PolicyVersion(), old.hits.Load())
				}
				if !strings.Contains(err.Error(), "rolled back") {
					t.Fatalf("restart over a rolled back policy: %v", err)
				}
				if old.hits.Load() != 0 {
					t.Fatal("the older version's upstream was called")
				}
			})
		})
	}
}
