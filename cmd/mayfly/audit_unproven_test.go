package main

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditVerifyReportsUnproven: entries after the latest signed
// checkpoint (here: the newer checkpoints deleted) are not called intact;
// freshly written, they are reported unproven and verify exits 0 (a live
// log's newest entries wait up to 500 ms for a checkpoint).
func TestAuditVerifyReportsUnproven(t *testing.T) {
	dir := offlineDataDir(t)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "mayfly.db"))
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	if err := db.QueryRow(`SELECT MAX(size) FROM audit_checkpoints`).Scan(&size); err != nil || size == 0 {
		t.Fatalf("latest checkpoint %d, %v", size, err)
	}
	if _, err := db.Exec(`DELETE FROM audit_checkpoints WHERE size > 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, errOut, code := runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state")
	if code != exitOK || strings.Contains(out, "audit log intact:") || !strings.Contains(out, "unproven") {
		t.Fatalf("exit %d, out %q, err %q", code, out, errOut)
	}
	out, _, code = runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state", "--json")
	var rep verifyReport
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Unproven != size || rep.CheckpointSize != 0 {
		t.Fatalf("exit %d, report %q", code, out)
	}
}
