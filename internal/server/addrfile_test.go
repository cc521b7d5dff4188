package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The addr file is written beside its name under a name of its own, never
// through one given in advance: a link planted at "ADDR.tmp" by another
// user of a shared directory (--addr-file /tmp/mayfly.addr) made the
// server truncate and overwrite whatever the link named that its user may
// write, such as the data dir's master.key.
func TestAddrFileFollowsNoPlantedLink(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	victim := filepath.Join(shared, "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(shared, "mayfly.addr")
	if err := os.Symlink(victim, addrFile+".tmp"); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	s, err := New(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off", AddrFile: addrFile}, NewLogger(&lockedWriter{w: &strings.Builder{}}, "text", "error"))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx) }()
	defer func() {
		stop()
		<-done
		s.Close(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Lstat(addrFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no addr file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("the file a planted link named was overwritten: %q", b)
	}
	fi, err := os.Lstat(addrFile)
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("addr file: %v, %v: want a regular file", fi, err)
	}
	if b, _ := os.ReadFile(addrFile); !strings.HasPrefix(string(b), "https://127.0.0.1:") {
		t.Errorf("addr file = %q", b)
	}
}
