package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditProveIgnoresPinnedTree: `audit prove` took the verifier key
// from the state file `audit verify` keeps, but not the tree that state
// pins: a server holding the key could show this client a forked log
// (another history, same key) and prove said "verified" for an entry of
// the fork. Now the checkpoint must extend the pinned tree (a consistency
// proof), a smaller served one is refused, an older one kept in a file
// must be a prefix of it, and the state advances with an honest log.
func TestAuditProveIgnoresPinnedTree(t *testing.T) {
	signer, logA, as := servedLog(t, 10)
	state := filepath.Join(t.TempDir(), "v.state")
	if out, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 0 {
		t.Fatalf("exit %d out %q err %q", code, out, errOut)
	}
	pinned := func() int64 {
		t.Helper()
		return readState(t, state).Size
	}
	prove := func(args ...string) (string, int) {
		t.Helper()
		out, errOut, code := runCLI(t, "", append([]string{"audit", "prove", "--state", state}, args...)...)
		return out + errOut, code
	}

	fork := testLog(t, signer, 20) // a split view: other entries 0..9
	as.set(fork, -1)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 1 {
		t.Fatalf("verify accepted the fork: exit %d err %q", code, errOut)
	}
	if out, code := prove("--index", "3"); code != 1 || strings.Contains(out, "verified:") || !strings.Contains(out, "not one history") {
		t.Fatalf("audit prove with the state pinning tree 10 of another history: exit %d\n%s", code, out)
	}
	rolled := testLog(t, signer, 5) // a smaller tree served: a rollback
	as.set(rolled, -1)
	if out, code := prove("--index", "3"); code != 1 || !strings.Contains(out, "rolled back") {
		t.Fatalf("audit prove against a smaller checkpoint: exit %d\n%s", code, out)
	}
	if pinned() != 10 {
		t.Fatalf("state moved to %d by a refused proof", pinned())
	}

	// The honest log grows: proven, and the state advances.
	grow(t, logA, 6)
	as.set(logA, -1)
	if out, code := prove("--index", "12"); code != 0 || !strings.Contains(out, "verified:") || pinned() != 16 {
		t.Fatalf("honest log grown to 16: exit %d, state %d\n%s", code, pinned(), out)
	}
	// An older checkpoint of the same log, kept in a file: a prefix of the
	// pinned tree; the state stays.
	cp10, err := logA.CheckpointAt(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cp10")
	if err := os.WriteFile(file, cp10, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := prove("--index", "3", "--checkpoint", file); code != 0 || !strings.Contains(out, "verified:") || pinned() != 16 {
		t.Fatalf("older checkpoint of the pinned history: exit %d, state %d\n%s", code, pinned(), out)
	}
	// The fork's own older checkpoint is not a prefix of the pinned tree.
	cpFork, err := fork.CheckpointAt(context.Background(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, cpFork, 0o600); err != nil {
		t.Fatal(err)
	}
	as.set(fork, -1)
	if out, code := prove("--index", "3", "--checkpoint", file); code != 1 || strings.Contains(out, "verified:") {
		t.Fatalf("the fork's checkpoint in a file: exit %d\n%s", code, out)
	}
}
