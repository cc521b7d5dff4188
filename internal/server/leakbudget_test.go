package server

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// A flood of leak reports from many addresses, once limits.leak_token_rate
// is spent, is answered 429 (with a Retry-After) or 413 and changes
// nothing: no token it names is revoked and nothing is audited for it;
// the report that spent the budget was worked on whole.
func TestLeakFloodIsRefusedAndChangesNothing(t *testing.T) {
	madeUp := func(n int) string {
		var b strings.Builder
		for range n {
			tok, _ := token.New(token.Job)
			b.WriteString(tok + "\n")
		}
		return b.String()
	}
	for _, tc := range []struct {
		name   string
		rate   float64                  // limits.leak_token_rate
		report func(live string) string // a report naming live
		want   int
	}{
		{"one token", 0.001, func(live string) string { return "log: " + live + "\n" }, 429},
		{"at the cap", 0.001, func(live string) string { return live + "\n" + madeUp(49) }, 429},
		{"past the cap", 0.001, func(live string) string { return live + "\n" + madeUp(50) }, 429},
		{"github form", 0.001, func(live string) string { return `[{"token":"` + live + `","type":"mayfly","url":"https://x"}]` }, 429},
		{"past the cap, budget left", 1e6, func(live string) string { return live + "\n" + madeUp(50) }, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// At rate 0.001 the budget refills one token in 1000 s:
			// nothing refills during the test. Each address may send as
			// much as it likes: a flood from many addresses.
			h := newHarness(t, Config{Limits: ConfigLimits{LeakTokenRate: tc.rate, MaxLeakTokens: 50, LeakRate: 1e6, LeakQueue: 64}})
			exchange := func() string {
				return h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "deploy"), 200)["access_token"].(string)
			}
			spender, bystander := exchange(), exchange()
			// Allowed: the first report spends the whole budget (at rate
			// 0.001 its capacity is one report at the cap, 50) and is
			// worked on whole.
			out := h.do("POST", "/v1/leaks", "", "text/plain", spender+"\n"+madeUp(49), 200)
			if len(out["revoked"].([]any)) != 1 || out["unknown"].(float64) != 49 {
				t.Fatalf("the report within the budget: %v", out)
			}
			entries := h.auditCount("leak.report")
			// The flood: every report names the bystander.
			var wg sync.WaitGroup
			var mu sync.Mutex
			codes := map[int]int{}
			for range 32 {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", h.http.URL+"/v1/leaks", strings.NewReader(tc.report(bystander)))
					req.Header.Set("Content-Type", "text/plain")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
					if resp.StatusCode == 429 && (retry < 1 || !strings.Contains(string(body), `"rate_limited"`)) {
						t.Errorf("429 without a Retry-After or its error code: %q %s", resp.Header.Get("Retry-After"), body)
					}
					mu.Lock()
					codes[resp.StatusCode]++
					mu.Unlock()
				})
			}
			wg.Wait()
			if codes[tc.want] != 32 {
				t.Fatalf("flood answered %v, want all %d", codes, tc.want)
			}
			if active := h.do("POST", "/v1/introspect", h.admin, form, "token="+bystander, 200)["active"]; active != true {
				t.Fatal("a refused report revoked a token")
			}
			if n := h.auditCount("leak.report"); n != entries {
				t.Fatalf("refused reports left %d audit entries", n-entries)
			}
			if active := h.do("POST", "/v1/introspect", h.admin, form, "token="+spender, 200)["active"]; active != false {
				t.Fatal("the report within the budget did not revoke its token")
			}
		})
	}
}

// auditCount is the number of audit entries of type typ.
func (h *harness) auditCount(typ string) int {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.http.URL+"/v1/audit/entries?start=0&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		h.t.Fatalf("audit entries: %d %s", resp.StatusCode, b)
	}
	return strings.Count(string(b), `"type":"`+typ+`"`)
}
