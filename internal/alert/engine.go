package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/netfail"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Options are what the server hands the engine besides its config.
type Options struct {
	// Keys holds each target's HMAC key by target name, read by the
	// caller from hmac_key_file or hmac_key_secret.
	Keys       map[string][]byte
	Server     string // this server's name in alerts (e.g. its public URL)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Client     *http.Client     // default: one with no redirects followed
	Now        func() time.Time // default time.Now
}

// Engine evaluates rules and delivers alerts. Each target reads the audit
// log as its own auditlog sink (Sinks); WatchHealth watches the log's
// health.
type Engine struct {
	cfg     Config
	opts    Options
	since   time.Time // entries before this were history when the engine started
	targets []*target
	wg      sync.WaitGroup

	raised    *prometheus.CounterVec
	delivered *prometheus.CounterVec
}

type target struct {
	cfg   TargetConfig
	key   []byte
	queue chan Alert // Raise's alerts, for the target's worker
}

// New returns an engine for a validated cfg (Config.Validate). Start runs
// its delivery workers.
func New(cfg Config, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Client == nil {
		opts.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	e := &Engine{cfg: cfg, opts: opts, since: opts.Now().Add(-cfg.MaxAge)}
	for _, tc := range cfg.Targets {
		key := opts.Keys[tc.Name]
		if (tc.HMACKeyFile != "" || tc.HMACKeySecret != "") && len(key) < 16 {
			return nil, fmt.Errorf("alerts: target %s: the HMAC key is missing or shorter than 16 bytes", tc.Name)
		}
		e.targets = append(e.targets, &target{cfg: tc, key: key, queue: make(chan Alert, cfg.Queue)})
	}
	e.raised = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_alerts_raised_total", Help: "Alerts raised, by rule and target."}, []string{"rule", "target"})
	e.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mayfly_alert_deliveries_total",
		Help: "Alert deliveries by target and result (delivered, retried, failed: attempts exhausted or refused, dropped: queue full)."}, []string{"target", "result"})
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{e.raised, e.delivered} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("alerts: registering metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Start runs one worker per target, delivering Raise's alerts until ctx
// ends; Wait waits for them.
func (e *Engine) Start(ctx context.Context) {
	for _, t := range e.targets {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.deliverLoop(ctx, t)
		}()
	}
}

// Wait returns once the workers Start ran have ended.
func (e *Engine) Wait() { e.wg.Wait() }

// Sink reads the audit log for one target, as an auditlog sink named
// "alerts:" + the target's name (cursor "sink:alerts:NAME"). Each target
// has its own sink, cursor and rules state, so a target that is down
// holds back its own alerts only.
type Sink struct {
	e     *Engine
	t     *target
	mu    sync.Mutex // guards rules, should two Writes ever overlap
	rules *rules
}

// Sinks returns one sink per target, in the config's order. Each is to be
// read by one forwarder.
func (e *Engine) Sinks() []*Sink {
	out := make([]*Sink, len(e.targets))
	for i, t := range e.targets {
		out[i] = &Sink{e: e, t: t, rules: newRules(e.cfg.Rules)}
	}
	return out
}

// Name is the sink's name: its cursor is "sink:" + Name().
func (s *Sink) Name() string { return "alerts:" + s.t.cfg.Name }

// Write evaluates entries (the auditlog Sink interface) and delivers the
// alerts they raise for this target, one after another, returning once
// each is settled (delivered, refused, or out of attempts), so that the
// cursor moves past an entry only then: an alert in flight when the
// process dies is raised again, with the same id, after it restarts. It
// runs in the forwarder, never in a request. An entry it cannot read is
// logged and skipped, so that alerts never hold the log's cursor back for
// good. An entry already older than max_age when the engine started is
// history (the log's past at first start, or while alerts were off) and
// raises nothing; an entry the engine itself is slow to reach, however
// late, still does.
func (s *Sink) Write(ctx context.Context, entries [][]byte, firstIndex int64) error {
	var out []Alert
	s.mu.Lock()
	for i, b := range entries {
		ent, err := audit.ParseEntry(b)
		if err != nil {
			s.e.opts.Logger.Warn("alerts: audit entry not readable; skipped", "target", s.t.cfg.Name, "index", firstIndex+int64(i), "err", err)
			continue
		}
		if ent.Time.Before(s.e.since) {
			continue
		}
		for _, a := range s.rules.eval(ent) {
			if s.t.takes(a.Rule) {
				out = append(out, a)
			}
		}
	}
	s.mu.Unlock()
	for _, a := range out {
		s.e.countRaised(s.t, &a)
		if !s.e.deliver(ctx, s.t, a) {
			return fmt.Errorf("alerts: delivery to %s cut short; the entries will be read again: %w", s.t.cfg.Name, ctx.Err())
		}
	}
	return nil
}

// WatchHealth reads health every HealthInterval until ctx ends and raises
// audit_unhealthy when it starts failing (status firing) and when it
// recovers (status resolved).
func (e *Engine) WatchHealth(ctx context.Context, health func() error) {
	if !slices.ContainsFunc(e.cfg.Rules, func(r RuleConfig) bool { return r.Rule == RuleAuditUnhealthy }) {
		return
	}
	t := time.NewTicker(e.cfg.HealthInterval)
	defer t.Stop()
	var failing bool
	var n int
	for {
		err := health()
		now := e.opts.Now()
		switch {
		case err != nil && !failing:
			failing = true
			n++
			e.Raise(Alert{ID: fmt.Sprintf("%s-%d-%d", RuleAuditUnhealthy, now.Unix(), n), Rule: RuleAuditUnhealthy, Status: "firing", Time: now,
				Summary: "the audit log is failing; mayfly refuses what it cannot record: " + clip(err.Error(), 300)})
		case err == nil && failing:
			failing = false
			e.Raise(Alert{ID: fmt.Sprintf("%s-%d-%d", RuleAuditUnhealthy, now.Unix(), n), Rule: RuleAuditUnhealthy, Status: "resolved", Time: now,
				Summary: "the audit log is writable again"})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (t *target) takes(rule string) bool {
	return len(t.cfg.Rules) == 0 || slices.Contains(t.cfg.Rules, rule)
}

func (e *Engine) countRaised(t *target, a *Alert) {
	if a.Server == "" {
		a.Server = e.opts.Server
	}
	e.raised.WithLabelValues(a.Rule, t.cfg.Name).Inc()
}

// Raise queues a to every target that takes its rule, never blocking: a
// full queue drops the alert for that target, counted and logged. (Alerts
// from audit entries go through the targets' sinks, which wait instead.)
func (e *Engine) Raise(a Alert) {
	for _, t := range e.targets {
		if !t.takes(a.Rule) {
			continue
		}
		e.countRaised(t, &a)
		select {
		case t.queue <- a:
		default:
			e.delivered.WithLabelValues(t.cfg.Name, "dropped").Inc()
			e.opts.Logger.Warn("alerts: queue full; alert dropped", "target", t.cfg.Name, "rule", a.Rule, "id", a.ID)
		}
	}
}

func (e *Engine) deliverLoop(ctx context.Context, t *target) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-t.queue:
			e.deliver(ctx, t, a)
		}
	}
}

// errPermanent: the receiver refused the alert itself; retrying is useless.
var errPermanent = errors.New("refused by the receiver")

// deliver sends a until it is accepted, the receiver refuses it, attempts
// run out or ctx ends, waiting InitialBackoff·2ⁿ (capped, with jitter)
// between attempts. It reports false only when ctx ended first.
func (e *Engine) deliver(ctx context.Context, t *target, a Alert) (settled bool) {
	body, err := render(t.cfg.Format, a)
	if err != nil {
		e.delivered.WithLabelValues(t.cfg.Name, "failed").Inc()
		e.opts.Logger.Error("alerts: alert not rendered", "target", t.cfg.Name, "rule", a.Rule, "err", err)
		return true
	}
	backoff := e.cfg.InitialBackoff
	for attempt := 1; ; attempt++ {
		err := e.post(ctx, t, a.ID, body)
		if err == nil {
			e.delivered.WithLabelValues(t.cfg.Name, "delivered").Inc()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, errPermanent) || attempt >= e.cfg.MaxAttempts {
			e.delivered.WithLabelValues(t.cfg.Name, "failed").Inc()
			e.opts.Logger.Error("alerts: alert not delivered", "target", t.cfg.Name, "rule", a.Rule, "id", a.ID, "attempts", attempt, "err", err)
			return true
		}
		e.delivered.WithLabelValues(t.cfg.Name, "retried").Inc()
		wait := backoff + rand.N(backoff/4+1)
		e.opts.Logger.Warn("alerts: delivery failed; will retry", "target", t.cfg.Name, "rule", a.Rule, "id", a.ID, "attempt", attempt, "retry_in", wait, "err", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
		}
		backoff = min(2*backoff, e.cfg.MaxBackoff)
	}
}

// post makes one attempt. Its errors never hold the URL (it may be a
// secret) nor the key.
func (e *Engine) post(ctx context.Context, t *target, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("building the request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mayfly-alerts")
	req.Header.Set(HeaderAlertID, id)
	if len(t.key) > 0 {
		ts := e.opts.Now().Unix()
		req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(HeaderSignature, Sign(t.key, ts, body))
	}
	resp, err := e.opts.Client.Do(req)
	if err != nil {
		// Only what went wrong: url.Error quotes the URL, and Go's text of
		// a malformed answer quotes its line, where a receiver that echoes
		// the request line puts the URL's path.
		return fmt.Errorf("sending: %w", netfail.Describe(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return fmt.Errorf("receiver answered %d: %w", resp.StatusCode, errPermanent)
}

// render encodes a for a target's format. Whole mayfly tokens are
// replaced by their hint, in case one reached a field a caller filled.
func render(format string, a Alert) ([]byte, error) {
	var b []byte
	var err error
	if format == "slack" {
		b, err = json.Marshal(map[string]string{"text": slackText(a)})
	} else {
		b, err = json.Marshal(a)
	}
	if err != nil {
		return nil, fmt.Errorf("encoding the alert: %w", err)
	}
	return token.Redact(b), nil
}

func slackText(a Alert) string {
	s := "mayfly alert [" + a.Rule + "]"
	if a.Status == "resolved" {
		s += " RESOLVED"
	}
	s += ": " + a.Summary
	if a.AuditIndex != nil {
		s += " (audit entry " + strconv.FormatInt(*a.AuditIndex, 10) + ")"
	}
	if ev := a.Event; ev != nil {
		for _, kv := range [][2]string{{"subject", ev.Subject}, {"repository", ev.Repository}, {"lease", ev.Lease}, {"grant", ev.Grant}, {"upstream", ev.Upstream}, {"source", ev.Source}} {
			if kv[1] != "" {
				s += "; " + kv[0] + " " + kv[1]
			}
		}
	}
	if a.Server != "" {
		s += " — " + a.Server
	}
	return slackEscape(s)
}

// slackEscape makes s plain text for Slack: the text holds fields a caller
// chose (a subject's branch name, a reason), and Slack reads <…> as a
// mention (<!channel>) or a link, & as the start of an entity, and a new
// line as the start of another (forged) line. The alert itself uses no
// markup, so all of it is escaped.
var slackEscape = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;",
	"\r\n", " ", "\n", " ", "\r", " ", "\t", " ", "\u2028", " ", "\u2029", " ").Replace
