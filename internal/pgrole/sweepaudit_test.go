package pgrole_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A role of mayfly's form that no record knows (a restored store, a lost
// record) is dropped by the sweep: a credential destroyed, which used to
// leave only a log line and a counter. Now each sweep that drops roles
// leaves a credential.revoke entry naming the upstream, the roles, why and
// the outcome, and no password.
func TestSweepIsAudited(t *testing.T) {
	b := storetest.SQLite(t)
	h := newSourceHarness(t, b)
	h.src.Audit = func(ctx context.Context, ev audit.Event) error {
		_, err := h.log.Add(ctx, ev).Wait(ctx)
		return err
	}
	ctx := context.Background()
	up := h.pol.Upstreams[h.pg.Upstream]
	u := pgrole.Upstream{Name: up.Name, AdminDSN: h.pg.AdminDSN, Creation: h.pg.Creation()}
	orphan, err := h.src.Roles.Prepare(u, leaseID(77), time.Now().Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.src.Roles.Create(ctx, u, orphan); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.src.Sweep(ctx); n != 1 {
		t.Fatalf("swept %d, want the orphan", n)
	}
	es, err := h.db.AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		s := string(e)
		if strings.Contains(s, orphan.Password) || strings.Contains(s, h.pg.AdminDSN) {
			t.Fatalf("an audit entry holds the password or the admin DSN: %s", s)
		}
		for _, want := range []string{`"type":"credential.revoke"`, `"upstream":"` + up.Name + `"`, `"status":200`, `"reason":"swept: no record knows it"`,
			`"kind":"postgres"`, orphan.Name, `"count":1`} {
			if !strings.Contains(s, want) {
				goto next
			}
		}
		found = true
	next:
	}
	if !found {
		t.Fatalf("no entry records the swept role %s:\n%s", orphan.Name, es)
	}
}
