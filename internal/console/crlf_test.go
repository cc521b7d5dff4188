package console

import (
	"net/url"
	"strings"
	"testing"
)

// A browser sends a textarea's line breaks as CRLF (HTML's form
// submission normalizes them so), whatever the text held. The policy in
// force pasted back unchanged must plan as unchanged, with a line diff
// showing no line changed (not every line removed and added again, which
// hides the lines a change does touch), and apply as unchanged.
func TestPolicyFromATextareaPlansAsItReads(t *testing.T) {
	b := newTestBench(t)
	src := string(b.a.Policy().Source)
	crlf := strings.ReplaceAll(src, "\n", "\r\n")
	edited := strings.Replace(crlf, "ttl: 5m", "ttl: 6m", 1)
	tests := []struct {
		name, policy string
		want         []string
		changed      int // lines removed (and as many added)
	}{
		{"unchanged", crlf, []string{"0 change(s)"}, 0},
		{"one line edited", edited, []string{"1 change(s)"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := b.post(t, "/ui/policy/plan", url.Values{"policy": {tt.policy}, CSRFField: {b.auth.csrf}})
			body := w.Body.String()
			if w.Code != 200 {
				t.Fatalf("plan: %d %s", w.Code, body)
			}
			for _, s := range tt.want {
				if !strings.Contains(body, s) {
					t.Errorf("plan lacks %q", s)
				}
			}
			if n := strings.Count(body, `<span class="ddel">`); n != tt.changed {
				t.Errorf("the diff removes %d lines, want %d", n, tt.changed)
			}
			if n := strings.Count(body, `<span class="dadd">`); n != tt.changed {
				t.Errorf("the diff adds %d lines, want %d", n, tt.changed)
			}
			if strings.Contains(body, "\r") {
				t.Error("the plan page carries a CR")
			}
		})
	}
	w := b.post(t, "/ui/policy/apply", url.Values{"policy": {crlf}, "base": {"1"}, CSRFField: {b.auth.csrf}})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "Nothing changed") || b.a.PolicyVersion() != 1 {
		t.Fatalf("apply of the policy in force: %d, version %d: %s", w.Code, b.a.PolicyVersion(), w.Body)
	}
	if strings.Contains(string(b.a.Policy().Source), "\r") {
		t.Error("the policy in force holds a CR")
	}
}
