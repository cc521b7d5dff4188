package main

import (
	"strings"
	"testing"
)

// audit verify and audit key read a server or, offline, a data dir: with
// neither given they say both ways, not only "set MAYFLY_ADDR".
func TestAuditWithoutServerOrDataDirNamesBoth(t *testing.T) {
	t.Setenv("MAYFLY_ADDR", "")
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "key"}} {
		_, errOut, code := runCLI(t, "", args...)
		if code != exitUsage || !strings.Contains(errOut, "--data-dir") || !strings.Contains(errOut, "MAYFLY_ADDR") {
			t.Errorf("%s: exit %d %q; want exit 2 naming --data-dir and MAYFLY_ADDR", strings.Join(args, " "), code, errOut)
		}
	}
}
