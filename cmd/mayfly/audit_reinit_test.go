package main

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// A server re-initialised at the same address (a trial's data dir made
// again) has a new key and a new log. audit verify and audit prove refuse
// it against the pinned state, and say how to go on: a fresh state file,
// since --key alone still meets the old pinned tree.
func TestAuditAfterReinitSaysUseAFreshState(t *testing.T) {
	first, _, err := audit.GenerateKey(audit.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	as := newAuditServer(t, testLog(t, first, 3))
	adminEnv(t, as.URL)
	state := t.TempDir() + "/v.state"
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 0 {
		t.Fatalf("first verify: exit %d %q", code, errOut)
	}
	again, _, _ := audit.GenerateKey(audit.DefaultOrigin)
	as.set(testLog(t, again, 3), -1) // init again, same address
	for _, args := range [][]string{
		{"audit", "verify", "--state", state},
		{"audit", "prove", "--index", "0", "--state", state},
	} {
		_, errOut, code := runCLI(t, "", args...)
		if code != exitNegative || !strings.Contains(errOut, "key changed") || !strings.Contains(errOut, state) ||
			!strings.Contains(errOut, "re-initialised") || !strings.Contains(errOut, "--state") {
			t.Errorf("%s: exit %d %q; want the key change named with the state file and a fresh --state as the way on", strings.Join(args[:2], " "), code, errOut)
		}
	}
	// The way on the message gives works.
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", t.TempDir()+"/new.state"); code != 0 {
		t.Errorf("verify with a fresh state: exit %d %q", code, errOut)
	}
}
