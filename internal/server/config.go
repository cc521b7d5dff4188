// Package server wires a mayfly node: configuration, the data directory
// (init), storage, keys, TLS, the API and gateway, background work and the
// lifecycle (graceful shutdown, policy reload on SIGHUP).
package server

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mayfly-sh/mayfly/internal/alert"
	"github.com/mayfly-sh/mayfly/internal/api"
	"github.com/mayfly-sh/mayfly/internal/rotate"
	"github.com/mayfly-sh/mayfly/internal/scan"
	"github.com/mayfly-sh/mayfly/internal/sso"
	"github.com/mayfly-sh/mayfly/internal/yamlerr"
)

// Config is everything a node is started with. Flags fill it; a YAML file
// (--config) may too, flags winning.
type Config struct {
	DataDir  string   `yaml:"data_dir"`
	Listen   string   `yaml:"listen"`
	Policy   []string `yaml:"policy"`
	Postgres string   `yaml:"postgres"`
	// PostgresMaxConns is this node's PostgreSQL connection budget: the
	// pool, the audit writer, the lease listener and notifier together
	// (default 10). The nodes'
	// budgets together must stay below the server's max_connections.
	PostgresMaxConns int          `yaml:"postgres_max_conns"`
	InsecureHTTP     bool         `yaml:"insecure_http"`
	TLSCert          string       `yaml:"tls_cert"`
	TLSKey           string       `yaml:"tls_key"`
	AdminCIDRs       []string     `yaml:"admin_cidrs"`
	TrustedProxies   []string     `yaml:"trusted_proxies"`
	AdminClientCA    string       `yaml:"admin_client_ca"` // PEM: require mTLS for admin calls
	PublicURL        string       `yaml:"public_url"`      // scheme://host clients use (DPoP htu); default: the listener's address and the TLS certificate's names
	LogFormat        string       `yaml:"log_format"`      // text|json
	LogLevel         string       `yaml:"log_level"`
	Limits           ConfigLimits `yaml:"limits"`
	// AdminTokenMaxTTL is the longest lifetime an admin token may be
	// created with (default 8760h, a year; a token's own default is 90
	// days).
	AdminTokenMaxTTL time.Duration `yaml:"admin_token_max_ttl"`
	// AdminOIDC signs humans in through the company's identity provider
	// (internal/sso; README "Signing in with your identity provider").
	AdminOIDC *sso.Config `yaml:"admin_oidc"`
	// AdminSessionTTL is how long a signed-in session lasts (default 8h).
	AdminSessionTTL time.Duration `yaml:"admin_session_ttl"`
	// AdminSessionIdle is how long a session may go unused before it ends
	// (default 1h).
	AdminSessionIdle time.Duration `yaml:"admin_session_idle"`
	// GitHubLeakKeys are PEM ECDSA public keys by key identifier: when set,
	// /v1/leaks checks GitHub's signature headers and records the verdict
	// in the report's audit entry (the report is taken either way).
	GitHubLeakKeys map[string]string `yaml:"github_leak_keys"`
	// AuditSinks export the audit log (at least once, resuming after a
	// restart from a cursor kept in the store).
	AuditSinks []SinkConfig `yaml:"audit_sinks"`
	// Alerts: rules over the audit log and its health, delivered to
	// webhooks (internal/alert; README "Alerts").
	Alerts *alert.Config `yaml:"alerts"`
	// GatewayDurableAudit makes each forwarded gateway request wait until
	// its gateway.request entry is fsynced (safe from a power loss) rather
	// than written (safe from a crash of the server; fsynced within 5 ms).
	GatewayDurableAudit bool `yaml:"gateway_durable_audit"`
	// MetricsListen serves /metrics without authentication on its own
	// listener ("off" or empty: none; the API's /metrics needs the auditor
	// role either way). The command line defaults it to DefaultMetricsListen.
	MetricsListen string `yaml:"metrics_listen"`
	// Minted tunes the credentials mayfly mints (SPEC section 9).
	Minted ConfigMinted `yaml:"minted"`
	// Rotators are the only programs secret rotation may run: name →
	// [absolute program path, args…]. A secret's settings name one
	// ("via":{"command":NAME}); no API caller names a program.
	Rotators map[string][]string `yaml:"rotators"`
	// RotationInterval is how often this node checks which secrets are
	// due for rotation (default 10s); RotationTimeout bounds one attempt
	// (default 30s).
	RotationInterval time.Duration `yaml:"rotation_interval"`
	RotationTimeout  time.Duration `yaml:"rotation_timeout"`
	// AddrFile, when set, receives the URL the server listens on once ready.
	AddrFile string `yaml:"-"`
}

// ConfigMinted tunes minted upstream credentials.
type ConfigMinted struct {
	// StalePending is how long a credential may stay recorded but not
	// confirmed made before it is taken for what a crash left and revoked
	// (default 2m): longer than any creation takes.
	StalePending time.Duration `yaml:"stale_pending"`
	// RoleSweepInterval is how often the roles of postgres upstreams that
	// no record knows are dropped (default 5m; also once at start).
	RoleSweepInterval time.Duration `yaml:"role_sweep_interval"`
}

// ConfigLimits are the tunable limits.
type ConfigLimits struct {
	MaxBody           int64         `yaml:"max_body"`
	MaxLeakBody       int64         `yaml:"max_leak_body"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	TokenRate         float64       `yaml:"token_rate"`
	TokenBurst        int           `yaml:"token_burst"`
	IssuerRate        float64       `yaml:"issuer_rate"`
	LeakRate          float64       `yaml:"leak_rate"`
	AdminRate         float64       `yaml:"admin_rate"`
	AdminBurst        int           `yaml:"admin_burst"`
	// MinBodyRate is the slowest a request body may arrive, in bytes per
	// second over the time the server waits for it, once BodyRateGrace
	// has been spent (defaults 1024 and 10s; a negative rate turns the
	// check off). A slower body ends its connection.
	MinBodyRate   float64       `yaml:"min_body_rate"`
	BodyRateGrace time.Duration `yaml:"body_rate_grace"`
	// GatewayMaxInspectedBody bounds the form, JSON or multipart body the
	// gateway reads to find a method override (default 1 MiB); a larger
	// one is refused with 413.
	GatewayMaxInspectedBody int64 `yaml:"gateway_max_inspected_body"`
	// GatewayMaxGzipRatio bounds what a gzip answer the gateway decodes
	// may decode to, past its first MiB: that many times the bytes read of
	// it (default gateway.DefaultMaxGzipRatio, at most MaxGzipRatio;
	// negative: no cap). Beyond it the answer is cut.
	GatewayMaxGzipRatio int `yaml:"gateway_max_gzip_ratio"`
	// GatewayRefusalRate and GatewayRefusalBurst bound, per address, the
	// gateway requests refused before a live token is found (each is an
	// audit entry); past them 429, unrecorded (defaults 100 and 1000).
	GatewayRefusalRate  float64 `yaml:"gateway_refusal_rate"`
	GatewayRefusalBurst int     `yaml:"gateway_refusal_burst"`
	// MaxLeakTokens caps the distinct tokens of one leak report (default
	// 1000, at most scan.MaxLeakTokens); LeakConcurrency and LeakQueue
	// bound the reports worked on and waiting, over all sources (default
	// 1 and 8).
	MaxLeakTokens   int `yaml:"max_leak_tokens"`
	LeakConcurrency int `yaml:"leak_concurrency"`
	LeakQueue       int `yaml:"leak_queue"`
	// LeakTokenRate bounds the work of all leak reports together: tokens
	// named (or KiB read, if more) per second (default 2000).
	LeakTokenRate float64 `yaml:"leak_token_rate"`
	// MaxConnsPerAddress bounds the connections one source address (an
	// IPv6 /64) holds open at once; past it a new one is closed on accept.
	// Trusted proxies are not counted. 0 or unset: DefaultMaxConnsPerAddress;
	// negative: no cap.
	MaxConnsPerAddress int `yaml:"max_conns_per_address"`
}

// Bounds of limits.max_header_bytes (a request's line and headers): a
// job's request must fit its token and a DPoP proof (up to 8 KiB), a
// browser's its cookies.
const (
	DefaultMaxHeaderBytes = 64 << 10
	MinMaxHeaderBytes     = 16 << 10
)

// Bounds of the limits.*_rate settings (0 or unset: the default). Past
// them a token bucket's arithmetic overflows (a refill time beyond
// time.Duration makes every bucket look idle, so a flood of new addresses
// empties the table and resets the busy ones) or lets everything through
// (NaN, +Inf, 1e300); a bound at either end catches a slip of the exponent.
const (
	MinRate = 0.001 // per second: one every ~17 minutes
	MaxRate = 1e9   // what the benchmarks use to take a limit out of the way
	// min_body_rate is in bytes per second; negative turns its check off.
	MinBodyRateMin = 1
	MinBodyRateMax = 1 << 30
)

// Upper bounds of the sizes and durations of limits (0 or unset: the
// default), far past what a deployment needs, refused at load rather than
// honoured: a body limit is read with one byte more to tell "too large"
// (past math.MaxInt64 it wraps and every body reads as empty), and a
// duration is added to times and rates (body_rate_grace plus a body's
// allowance wraps negative and cuts every body). A day is also longer than
// any request, idle connection or shutdown should wait.
const (
	MaxBodyLimit = 1 << 30        // bytes: max_body, max_leak_body, gateway_max_inspected_body
	MaxTimeout   = 24 * time.Hour // the *_timeout keys and body_rate_grace
	// MaxMaxHeaderBytes bounds max_header_bytes (net/http's own default):
	// the listener allows 4096 bytes more, which past math.MaxInt wrapped
	// negative and refused every request.
	MaxMaxHeaderBytes = 1 << 20
	// MaxGzipRatio bounds gateway_max_gzip_ratio: gzip itself cannot pass
	// ~1032:1, and the gateway multiplies the bytes read by it.
	MaxGzipRatio = 1 << 20
	// MaxInterval bounds how often background work runs and how long it
	// waits (rotation_interval, minted.role_sweep_interval,
	// minted.stale_pending): past it a schedule, a sweep or a crash's
	// pending credential would wait for years.
	MaxInterval = 24 * time.Hour
	// MaxAdminTokenMaxTTL bounds admin_token_max_ttl (default a year): an
	// expiry past 2262 wraps in the store and reads back as long past.
	MaxAdminTokenMaxTTL = 10 * 365 * 24 * time.Hour
	// MaxSessionTime bounds admin_session_ttl and admin_session_idle
	// (defaults 8h and 1h): a sign-in is not meant to last for years.
	MaxSessionTime = 365 * 24 * time.Hour
)

// check refuses a config the server could not honour as written, rather
// than run with other values.
func (c Config) check() error {
	var errs []string
	if err := c.Limits.check(); err != nil {
		errs = append(errs, err.Error())
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		// One alone would pair with nothing, or with the data dir's other half.
		errs = append(errs, "tls_cert and tls_key go together (--tls-cert and --tls-key): give both, or neither for the data dir's certificate")
	}
	if c.RotationTimeout > rotate.MaxTimeout {
		errs = append(errs, fmt.Sprintf("rotation_timeout is %s: it must be at most %s (0 or unset for the default)", c.RotationTimeout, rotate.MaxTimeout))
	}
	for _, d := range []struct {
		key      string
		v, bound time.Duration
	}{
		{"admin_token_max_ttl", c.AdminTokenMaxTTL, MaxAdminTokenMaxTTL},
		{"admin_session_ttl", c.AdminSessionTTL, MaxSessionTime}, {"admin_session_idle", c.AdminSessionIdle, MaxSessionTime},
		{"minted.stale_pending", c.Minted.StalePending, MaxInterval}, {"minted.role_sweep_interval", c.Minted.RoleSweepInterval, MaxInterval},
		{"rotation_interval", c.RotationInterval, MaxInterval},
	} {
		if d.v > d.bound {
			errs = append(errs, fmt.Sprintf("%s is %s: it must be at most %s (0 or unset for the default)", d.key, d.v, d.bound))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// check refuses limits the server could not honour as written, rather
// than run with other values.
func (l ConfigLimits) check() error {
	var errs []string // one line: every problem at once
	for _, b := range []struct {
		key string
		v   int64
	}{
		{"max_body", l.MaxBody}, {"max_leak_body", l.MaxLeakBody}, {"gateway_max_inspected_body", l.GatewayMaxInspectedBody},
	} {
		if b.v > MaxBodyLimit {
			errs = append(errs, fmt.Sprintf("limits.%s is %d: it must be at most %d bytes (1 GiB; 0 or unset for the default)", b.key, b.v, MaxBodyLimit))
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"read_header_timeout", l.ReadHeaderTimeout}, {"read_timeout", l.ReadTimeout}, {"write_timeout", l.WriteTimeout},
		{"idle_timeout", l.IdleTimeout}, {"shutdown_timeout", l.ShutdownTimeout}, {"body_rate_grace", l.BodyRateGrace},
	} {
		if d.v > MaxTimeout {
			errs = append(errs, fmt.Sprintf("limits.%s is %s: it must be at most %s (0 or unset for the default)", d.key, d.v, MaxTimeout))
		}
	}
	if l.MaxHeaderBytes != 0 && l.MaxHeaderBytes < MinMaxHeaderBytes {
		errs = append(errs, fmt.Sprintf("limits.max_header_bytes is %d: it must be at least %d (a request line, a token and a DPoP proof of up to 8 KiB must fit), or unset for %d",
			l.MaxHeaderBytes, MinMaxHeaderBytes, DefaultMaxHeaderBytes))
	}
	if l.MaxHeaderBytes > MaxMaxHeaderBytes {
		errs = append(errs, fmt.Sprintf("limits.max_header_bytes is %d: it must be at most %d bytes (1 MiB; 0 or unset for %d)",
			l.MaxHeaderBytes, MaxMaxHeaderBytes, DefaultMaxHeaderBytes))
	}
	for _, r := range []struct {
		key string
		v   float64
	}{
		{"token_rate", l.TokenRate}, {"issuer_rate", l.IssuerRate}, {"leak_rate", l.LeakRate},
		{"admin_rate", l.AdminRate}, {"gateway_refusal_rate", l.GatewayRefusalRate}, {"leak_token_rate", l.LeakTokenRate},
	} {
		// Written so that NaN fails too.
		if r.v != 0 && !(r.v >= MinRate && r.v <= MaxRate) {
			errs = append(errs, fmt.Sprintf("limits.%s is %g: it must be from %g to %g per second (0 or unset for the default)", r.key, r.v, MinRate, MaxRate))
		}
	}
	if l.GatewayMaxGzipRatio > MaxGzipRatio {
		errs = append(errs, fmt.Sprintf("limits.gateway_max_gzip_ratio is %d: it must be at most %d (negative: no cap; 0 or unset for the default)", l.GatewayMaxGzipRatio, MaxGzipRatio))
	}
	if v := l.MinBodyRate; v != 0 && !(v >= MinBodyRateMin && v <= MinBodyRateMax) && !(v < 0 && !math.IsInf(v, -1)) {
		errs = append(errs, fmt.Sprintf("limits.min_body_rate is %g: it must be from %d to %g bytes per second (negative: off; 0 or unset for the default)", v, MinBodyRateMin, float64(MinBodyRateMax)))
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

func (l ConfigLimits) api() api.Limits {
	return api.Limits{MaxBody: l.MaxBody, MaxLeakBody: l.MaxLeakBody, TokenRate: l.TokenRate, TokenBurst: l.TokenBurst,
		IssuerRate: l.IssuerRate, LeakRate: l.LeakRate, AdminRate: l.AdminRate, AdminBurst: l.AdminBurst,
		MaxLeakTokens: min(l.MaxLeakTokens, scan.MaxLeakTokens), LeakConcurrency: l.LeakConcurrency, LeakQueue: l.LeakQueue,
		LeakTokenRate: l.LeakTokenRate}
}

// readConfig reads a regular file of at most 1 MiB: a device or FIFO
// named by mistake (/dev/zero, a pipe nobody writes) is refused, not read
// until memory runs out or for ever.
func readConfig(path string) ([]byte, error) {
	// Checked before the open too: opening a FIFO waits for a writer.
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("config %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("config %s: larger than 1 MiB", path)
	}
	return b, nil
}

// LoadConfigFile reads a YAML config strictly: unknown keys, bad YAML and
// values of the wrong type are errors that name the file, the line and the
// key in words (with a suggestion for a mistyped key).
func LoadConfigFile(path string) (Config, error) {
	var c Config
	b, err := readConfig(path)
	if err != nil {
		return c, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		line, reason := yamlerr.Syntax(err, b)
		return c, fmt.Errorf("config %s:%d: bad YAML: %s", path, line, reason)
	}
	if len(doc.Content) == 0 {
		return c, nil // an empty file sets nothing
	}
	keys := map[int]string{} // line → the key written there, for type errors
	var problems []string
	checkKeys(doc.Content[0], reflect.TypeOf(c), "", path, keys, &problems)
	if len(problems) > 0 {
		return c, errors.New(strings.Join(problems, "; "))
	}
	if err := doc.Decode(&c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
		for _, e := range te.Errors {
			if line, want, got, ok := yamlerr.Type(e); ok {
				problems = append(problems, fmt.Sprintf("config %s:%d: %s: expected %s, got %s", path, line, keys[line], want, got))
			} else {
				problems = append(problems, fmt.Sprintf("config %s: %s", path, e))
			}
		}
		return c, errors.New(strings.Join(problems, "; "))
	}
	if c.Alerts != nil {
		if err := c.Alerts.Validate(); err != nil {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := c.check(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// maxConfigProblems bounds how many unknown keys one error lists.
const maxConfigProblems = 10

// checkKeys reports every key of n that t (a struct's yaml tags) does not
// know, with the nearest known key as a suggestion, and records the path of
// every key by line.
func checkKeys(n *yaml.Node, t reflect.Type, path, file string, keys map[int]string, problems *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			full := k.Value
			if path != "" {
				full = path + "." + k.Value
			}
			keys[k.Line] = full
			ft, ok := fields[k.Value]
			if !ok {
				if len(*problems) < maxConfigProblems {
					msg := fmt.Sprintf("unknown key %q in %s:%d", full, file, k.Line)
					if s := yamlerr.Suggest(k.Value, names); s != "" {
						msg += fmt.Sprintf(", did you mean %q?", s)
					}
					*problems = append(*problems, msg)
				}
				continue
			}
			keys[v.Line] = full
			checkKeys(v, ft, full, file, keys, problems)
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			checkKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), file, keys, problems)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			full := path + "." + n.Content[i].Value
			keys[n.Content[i].Line] = full
			checkKeys(n.Content[i+1], t.Elem(), full, file, keys, problems)
		}
	}
}

// DefaultListen is the default listen address.
const DefaultListen = "127.0.0.1:8443"

// CheckListen refuses plain HTTP on anything but a loopback address.
func CheckListen(listen string, insecure bool) error {
	if !insecure {
		return nil
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		host := listen
		if h, _, ok := cutPort(listen); ok {
			host = h
		}
		if host == "localhost" {
			return nil
		}
		return fmt.Errorf("--insecure-http needs a loopback listen address (127.0.0.1 or [::1]), not %q", listen)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("--insecure-http is refused on %s: plain HTTP is allowed only on a loopback address", listen)
	}
	return nil
}

func cutPort(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// parseTrustedProxies reads trusted_proxies, refusing a prefix that covers
// every address (of a family, or every IPv4 one mapped into IPv6): the
// X-Forwarded-For of any caller would be believed, so anyone could claim an
// address admin_cidrs or source_cidrs allow.
func parseTrustedProxies(ss []string) ([]netip.Prefix, error) {
	ps, err := parsePrefixes(ss, "trusted_proxies")
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		if p.Bits() == 0 { // ::ffff:0.0.0.0/96 is 0.0.0.0/0 by now
			return nil, fmt.Errorf("trusted_proxies: %q covers every address: anyone could set the X-Forwarded-For that says who they are; list your proxies' addresses", ss[i])
		}
	}
	return ps, nil
}

func parsePrefixes(ss []string, what string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR or address", what, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() < 96 {
			// Masked, it would be a native IPv6 prefix the writer never
			// meant ("::ffff:0.0.0.0/1" is ::/1, every global address).
			return nil, fmt.Errorf("%s: %q is an IPv4-mapped prefix shorter than /96, which names no IPv4 network: write it as IPv4", what, s)
		}
		if p.Addr().Is4In6() {
			// Callers' addresses are compared unmapped (clientip): kept
			// mapped, the entry would never match.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
