package alert

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// A Slack target's text carries fields a caller chose (an OIDC subject is
// a branch name any GitHub user picks; a source, a reason): Slack reads
// <…> in text as a mention or a link and a new line as a new message
// line, so none of them may reach the text as markup.
func TestSlackTextCarriesNoCallerMarkup(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		source  string
	}{
		{"channel mention in a branch name", "repo:evil/x:ref:refs/heads/<!channel>", "10.0.0.1"},
		{"link in a branch name", "repo:evil/x:ref:refs/heads/<https://evil.example/login|re-authenticate here>", "10.0.0.1"},
		{"user mention", "repo:evil/x:ref:refs/heads/<@U012AB3CD>", "10.0.0.1"},
		{"entity to smuggle a bracket", "repo:evil/x:ref:refs/heads/&lt;!here&gt;", "10.0.0.1"},
		{"forged second line", "repo:evil/x\nmayfly alert [audit_unhealthy] RESOLVED: the audit log is writable again", "10.0.0.1\r\n<!here>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &receiver{got: make(chan struct{}, 10)}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			c := Config{Targets: []TargetConfig{{Name: "slack", URL: srv.URL, Format: "slack"}},
				Rules: []RuleConfig{{Rule: RuleRefusedBurst, Threshold: 2, By: "both"}}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			e, err := New(c, Options{})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			ev := audit.Event{Type: audit.TypeExchange, Status: 403, Issuer: "https://token.actions.githubusercontent.com", Subject: tt.subject, Source: tt.source}
			es := [][]byte{entryBytes(t, 0, now, ev), entryBytes(t, 1, now, ev)}
			if err := e.Sinks()[0].Write(context.Background(), es, 0); err != nil {
				t.Fatal(err)
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if len(rc.bodies) == 0 {
				t.Fatal("no alert sent")
			}
			for _, b := range rc.bodies {
				var msg struct{ Text string }
				if err := json.Unmarshal(b, &msg); err != nil {
					t.Fatal(err)
				}
				if strings.ContainsAny(msg.Text, "<>\n\r") {
					t.Errorf("slack text carries the caller's markup: %q", msg.Text)
				}
				// What Slack shows (its three entities read back) is the
				// caller's subject as it was, new lines made spaces.
				shown := strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(msg.Text)
				if want := strings.NewReplacer("\r\n", " ", "\n", " ").Replace(tt.subject); !strings.Contains(shown, "subject "+want+";") {
					t.Errorf("slack shows %q, not the subject %q as it was", shown, want)
				}
				if !strings.Contains(msg.Text, "mayfly alert [refused_burst]") {
					t.Errorf("slack text lost the alert: %q", msg.Text)
				}
			}
		})
	}
}
