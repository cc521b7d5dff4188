package alert

import (
	"fmt"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// Alert is what a target receives (the json format's body).
type Alert struct {
	ID      string    `json:"id"` // stable per alert: receivers dedupe retries by it
	Rule    string    `json:"rule"`
	Status  string    `json:"status"` // firing | resolved
	Time    time.Time `json:"time"`
	Summary string    `json:"summary"`
	Server  string    `json:"server,omitempty"`
	// AuditIndex is the audit entry the alert refers to (absent for
	// audit_unhealthy: no entry can be written then).
	AuditIndex *int64 `json:"audit_index,omitempty"`
	Event      *Event `json:"event,omitempty"`
}

// Event is the part of an audit entry an alert repeats: identifying
// fields only. Never the entry's detail, hint or path, which a caller
// fills in.
type Event struct {
	Type       string   `json:"type"`
	Lease      string   `json:"lease,omitempty"`
	Leases     []string `json:"leases,omitempty"`
	Issuer     string   `json:"issuer,omitempty"`
	Subject    string   `json:"subject,omitempty"`
	Repository string   `json:"repository,omitempty"`
	Job        string   `json:"job,omitempty"`
	Grant      string   `json:"grant,omitempty"`
	Upstream   string   `json:"upstream,omitempty"`
	Secret     string   `json:"secret,omitempty"` // a stored secret's name, never its value
	Source     string   `json:"source,omitempty"`
	Status     int      `json:"status,omitempty"`
	Check      string   `json:"check,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Count      int64    `json:"count,omitempty"`
}

func eventOf(e *audit.Entry) *Event {
	ev := &Event{Type: e.Type, Lease: e.Lease, Issuer: e.Issuer, Subject: e.Subject, Repository: e.Repository, Job: e.Job,
		Grant: e.Grant, Upstream: e.Upstream, Secret: e.Secret, Source: e.Source, Status: e.Status, Check: e.Check, Reason: clip(e.Reason, 200), Count: e.Count}
	if ids, ok := e.Detail["leases"].([]any); ok {
		for _, id := range ids {
			if s, ok := id.(string); ok && len(ev.Leases) < 50 {
				ev.Leases = append(ev.Leases, clip(s, 64))
			}
		}
	}
	return ev
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// rules evaluates entries. It is used by one goroutine at a time (the
// sink's forwarder); burst state is bounded by maxKeys.
type rules struct {
	on     map[string]RuleConfig
	bursts map[string]*burst
	// failing holds when upstream_failure last alerted, by what failed:
	// apart from bursts, so that refusals from many addresses never
	// crowd an upstream's failure out.
	failing map[string]time.Time
	// full is when a full burst state was last alerted (zero: never).
	full time.Time
	// nextExpire is the earliest time a full burst state is scanned for
	// expired keys again; scans counts the scans.
	nextExpire time.Time
	scans      int
}

const maxKeys = 10000

type burst struct {
	times   []time.Time // refusals within the window, oldest first
	alerted time.Time   // last alert for this key (zero: none)
}

func newRules(cfg []RuleConfig) *rules {
	r := &rules{on: map[string]RuleConfig{}, bursts: map[string]*burst{}, failing: map[string]time.Time{}}
	for _, c := range cfg {
		r.on[c.Rule] = c
	}
	return r
}

func (r *rules) enabled(name string) (RuleConfig, bool) {
	c, ok := r.on[name]
	return c, ok
}

// eval returns the alerts entry e raises.
func (r *rules) eval(e *audit.Entry) []Alert {
	var out []Alert
	fire := func(rule, summary string) {
		idx := e.Index
		id := fmt.Sprintf("%s-%d", rule, e.Index)
		// Receivers dedupe by id: a second alert of one rule for this
		// entry (refused_burst by identity, then by address) needs its own.
		n := 0
		for _, a := range out {
			if a.Rule == rule {
				n++
			}
		}
		if n > 0 {
			id += fmt.Sprintf("-%d", n+1)
		}
		out = append(out, Alert{ID: id, Rule: rule, Status: "firing", Time: e.Time, Summary: summary, AuditIndex: &idx, Event: eventOf(e)})
	}
	switch {
	case e.Type == audit.TypeLeak && e.Status == 200 && e.Count > 0:
		if _, ok := r.enabled(RuleLeakRevoked); ok {
			fire(RuleLeakRevoked, fmt.Sprintf("a leak report revoked %d token(s)", e.Count))
		}
		if c, ok := r.enabled(RuleMassRevocation); ok && e.Count >= int64(c.Threshold) {
			fire(RuleMassRevocation, fmt.Sprintf("a leak report revoked %d tokens at once", e.Count))
		}
	case e.Type == audit.TypeRevoke && e.Status == 200:
		if c, ok := r.enabled(RuleMassRevocation); ok && e.Count >= int64(c.Threshold) {
			fire(RuleMassRevocation, fmt.Sprintf("%d leases revoked at once (%s)", e.Count, clip(e.Reason+" "+e.Admin, 100)))
		}
	case e.Type == audit.TypeExchange && e.Status >= 400 && e.Status < 500:
		if c, ok := r.enabled(RuleRefusedBurst); ok {
			full := func() {
				fire(RuleRefusedBurst, fmt.Sprintf("refused exchanges from too many identities and addresses within %s to count each (more than %d): a spray from many addresses? Bursts among them are not alerted one by one; further such alerts within %s are not sent",
					c.Window, maxKeys, c.Window))
			}
			if c.By != "source" && e.Subject != "" {
				if n, hit := r.count(c, "identity "+e.Issuer+" "+e.Subject, e.Time); hit && n < 0 {
					full()
				} else if hit {
					fire(RuleRefusedBurst, fmt.Sprintf("%d refused exchanges within %s for identity %s", n, c.Window, clip(e.Subject, 200)))
				}
			}
			if c.By != "identity" && e.Source != "" {
				if n, hit := r.count(c, "source "+e.Source, e.Time); hit && n < 0 {
					full()
				} else if hit {
					fire(RuleRefusedBurst, fmt.Sprintf("%d refused exchanges within %s from %s", n, c.Window, e.Source))
				}
			}
		}
	case e.Type == audit.TypeGateway && bindingRefused(e):
		if _, ok := r.enabled(RuleBindingMismatch); ok {
			fire(RuleBindingMismatch, "a bound token was presented "+bindingWords(e))
		}
	case upstreamFailed(e):
		if c, ok := r.enabled(RuleUpstreamFailure); ok {
			what := "upstream " + e.Upstream
			if e.Secret != "" {
				what = "secret " + e.Secret
			}
			// An upstream that is down fails every exchange and every
			// retry: one alert per window says so.
			if r.firstIn(c.Window, e.Type+" "+what, e.Time) {
				fire(RuleUpstreamFailure, fmt.Sprintf("%s failed (%s); further failures within %s are not alerted", e.Type, what, c.Window))
			}
		}
	}
	return out
}

// bindingRefused: a DPoP-bound token without a valid proof of its key, or
// a source-bound token from another address.
func bindingRefused(e *audit.Entry) bool {
	if e.Check == "dpop" && e.Status == 401 {
		return true
	}
	code, _ := e.Detail["reason"].(string)
	return code == "source_not_bound"
}

func bindingWords(e *audit.Entry) string {
	if e.Check == "dpop" {
		return "without a valid proof of its key"
	}
	return "from an address other than the one it is bound to"
}

// upstreamFailed: a failed creation, renewal or revocation of a minted
// upstream credential, or a failed rotation (any *.rotate entry), with a
// 5xx status.
func upstreamFailed(e *audit.Entry) bool {
	if e.Status < 500 {
		return false
	}
	switch e.Type {
	case audit.TypeCredentialMint, audit.TypeCredentialRenew, audit.TypeCredentialRevoke:
		return true
	}
	return strings.HasSuffix(e.Type, ".rotate") || strings.Contains(e.Type, "rotation")
}

// firstIn reports whether key has not alerted within window before t,
// and if so records t. Its state is bounded by maxKeys; when it is full of
// keys seen within the window, it alerts rather than stay silent.
func (r *rules) firstIn(window time.Duration, key string, t time.Time) bool {
	if last, ok := r.failing[key]; ok && t.Sub(last) < window {
		return false
	}
	if _, ok := r.failing[key]; !ok && len(r.failing) >= maxKeys {
		for k, last := range r.failing {
			if t.Sub(last) >= window {
				delete(r.failing, k)
			}
		}
		if len(r.failing) >= maxKeys {
			return true
		}
	}
	r.failing[key] = t
	return true
}

// count records a refusal for key at t and reports the count within the
// window and whether it crossed the threshold (once per window per key).
// When the state is full of keys refused within the window, a new key is
// not counted, and count reports -1, true once per window: refusals from
// that many identities or addresses are themselves what to alert on, and
// silence would hide a burst among them.
func (r *rules) count(c RuleConfig, key string, t time.Time) (int, bool) {
	b := r.bursts[key]
	if b == nil {
		if len(r.bursts) >= maxKeys && !t.Before(r.nextExpire) {
			// A scan of every key: at most 16 a window, however many
			// new keys arrive while the state is full (one per refusal
			// was a sweep of 10,000 keys for each refusal of a spray).
			r.expire(t, c.Window)
			r.nextExpire = t.Add(c.Window / 16)
		}
		if len(r.bursts) >= maxKeys {
			if r.full.IsZero() || t.Sub(r.full) >= c.Window {
				r.full = t
				return -1, true
			}
			return 0, false
		}
		b = &burst{}
		r.bursts[key] = b
	}
	cut := t.Add(-c.Window)
	i := 0
	for i < len(b.times) && !b.times[i].After(cut) {
		i++
	}
	b.times = append(b.times[i:], t)
	if len(b.times) > c.Threshold {
		b.times = b.times[len(b.times)-c.Threshold:]
	}
	if len(b.times) >= c.Threshold && (b.alerted.IsZero() || t.Sub(b.alerted) >= c.Window) {
		b.alerted = t
		return len(b.times), true
	}
	return len(b.times), false
}

func (r *rules) expire(now time.Time, window time.Duration) {
	r.scans++
	for k, b := range r.bursts {
		if len(b.times) == 0 || now.Sub(b.times[len(b.times)-1]) >= window {
			delete(r.bursts, k)
		}
	}
}
