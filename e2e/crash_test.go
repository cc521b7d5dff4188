package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	// Kill once writes are flowing: after 200 acknowledged (a loaded
	// machine gets there later, not never), with writes still in flight.
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		k := len(acked)
		mu.Unlock()
		if k >= 200 {
			break
		}
	}
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

// Issue 5: when the store cannot write (a full disk), requests that need an
// audit entry get 503 without reaching the upstream and /readyz turns
// unready; once there is room again both come back by themselves.
func TestDiskFullFailsClosed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	var reached atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(up.Close)
	n := initDirAt(t, filepath.Join(mnt, "data"))
	n.start(t)
	tok, _ := n.gatewayJob(t, "api", up.URL, "api-upstream-credential-0123456789", "calls", `
      - methods: [GET]
        paths: ["/r/**"]
`)
	c := n.client(t)
	call := func(path string) int {
		r, _ := http.NewRequest("GET", n.url+path, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call("/gw/api/r/before"); code != 200 {
		t.Fatalf("before: %d", code)
	}

	// Fill the disk.
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			break
		}
	}
	filler.Close()
	// The WAL may still have room in pages it already holds: go on until
	// a write needs a new one.
	failed := false
	for i := 0; i < 5000 && !failed; i++ {
		before := reached.Load()
		switch code := call(fmt.Sprintf("/gw/api/r/full-%d", i)); code {
		case 200:
		case 503:
			if reached.Load() != before {
				t.Fatal("a request answered 503 reached the upstream")
			}
			failed = true
		default:
			t.Fatalf("disk full: status %d", code)
		}
	}
	if !failed {
		t.Fatal("no request failed with the disk full")
	}
	if code, body := n.req(t, c, "GET", "/readyz", ""); code != 503 {
		t.Fatalf("/readyz with the disk full: %d %s", code, body)
	}
	before := reached.Load()
	if code := call("/gw/api/r/still-full"); code != 503 || reached.Load() != before {
		t.Fatalf("with the disk still full: %d", code)
	}

	// Room again: ready and serving without a restart.
	os.Remove(filepath.Join(mnt, "filler"))
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := n.req(t, c, "GET", "/readyz", "")
		if code == 200 && call("/gw/api/r/after") == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back after the disk had room again: /readyz %d", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	n.cmd.Process.Signal(os.Interrupt)
	n.cmd.Wait()
	_, size := openVerified(t, n.dir)
	t.Logf("audit verified at size %d after the disk filled and emptied", size)
}
