package gateway

import (
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// An HTTP/1 answer of declared length reaches the client whole before the
// outcome entry is written, and that entry is still written in full.
func TestAnswerBeforeOutcome(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/gw/api/echo-fixed", 200},            // the upstream declares the length
		{"GET", "/gw/api/repos/acme/app/issues", 200}, // net/http declares it upstream
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			h := newHarness(t)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			gate := make(chan struct{})
			h.aud.finishGate.Store(&gate)
			type answer struct {
				status int
				body   string
			}
			got := make(chan answer, 1)
			go func() {
				resp, body := h.raw(tc.method, tc.path, bearer(tok))
				got <- answer{resp.StatusCode, body}
			}()
			var a answer
			select {
			case a = <-got:
			case <-time.After(10 * time.Second):
				close(gate)
				t.Fatal("the answer waited for the outcome entry")
			}
			close(gate)
			if a.status != tc.status {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			es := h.waitEntries(2)
			if len(es) != 2 || es[1].Type != TypeResponse || es[1].Status != tc.status || es[1].BytesOut != int64(len(a.body)) {
				t.Fatalf("entries %+v", es)
			}
		})
	}
}
