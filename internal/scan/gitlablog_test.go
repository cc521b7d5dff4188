package scan

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// GitLab Runner 17+ with FF_TIMESTAMPS starts every line of a job log
// with a 32-byte header: an RFC 3339 timestamp, a space, two hex digits
// (the stream), O or E, and a flag: '+' when the line continues the one
// before (the runner flushed a partial line: a write without a newline
// and a pause), else a space. A token written in two pieces that way is
// one token in the job's output, which the masker masked whole; scan
// --stdin of the downloaded log must find it and /v1/leaks revoke it.
func TestScanGitLabContinuedLine(t *testing.T) {
	s := newScanner(t, Options{})
	const h = "2026-12-06T10:00:00.123456Z 00O "
	const cont = "2026-12-06T10:00:00.623456Z 00O+"
	for _, cut := range []int{4, 15, 39} {
		tok := jobToken(t)
		log := h + "$ ./deploy.sh\n" + h + "token: " + tok[:cut] + "\n" + cont + tok[cut:] + "\n" + h + "done\n"
		var found []string
		if err := s.ScanReader(context.Background(), "stdin", strings.NewReader(log), func(f Finding) {
			found = append(found, f.Secret)
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(found, tok) {
			t.Errorf("cut after %d: scan --stdin misses the token (findings %d)", cut, len(found))
		}
		if rep := ParseLeakReport([]byte(log)); !slices.Contains(rep.Tokens, tok) {
			t.Errorf("cut after %d: /v1/leaks would not revoke it (tokens %d)", cut, len(rep.Tokens))
		}
	}
}
