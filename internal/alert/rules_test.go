package alert

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

func allRules(t *testing.T) []RuleConfig {
	t.Helper()
	c := Config{Targets: []TargetConfig{{Name: "a", URL: "https://e.com/h", Format: "slack"}},
		Rules: []RuleConfig{{Rule: RuleLeakRevoked}, {Rule: RuleRefusedBurst, Threshold: 3, Window: time.Minute}, {Rule: RuleBindingMismatch},
			{Rule: RuleMassRevocation, Threshold: 5}, {Rule: RuleAuditUnhealthy}, {Rule: RuleUpstreamFailure}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c.Rules
}

func TestRulesOneEntry(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		ev   audit.Event
		want []string // rules fired
	}{
		{"leak revoked one", audit.Event{Type: audit.TypeLeak, Status: 200, Count: 1}, []string{RuleLeakRevoked}},
		{"leak revoked many", audit.Event{Type: audit.TypeLeak, Status: 200, Count: 7}, []string{RuleLeakRevoked, RuleMassRevocation}},
		{"leak revoked nothing", audit.Event{Type: audit.TypeLeak, Status: 200}, nil},
		{"revoke of one lease", audit.Event{Type: audit.TypeRevoke, Status: 200, Count: 1}, nil},
		{"revoke of a grant's leases", audit.Event{Type: audit.TypeRevoke, Status: 200, Count: 5, Reason: "admin"}, []string{RuleMassRevocation}},
		{"dpop proof missing", audit.Event{Type: audit.TypeGateway, Status: 401, Check: "dpop"}, []string{RuleBindingMismatch}},
		{"dpop check unavailable", audit.Event{Type: audit.TypeGateway, Status: 503, Check: "dpop"}, nil},
		{"source-bound from elsewhere", audit.Event{Type: audit.TypeGateway, Status: 403, Check: "source", Detail: map[string]any{"reason": "source_not_bound"}}, []string{RuleBindingMismatch}},
		{"source not in cidrs", audit.Event{Type: audit.TypeGateway, Status: 403, Check: "source", Detail: map[string]any{"reason": "source_not_allowed"}}, nil},
		{"scope refusal", audit.Event{Type: audit.TypeGateway, Status: 403, Check: "scope"}, nil},
		{"credential revoke failed", audit.Event{Type: audit.TypeCredentialRevoke, Status: 502, Upstream: "db"}, []string{RuleUpstreamFailure}},
		{"credential revoked", audit.Event{Type: audit.TypeCredentialRevoke, Status: 200}, nil},
		{"credential mint failed: upstream down", audit.Event{Type: audit.TypeCredentialMint, Status: 503, Upstream: "github"}, []string{RuleUpstreamFailure}},
		{"credential mint failed: GitHub refusing", audit.Event{Type: audit.TypeCredentialMint, Status: 502, Upstream: "github"}, []string{RuleUpstreamFailure}},
		{"credential mint failed: admin DSN misconfigured", audit.Event{Type: audit.TypeCredentialMint, Status: 500, Upstream: "db"}, []string{RuleUpstreamFailure}},
		{"credential minted", audit.Event{Type: audit.TypeCredentialMint, Status: 200, Upstream: "db"}, nil},
		{"credential renew failed", audit.Event{Type: audit.TypeCredentialRenew, Status: 502, Upstream: "db"}, []string{RuleUpstreamFailure}},
		{"credential renewed", audit.Event{Type: audit.TypeCredentialRenew, Status: 200, Upstream: "db"}, nil},
		{"rotation failed", audit.Event{Type: "secret.rotate", Status: 502}, []string{RuleUpstreamFailure}},
		{"rotation done", audit.Event{Type: "secret.rotate", Status: 200}, nil},
		{"one refused exchange", audit.Event{Type: audit.TypeExchange, Status: 403, Subject: "s", Source: "10.0.0.1"}, nil},
		{"granted exchange", audit.Event{Type: audit.TypeExchange, Status: 200}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRules(allRules(t))
			e := &audit.Entry{Index: int64(100 + i), Time: t0, Event: tt.ev}
			got := r.eval(e)
			if len(got) != len(tt.want) {
				t.Fatalf("fired %v, want %v", got, tt.want)
			}
			for j, a := range got {
				if a.Rule != tt.want[j] {
					t.Fatalf("fired %s, want %s", a.Rule, tt.want[j])
				}
				if a.AuditIndex == nil || *a.AuditIndex != e.Index {
					t.Fatalf("alert carries audit index %v, want %d", a.AuditIndex, e.Index)
				}
			}
		})
	}
}

func TestRulesDisabledStaySilent(t *testing.T) {
	r := newRules([]RuleConfig{{Rule: RuleAuditUnhealthy}})
	for _, ev := range []audit.Event{{Type: audit.TypeLeak, Status: 200, Count: 50}, {Type: audit.TypeGateway, Status: 401, Check: "dpop"},
		{Type: audit.TypeCredentialRevoke, Status: 502}, {Type: audit.TypeRevoke, Status: 200, Count: 500}} {
		if got := r.eval(&audit.Entry{Time: time.Unix(1, 0), Event: ev}); len(got) != 0 {
			t.Fatalf("%s fired %v with its rule off", ev.Type, got)
		}
	}
}

func TestRefusedBurst(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	refused := func(sub, src string, at time.Duration) *audit.Entry {
		return &audit.Entry{Time: t0.Add(at), Event: audit.Event{Type: audit.TypeExchange, Status: 403, Issuer: "gh", Subject: sub, Source: src}}
	}
	tests := []struct {
		name    string
		by      string
		entries []*audit.Entry
		want    []int // positions of entries that fire
	}{
		{"three from one identity within the window", "identity", []*audit.Entry{refused("a", "1.1.1.1", 0), refused("a", "2.2.2.2", 10*time.Second), refused("a", "3.3.3.3", 20*time.Second)}, []int{2}},
		{"spread beyond the window", "identity", []*audit.Entry{refused("a", "", 0), refused("a", "", 40*time.Second), refused("a", "", 80*time.Second)}, nil},
		{"different identities", "identity", []*audit.Entry{refused("a", "", 0), refused("b", "", time.Second), refused("c", "", 2*time.Second)}, nil},
		{"one address, many identities", "source", []*audit.Entry{refused("a", "9.9.9.9", 0), refused("b", "9.9.9.9", time.Second), refused("", "9.9.9.9", 2*time.Second)}, []int{2}},
		{"once per window", "source", []*audit.Entry{refused("", "9.9.9.9", 0), refused("", "9.9.9.9", 1), refused("", "9.9.9.9", 2), refused("", "9.9.9.9", 3), refused("", "9.9.9.9", 4)}, []int{2}},
		{"again after the window", "source", []*audit.Entry{refused("", "9.9.9.9", 0), refused("", "9.9.9.9", 1), refused("", "9.9.9.9", 2),
			refused("", "9.9.9.9", 70*time.Second), refused("", "9.9.9.9", 71*time.Second), refused("", "9.9.9.9", 72*time.Second)}, []int{2, 5}},
		{"both: identity and address each", "both", []*audit.Entry{refused("a", "9.9.9.9", 0), refused("a", "9.9.9.9", 1), refused("a", "9.9.9.9", 2)}, []int{2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRules([]RuleConfig{{Rule: RuleRefusedBurst, Threshold: 3, Window: time.Minute, By: tt.by}})
			var got []int
			for i, e := range tt.entries {
				e.Index = int64(i)
				for _, a := range r.eval(e) {
					if *a.AuditIndex != int64(i) {
						t.Fatalf("alert refers to %d, want the entry that crossed the threshold (%d)", *a.AuditIndex, i)
					}
					got = append(got, i)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("fired at %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBurstStateBounded(t *testing.T) {
	r := newRules([]RuleConfig{{Rule: RuleRefusedBurst, Threshold: 3, Window: time.Minute, By: "source"}})
	t0 := time.Unix(1_800_000_000, 0)
	for i := range maxKeys + 50 {
		r.eval(&audit.Entry{Time: t0, Event: audit.Event{Type: audit.TypeExchange, Status: 403, Source: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)}})
	}
	if len(r.bursts) > maxKeys {
		t.Fatalf("%d burst keys kept, bound is %d", len(r.bursts), maxKeys)
	}
	// Once the window has passed, old keys make room again.
	r.eval(&audit.Entry{Time: t0.Add(2 * time.Minute), Event: audit.Event{Type: audit.TypeExchange, Status: 403, Source: "192.0.2.1"}})
	if _, ok := r.bursts["source 192.0.2.1"]; !ok {
		t.Fatal("a new key was not taken after the old ones expired")
	}
}

// A failing upstream alerts once per window for each upstream (or secret)
// and kind of step, however often it fails: a minted credential's upstream
// that is down fails every exchange and every revocation attempt, and an
// alert for each buried the one that mattered (and a target's queue).
func TestUpstreamFailureOncePerWindow(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	failed := func(typ, up, secret string, at time.Duration) *audit.Entry {
		return &audit.Entry{Time: t0.Add(at), Event: audit.Event{Type: typ, Status: 503, Upstream: up, Secret: secret}}
	}
	hundred := func(typ, up string, every time.Duration) []*audit.Entry {
		var out []*audit.Entry
		for i := range 100 {
			out = append(out, failed(typ, up, "", time.Duration(i)*every))
		}
		return out
	}
	tests := []struct {
		name    string
		window  time.Duration // 0: the default
		entries []*audit.Entry
		want    int // alerts
	}{
		{"100 failed mints in a row", 0, hundred(audit.TypeCredentialMint, "github", 100*time.Millisecond), 1},
		{"100 failed renewals in a row", 0, hundred(audit.TypeCredentialRenew, "db", 100*time.Millisecond), 1},
		{"100 failed revocations in a row", 0, hundred(audit.TypeCredentialRevoke, "db", 100*time.Millisecond), 1},
		{"100 failed mints, one every 20s, 1m window", time.Minute, hundred(audit.TypeCredentialMint, "github", 20*time.Second), 34},
		{"100 failed mints, one every 20s, 10m window", 10 * time.Minute, hundred(audit.TypeCredentialMint, "github", 20*time.Second), 4},
		{"two upstreams", 0, append(hundred(audit.TypeCredentialMint, "github", time.Millisecond), hundred(audit.TypeCredentialMint, "db", time.Millisecond)...), 2},
		{"minting and revoking one upstream", 0, append(hundred(audit.TypeCredentialMint, "db", time.Millisecond), hundred(audit.TypeCredentialRevoke, "db", time.Millisecond)...), 2},
		{"two secrets' rotations", 0, []*audit.Entry{failed("secret.rotate", "", "a", 0), failed("secret.rotate", "", "a", 1), failed("secret.rotate", "", "b", 2)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Targets: []TargetConfig{{Name: "a", URL: "https://e.com/h", Format: "slack"}}, Rules: []RuleConfig{{Rule: RuleUpstreamFailure, Window: tt.window}}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			r := newRules(c.Rules)
			got := 0
			for i, e := range tt.entries {
				e.Index = int64(i)
				got += len(r.eval(e))
			}
			if got != tt.want {
				t.Fatalf("%d alerts, want %d", got, tt.want)
			}
		})
	}
}

// Refused exchanges from many addresses fill the burst state; an
// upstream's failure still alerts.
func TestUpstreamFailureNotCrowdedOut(t *testing.T) {
	r := newRules(allRules(t))
	t0 := time.Unix(1_800_000_000, 0)
	for i := range maxKeys + 50 {
		r.eval(&audit.Entry{Time: t0, Event: audit.Event{Type: audit.TypeExchange, Status: 403, Source: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)}})
	}
	if got := r.eval(&audit.Entry{Time: t0, Event: audit.Event{Type: audit.TypeCredentialMint, Status: 503, Upstream: "github"}}); len(got) != 1 {
		t.Fatalf("a failing upstream raised %d alerts with the burst state full, want 1", len(got))
	}
}

// Refusals sprayed from more addresses (an IPv6 prefix holds billions)
// than the burst state holds within a window filled it, and every burst
// after that, a brute force from one new address included, went
// unalerted: new keys waited, silently, for old ones to expire. A full
// state is now itself alerted, once per window, as a full upstream
// failure state is.
func TestBurstSprayStillAlerts(t *testing.T) {
	for _, by := range []string{"source", "identity", "both"} {
		t.Run(by, func(t *testing.T) {
			r := newRules([]RuleConfig{{Rule: RuleRefusedBurst, Threshold: 3, Window: time.Minute, By: by}})
			t0 := time.Unix(1_800_000_000, 0)
			var alerts []Alert
			refuse := func(at time.Duration, sub, src string) {
				alerts = append(alerts, r.eval(&audit.Entry{Time: t0.Add(at), Event: audit.Event{Type: audit.TypeExchange, Status: 403, Issuer: "gh", Subject: sub, Source: src}})...)
			}
			for i := range maxKeys + 10 {
				ip := fmt.Sprintf("2001:db8::%x", i)
				refuse(time.Duration(i)*time.Millisecond, "repo:spray/"+ip, ip)
			}
			for range 5 { // the brute force the spray was to hide
				refuse(20*time.Second, "repo:acme/app:ref:refs/heads/main", "192.0.2.9")
			}
			if len(alerts) != 1 {
				t.Fatalf("%d alerts, want 1 (the state is full) within the window: %+v", len(alerts), alerts)
			}
			if a := alerts[0]; a.Rule != RuleRefusedBurst || !strings.Contains(a.Summary, "too many") {
				t.Fatalf("alert %+v does not say the refusals were too many to count", a)
			}
			// The next window alerts again if the spray goes on.
			refuse(2*time.Minute, "repo:spray/x", "2001:db8::ffff:1")
			for i := range maxKeys + 10 {
				ip := fmt.Sprintf("2001:db8::1:%x", i)
				refuse(2*time.Minute+time.Duration(i)*time.Millisecond, "repo:spray/"+ip, ip)
			}
			if len(alerts) != 2 {
				t.Fatalf("%d alerts after a second window of spray, want 2", len(alerts))
			}
		})
	}
}

// While the burst state is full, each refusal from a new identity or
// address swept all 10,000 keys for expired ones: a spray of refusals cost
// the alert sink that sweep each (minutes of CPU for one window of it, the
// target's alerts held back meanwhile). Sweeps are now at most 16 a window.
func TestFullBurstStateSweepsRarely(t *testing.T) {
	r := newRules([]RuleConfig{{Rule: RuleRefusedBurst, Threshold: 3, Window: time.Minute, By: "both"}})
	t0 := time.Unix(1_800_000_000, 0)
	const spray = 3 * maxKeys // over one window
	for i := range spray {
		ip := fmt.Sprintf("2001:db8::%x", i)
		r.eval(&audit.Entry{Time: t0.Add(time.Duration(i) * time.Minute / spray), Event: audit.Event{Type: audit.TypeExchange, Status: 403, Issuer: "gh", Subject: "repo:spray/" + ip, Source: ip}})
	}
	if r.scans > 17 {
		t.Fatalf("%d sweeps of the full burst state within one window, want at most 17", r.scans)
	}
	// Keys still expire: after the window a new key is counted again.
	r.eval(&audit.Entry{Time: t0.Add(3 * time.Minute), Event: audit.Event{Type: audit.TypeExchange, Status: 403, Source: "192.0.2.1"}})
	if _, ok := r.bursts["source 192.0.2.1"]; !ok {
		t.Fatal("a new key was not taken after the old ones expired")
	}
}

// Receivers dedupe deliveries by alert id (a retry carries the same one),
// and one entry can raise refused_burst twice (by both: its identity and
// its address; or a burst and a full state): the two had one id, so a
// receiver that deduped kept only the first, and the address's burst was
// never seen. Each alert of an entry now has an id of its own.
func TestOneEntryAlertsHaveDistinctIDs(t *testing.T) {
	r := newRules([]RuleConfig{{Rule: RuleRefusedBurst, Threshold: 2, Window: time.Minute, By: "both"}})
	t0 := time.Unix(1_800_000_000, 0)
	var alerts []Alert
	for i := range 2 {
		alerts = append(alerts, r.eval(&audit.Entry{Index: int64(i), Time: t0, Event: audit.Event{Type: audit.TypeExchange, Status: 403, Issuer: "gh", Subject: "a", Source: "192.0.2.1"}})...)
	}
	if len(alerts) != 2 {
		t.Fatalf("%d alerts, want 2 (identity and address)", len(alerts))
	}
	if alerts[0].ID == alerts[1].ID {
		t.Fatalf("both alerts of entry 1 have id %s", alerts[0].ID)
	}
	if alerts[0].ID != "refused_burst-1" {
		t.Fatalf("first alert's id %s, want refused_burst-1 (as before)", alerts[0].ID)
	}
}
