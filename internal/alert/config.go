// Package alert owns alert rule evaluation and delivery: it reads audit
// entries (each target as its own audit-log sink, with its own cursor, so
// one target's retries never delay another's alerts) and the audit log's
// health, matches them against the configured rules, and delivers each
// alert to webhooks at least once, with retries and exponential backoff.
// A sink's cursor moves past an entry only once its alerts are settled;
// health alerts go through a bounded queue per target that never blocks
// the caller (a full queue drops, counted and logged).
//
// It never decides policy and never revokes anything; it never reads a
// secret's value beyond its own HMAC key (handed to it as bytes), and no
// alert carries a token, secret or session value: alerts are built from a
// fixed list of an entry's identifying fields, never its detail.
package alert

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Rule names.
const (
	RuleLeakRevoked     = "leak_revoked"     // a leak report that revoked something
	RuleRefusedBurst    = "refused_burst"    // many refused exchanges for one identity or address
	RuleBindingMismatch = "binding_mismatch" // a key-bound token without its key, or a source-bound one from elsewhere
	RuleMassRevocation  = "mass_revocation"  // many leases revoked at once
	RuleAuditUnhealthy  = "audit_unhealthy"  // the audit log failing or unready
	RuleUpstreamFailure = "upstream_failure" // a rotation, or a minted credential's creation, renewal or revocation, failing
)

var ruleNames = []string{RuleLeakRevoked, RuleRefusedBurst, RuleBindingMismatch, RuleMassRevocation, RuleAuditUnhealthy, RuleUpstreamFailure}

// Upper bounds of the alerts section, far past what a deployment needs:
// a backoff of centuries holds a target's later alerts for ever (and past
// ~234 years wraps negative, and the next retry panics), a health interval
// that long never reads the log's health, and each target's queue is
// allocated whole at start.
const (
	MaxWait  = 24 * time.Hour // initial_backoff, max_backoff, health_interval
	MaxQueue = 1 << 16
)

// Config is the server config's alerts section.
type Config struct {
	Targets []TargetConfig `yaml:"targets"`
	// Rules enabled; none listed enables every rule with its defaults.
	Rules          []RuleConfig  `yaml:"rules"`
	Queue          int           `yaml:"queue"`           // alerts waiting per target (default 1000)
	MaxAttempts    int           `yaml:"max_attempts"`    // per alert and target (default 10)
	InitialBackoff time.Duration `yaml:"initial_backoff"` // wait after the first failure (default 1s)
	MaxBackoff     time.Duration `yaml:"max_backoff"`     // longest wait (default 5m)
	Timeout        time.Duration `yaml:"timeout"`         // one delivery attempt (default 10s)
	// MaxAge: entries already older than this when the engine started
	// (the log's history at first start) raise no alert; entries logged
	// since do, however late they are read (default 10m).
	MaxAge         time.Duration `yaml:"max_age"`
	HealthInterval time.Duration `yaml:"health_interval"` // how often the audit log's health is read (default 5s)
}

// TargetConfig is one webhook.
type TargetConfig struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"` // never logged: a Slack webhook URL is itself a secret
	// Format: "slack" ({"text": ...}) or "json" (the whole alert, signed).
	Format string `yaml:"format"`
	// The HMAC-SHA256 key signing the body (json format; optional for
	// slack): a file, or the name of a stored secret. Never logged.
	HMACKeyFile   string `yaml:"hmac_key_file"`
	HMACKeySecret string `yaml:"hmac_key_secret"`
	// AllowHTTP permits an http:// URL off loopback (alerts then cross the
	// network in clear).
	AllowHTTP bool `yaml:"allow_http"`
	// Rules limits the target to these rules (default: all enabled).
	Rules []string `yaml:"rules"`
}

// RuleConfig enables one rule.
type RuleConfig struct {
	Rule      string `yaml:"rule"`
	Threshold int    `yaml:"threshold"` // refused_burst (default 10), mass_revocation (default 20)
	// Window: refused_burst counts within it (default 1m); upstream_failure
	// alerts once within it per upstream (or secret) and step (default 1m).
	Window time.Duration `yaml:"window"`
	// By: refused_burst groups by "identity", "source" or "both" (default).
	By string `yaml:"by"`
}

// Validate checks the config and fills in defaults. Errors name the
// field at fault.
func (c *Config) Validate() error {
	if len(c.Targets) == 0 {
		return errors.New("alerts: at least one target is needed")
	}
	if len(c.Rules) == 0 {
		for _, n := range ruleNames {
			c.Rules = append(c.Rules, RuleConfig{Rule: n})
		}
	}
	seen := map[string]bool{}
	for i := range c.Rules {
		r := &c.Rules[i]
		if !slices.Contains(ruleNames, r.Rule) {
			return fmt.Errorf("alerts.rules[%d]: unknown rule %q (one of %v)", i, r.Rule, ruleNames)
		}
		if seen[r.Rule] {
			return fmt.Errorf("alerts.rules[%d]: rule %q listed twice", i, r.Rule)
		}
		seen[r.Rule] = true
		if r.Threshold < 0 || r.Window < 0 {
			return fmt.Errorf("alerts.rules[%d] (%s): threshold and window must not be negative", i, r.Rule)
		}
		switch r.Rule {
		case RuleRefusedBurst:
			r.Threshold = orInt(r.Threshold, 10)
			r.Window = orDur(r.Window, time.Minute)
			if r.By == "" {
				r.By = "both"
			}
			if r.By != "identity" && r.By != "source" && r.By != "both" {
				return fmt.Errorf("alerts.rules[%d] (%s): by must be identity, source or both, not %q", i, r.Rule, r.By)
			}
		case RuleMassRevocation:
			r.Threshold = orInt(r.Threshold, 20)
		case RuleUpstreamFailure:
			r.Window = orDur(r.Window, time.Minute)
		}
		if r.By != "" && r.Rule != RuleRefusedBurst {
			return fmt.Errorf("alerts.rules[%d] (%s): by applies only to %s", i, r.Rule, RuleRefusedBurst)
		}
	}
	names := map[string]bool{}
	for i := range c.Targets {
		t := &c.Targets[i]
		if t.Name == "" {
			return fmt.Errorf("alerts.targets[%d]: a target needs a name", i)
		}
		if names[t.Name] {
			return fmt.Errorf("alerts.targets[%d]: target name %q used twice", i, t.Name)
		}
		names[t.Name] = true
		if err := checkURL(t.URL, t.AllowHTTP); err != nil {
			return fmt.Errorf("alerts.targets[%d] (%s): %w", i, t.Name, err)
		}
		switch t.Format {
		case "":
			t.Format = "json"
		case "json", "slack":
		default:
			return fmt.Errorf("alerts.targets[%d] (%s): format must be slack or json, not %q", i, t.Name, t.Format)
		}
		if t.HMACKeyFile != "" && t.HMACKeySecret != "" {
			return fmt.Errorf("alerts.targets[%d] (%s): give hmac_key_file or hmac_key_secret, not both", i, t.Name)
		}
		if t.Format == "json" && t.HMACKeyFile == "" && t.HMACKeySecret == "" {
			return fmt.Errorf("alerts.targets[%d] (%s): a json target is signed: give hmac_key_file or hmac_key_secret", i, t.Name)
		}
		for _, r := range t.Rules {
			if !seen[r] {
				return fmt.Errorf("alerts.targets[%d] (%s): rule %q is not enabled in alerts.rules", i, t.Name, r)
			}
		}
	}
	if c.Queue < 0 || c.MaxAttempts < 0 || c.InitialBackoff < 0 || c.MaxBackoff < 0 || c.Timeout < 0 || c.MaxAge < 0 || c.HealthInterval < 0 {
		return errors.New("alerts: queue, max_attempts and durations must not be negative")
	}
	var over []string
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"initial_backoff", c.InitialBackoff}, {"max_backoff", c.MaxBackoff}, {"health_interval", c.HealthInterval}} {
		if d.v > MaxWait {
			over = append(over, fmt.Sprintf("alerts.%s is %s: it must be at most %s (0 or unset for the default)", d.key, d.v, MaxWait))
		}
	}
	if c.Queue > MaxQueue {
		over = append(over, fmt.Sprintf("alerts.queue is %d: it must be at most %d (0 or unset for the default)", c.Queue, MaxQueue))
	}
	if len(over) > 0 {
		return errors.New(strings.Join(over, "; "))
	}
	c.Queue = orInt(c.Queue, 1000)
	c.MaxAttempts = orInt(c.MaxAttempts, 10)
	c.InitialBackoff = orDur(c.InitialBackoff, time.Second)
	c.MaxBackoff = orDur(c.MaxBackoff, 5*time.Minute)
	c.Timeout = orDur(c.Timeout, 10*time.Second)
	c.MaxAge = orDur(c.MaxAge, 10*time.Minute)
	c.HealthInterval = orDur(c.HealthInterval, 5*time.Second)
	return nil
}

// checkURL accepts https, and http only to a loopback address unless
// allowHTTP. Its errors never quote the URL (it may hold a secret).
func checkURL(raw string, allowHTTP bool) error {
	if raw == "" {
		return errors.New("url is required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return errors.New("url is not an absolute http(s) URL")
	}
	if u.User != nil {
		return errors.New("url must not carry a user or password")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowHTTP {
			return nil
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return errors.New("an http:// url off loopback sends alerts in clear: use https, or set allow_http: true")
	}
	return errors.New("url scheme must be https (or http on loopback)")
}

func orInt(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func orDur(v, d time.Duration) time.Duration {
	if v == 0 {
		return d
	}
	return v
}
