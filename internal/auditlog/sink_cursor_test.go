package auditlog

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// nodeFileSink is a FileSink on one node: the same configured path
// (/var/log/mayfly/audit.jsonl) on every machine, hence the same Name.
type nodeFileSink struct {
	*FileSink
	configured string
}

func (s nodeFileSink) Name() string { return "file:" + s.configured }

// TestFileSinkCursorSharedByNodes: nodes on one PostgreSQL run one
// Forwarder each for the configured file sink. With one cursor
// "sink:file:PATH" for all, each node's file got only the entries its own
// forwarder happened to move the shared cursor past. With the node named
// (ForwarderOptions.Node, as the server does for a file sink on
// PostgreSQL) each file holds the whole log; a node whose own cursor is
// new starts from the common one it used before (an upgrade re-exports
// nothing).
func TestFileSinkCursorSharedByNodes(t *testing.T) {
	ctx := context.Background()
	logs, dbs, _ := sharedNodes(t, 2)
	const configured = "/var/log/mayfly/audit.jsonl"
	// Before the upgrade the nodes had delivered [0, 3) under the common
	// cursor.
	appendN(t, logs[0], 3)
	waitFor(t, func() bool { n, _ := dbs[0].AuditSize(ctx); return n >= 3 })
	if err := dbs[0].SetAuditCursor(ctx, "sink:file:"+configured, 3); err != nil {
		t.Fatal(err)
	}
	var fw []*Forwarder
	var paths []string
	for i := range logs {
		p := filepath.Join(t.TempDir(), "audit.jsonl") // node i's disk
		fs, err := NewFileSink(p, FileSinkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Close() })
		paths = append(paths, p)
		fw = append(fw, NewForwarder(dbs[i], nodeFileSink{fs, configured}, ForwarderOptions{Node: fmt.Sprintf("host%d", i)}))
	}
	total := int64(3)
	for round := 0; round < 4; round++ {
		for i := 0; i < 5; i++ {
			if _, err := logs[round%2].appendDurable(ctx, gatewayEvent(i)); err != nil {
				t.Fatal(err)
			}
		}
		total += 5
		waitFor(t, func() bool { n, _ := dbs[0].AuditSize(ctx); return n >= total })
		if _, err := fw[round%2].Pump(ctx); err != nil { // each node's forwarder runs in turn
			t.Fatal(err)
		}
	}
	for _, f := range fw {
		if _, err := f.Pump(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range paths {
		lines := readLines(t, p)
		var idx []int64
		for _, l := range lines {
			idx = append(idx, audit.EntryIndex([]byte(l)))
		}
		if int64(len(lines)) != total-3 || idx[0] != 3 || idx[len(idx)-1] != total-1 {
			t.Errorf("node %d's sink file %s holds indexes %v, want [3, %d)", i, configured, idx, total)
		}
	}
	for i := range fw {
		if next, err := dbs[0].AuditCursor(ctx, fmt.Sprintf("sink:file:%s@host%d", configured, i)); err != nil || next != total {
			t.Errorf("node %d's cursor %d, %v; want %d", i, next, err, total)
		}
	}
}
