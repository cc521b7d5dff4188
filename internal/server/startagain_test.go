package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/auditlog"
)

// A second server started on a data dir one already serves (a second
// terminal, a unit and a manual start) says so and what to do, not only
// that a journal file is locked.
func TestSecondServerOnADataDirSaysOneRuns(t *testing.T) {
	if !auditlog.JournalSupported() {
		t.Skip("no audit journal on this system: nothing notices a second server")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	quiet := NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error")
	first, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	second, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off"}, quiet)
	if err == nil {
		second.Close(ctx)
		t.Fatal("a second server started on the same data dir")
	}
	if !errors.Is(err, ErrServerRunning) || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("second server: %v; want it to say a server runs on the data dir and what to do", err)
	}
}
