package server

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// Two inits started at once on the same data dir (two replicas of a
// deployment whose start-up runs init on a shared volume): one wins, and
// the loser, refused at the first file the winner made, removes none of
// the winner's files. Before, the loser's clean-up deleted the winner's
// master key, so the data dir the winner reported as initialised held a
// keyring no key could ever open.
func TestConcurrentInitsLeaveTheWinnersFiles(t *testing.T) {
	const inits = 6
	for round := 0; round < 15; round++ {
		dir := filepath.Join(t.TempDir(), "data")
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, inits)
		for i := range inits {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = Init(context.Background(), InitOptions{DataDir: dir})
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of %d inits succeeded, want 1: %v", round, won, inits, errs)
		}
		d := datadir.Dir(dir)
		for _, f := range []string{d.MasterKey(), d.AuditKey(), d.AuditPub(), d.CACert(), d.CAKey(), d.ServerCert(), d.ServerKey(), d.Database(), d.Marker()} {
			if _, err := os.Stat(f); err != nil {
				t.Fatalf("round %d: the winner's %s is gone: %v (the losers: %v)", round, filepath.Base(f), err, errs)
			}
		}
	}
}
