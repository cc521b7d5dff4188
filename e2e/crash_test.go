package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// TestKillNineLosesNothingAcknowledged writes secrets from many clients,
// kills the server with SIGKILL mid-stream, restarts it and checks that
// every write the server acknowledged is there and the audit log verifies.
func TestKillNineLosesNothingAcknowledged(t *testing.T) {
	n := initDir(t)
	n.start(t)
	c := n.client(t)
	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("s-%d-%d", w, i)
				code, _ := n.req(t, c, "PUT", "/v1/secrets/"+name, `{"value":"value-of-`+name+`-0123456789"}`)
				if code == 200 {
					mu.Lock()
					acked[name] = true
					mu.Unlock()
				}
				if code == 0 {
					return // connection gone: the server was killed
				}
			}
		}(w)
	}
	time.Sleep(1500 * time.Millisecond)
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}
	n.start(t)
	code, body := n.req(t, c, "GET", "/v1/secrets", "")
	if code != 200 {
		t.Fatalf("list after restart: %d %s", code, body)
	}
	for name := range acked {
		if !strings.Contains(body, `"name":"`+name+`"`) {
			t.Errorf("acknowledged secret %s lost", name)
		}
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	// The audit log is intact after the crash.
	_, size := openVerified(t, n.dir)
	if size < int64(len(acked)) {
		t.Fatalf("audit has %d entries for %d acknowledged writes", size, len(acked))
	}
	t.Logf("%d acknowledged writes survived kill -9; audit verified at size %d", len(acked), size)
}

// openVerified opens the store of a stopped server's data dir (closed when
// the test ends) and checks that its audit log verifies; it returns the
// store and the log's size.
func openVerified(t *testing.T, dir string) (*store.DB, int64) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Path: filepath.Join(dir, "mayfly.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub, _ := os.ReadFile(filepath.Join(dir, "audit.pub"))
	res, err := audit.Verify(ctx, db, strings.TrimSpace(string(pub)), audit.VerifyOptions{})
	if err != nil || res.FirstBad != -1 {
		t.Fatalf("audit verify after the crash: %+v %v", res, err)
	}
	return db, res.Size
}
