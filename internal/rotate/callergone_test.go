package rotate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// An on-demand rotation, once started, runs to its end whatever its caller
// does (an HTTP client that goes away, a CLI whose timeout passes, Ctrl-C):
// a command rotator changes the credential upstream before it prints the
// new value, and cutting it off there lost the only copy of that value,
// leaving stored a value the upstream no longer takes. The rotator's own
// timeout still bounds it.
func TestRotationOutlivesItsCaller(t *testing.T) {
	// The rotator "applies" the new value upstream (the file), takes a
	// moment, then prints it.
	rotator := script(t, `read v; n="new-$v"; printf '%s' "$n" > "$(dirname "$0")/upstream"; sleep 1; printf '%s' "$n"`)
	upstream := filepath.Join(filepath.Dir(rotator), "upstream")
	tests := []struct {
		name   string
		caller func() (context.Context, context.CancelFunc)
		goes   bool // the test cancels the caller once the rotator applied its value
	}{
		{"the caller goes away", func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }, true},
		{"the caller's deadline passes", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 300*time.Millisecond)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(upstream)
			r := newRig(t, storetest.SQLite(t), map[string][]string{"x": {rotator}}, key(t))
			old := string(secretValue("old-"))
			r.put(t, "api", []byte(old), `{"every":"1h","via":{"command":"x"}}`)
			cctx, cancel := tt.caller()
			defer cancel()
			if tt.goes {
				go func() {
					for {
						if _, err := os.Stat(upstream); err == nil {
							cancel()
							return
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			res, err := r.m.Rotate(cctx, "api", "alice", "127.0.0.1")
			applied, rerr := os.ReadFile(upstream)
			if rerr != nil {
				t.Fatalf("the rotator never applied a value: %v", rerr)
			}
			if err != nil {
				t.Fatalf("rotate = %v: the rotator changed the upstream, and its new value was dropped", err)
			}
			if got := r.value(t, "api"); got != string(applied) || res.Version != 2 {
				t.Fatalf("stored v%d is not the value the upstream now takes", res.Version)
			}
		})
	}
}
