package server

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Config errors are in words, at their line, with a suggestion for a
// mistyped key; they never read "field limts not found in type
// server.Config".
func TestLoadConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"unknown key", "data_dir: /d\nlisten: 127.0.0.1:8443\n\n\n\n\nlimts:\n  max_body: 10\n",
			[]string{`unknown key "limts" in FILE:7, did you mean "limits"?`}},
		{"nested unknown key", "limits:\n  max_bdy: 10\n  token_rte: 5\n",
			[]string{`unknown key "limits.max_bdy" in FILE:2, did you mean "max_body"?`, `unknown key "limits.token_rte" in FILE:3, did you mean "token_rate"?`}},
		{"no suggestion", "frobnicate: 1\n", []string{`unknown key "frobnicate" in FILE:1`}},
		{"in a list", "audit_sinks:\n  - type: file\n    pth: /x\n", []string{`unknown key "audit_sinks[0].pth" in FILE:3, did you mean "path"?`}},
		{"wrong type", "data_dir: /d\nlimits:\n  token_rate: fast\n", []string{`FILE:3: limits.token_rate: expected a number, got "fast"`}},
		{"wrong duration", "limits:\n  read_timeout: soon\n", []string{`FILE:2: limits.read_timeout: expected a duration (e.g. 30s, 5m), got "soon"`}},
		{"list expected", "admin_cidrs:\n  a: b\n", []string{`FILE:2: admin_cidrs: expected a list, got a mapping`}},
		{"syntax error", "data_dir: /d\nlisten: [a\nadmin_cidrs:\n  - 10.0.0.0/8\n", []string{`FILE:2: bad YAML: did not find expected ',' or ']'`}},
		{"unterminated quote", "data_dir: /d\n\n\nlisten: \"a\n", []string{`FILE:4: bad YAML`}},
		{"alerts: unknown key", "alerts:\n  targets:\n    - name: a\n      ur: https://e.com/h\n", []string{`unknown key "alerts.targets[0].ur" in FILE:4, did you mean "url"?`}},
		{"alerts: unknown rule", "alerts:\n  targets: [{name: a, url: \"https://e.com/h\", format: slack}]\n  rules: [{rule: leaks}]\n", []string{`FILE: alerts.rules[0]: unknown rule "leaks"`}},
		{"alerts: bad url", "alerts:\n  targets: [{name: a, url: \"e.com/h\", format: slack}]\n", []string{`alerts.targets[0] (a): url is not an absolute http(s) URL`}},
		{"alerts: http off loopback", "alerts:\n  targets: [{name: a, url: \"http://10.1.2.3/h\", format: slack}]\n", []string{`alerts.targets[0] (a): an http:// url off loopback`}},
		{"max_header_bytes too small", "limits:\n  max_header_bytes: 1024\n", []string{`FILE: limits.max_header_bytes is 1024: it must be at least 16384`}},
		{"max_header_bytes negative", "limits:\n  max_header_bytes: -1\n", []string{`FILE: limits.max_header_bytes is -1`}},
		{"token_rate tiny", "limits:\n  token_rate: 1e-300\n", []string{`FILE: limits.token_rate is 1e-300: it must be from 0.001 to 1e+09 per second`}},
		{"issuer_rate huge", "limits:\n  issuer_rate: 1e300\n", []string{`FILE: limits.issuer_rate is 1e+300: it must be from 0.001 to 1e+09`}},
		{"leak_rate negative", "limits:\n  leak_rate: -5\n", []string{`FILE: limits.leak_rate is -5: it must be from 0.001`, "0 or unset for the default"}},
		{"admin_rate NaN", "limits:\n  admin_rate: .nan\n", []string{`FILE: limits.admin_rate is NaN`}},
		{"gateway_refusal_rate Inf", "limits:\n  gateway_refusal_rate: .inf\n", []string{`FILE: limits.gateway_refusal_rate is +Inf`}},
		{"leak_token_rate huge", "limits:\n  leak_token_rate: 1e19\n", []string{`FILE: limits.leak_token_rate is 1e+19`}},
		{"min_body_rate NaN", "limits:\n  min_body_rate: .nan\n", []string{`FILE: limits.min_body_rate is NaN: it must be from 1 to 1.073741824e+09 bytes per second`, "negative: off"}},
		{"min_body_rate tiny", "limits:\n  min_body_rate: 1e-300\n", []string{`FILE: limits.min_body_rate is 1e-300`}},
		{"min_body_rate -Inf", "limits:\n  min_body_rate: -.inf\n", []string{`FILE: limits.min_body_rate is -Inf`}},
		{"several", "limits:\n  token_rate: .nan\n  leak_rate: .inf\n", []string{`limits.token_rate is NaN`, `limits.leak_rate is +Inf`}},
		{"tls_cert without tls_key", "tls_cert: /etc/mayfly/server.pem\n", []string{`FILE: tls_cert and tls_key go together`}},
		{"tls_key without tls_cert", "tls_key: /etc/mayfly/server-key.pem\n", []string{`FILE: tls_cert and tls_key go together`}},
		{"alerts: bad window", "alerts:\n  targets: [{name: a, url: \"https://e.com/h\", format: slack}]\n  rules: [{rule: refused_burst, window: often}]\n", []string{`alerts.rules[0].window: expected a duration`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfigFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "server.Config") || strings.Contains(err.Error(), "not found in type") {
				t.Errorf("error %q speaks Go, not config", err)
			}
		})
	}
}

// Rates within their bounds load, the edges included; 0 keeps the
// default and a negative min_body_rate turns its check off (as the README
// says).
func TestLoadConfigFileRateBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mayfly.yaml")
	doc := "limits:\n  token_rate: 0.001\n  issuer_rate: 1000000\n  leak_rate: 0\n  admin_rate: 2.5\n" +
		"  gateway_refusal_rate: 100\n  leak_token_rate: 1e6\n  min_body_rate: -1\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.TokenRate != 0.001 || c.Limits.IssuerRate != 1e6 || c.Limits.MinBodyRate != -1 {
		t.Errorf("loaded %+v", c.Limits)
	}
}

// Sizes and durations have an upper bound, refused at load naming the key
// and the bound: before, any value loaded (a body limit of 1e18 bytes, a
// timeout of 100 years), and a rotation_timeout near 146 years overflowed
// the rotation claim's time arithmetic. The bound loads, one over it does
// not.
func TestLoadConfigFileUpperBounds(t *testing.T) {
	dir := t.TempDir()
	const gib = "1073741824"
	tests := []struct {
		key, at, over, want string
	}{
		{"limits.max_body", gib, "1073741825", "limits.max_body is 1073741825: it must be at most 1073741824 bytes (1 GiB"},
		{"limits.max_leak_body", gib, "1073741825", "limits.max_leak_body is 1073741825: it must be at most 1073741824 bytes (1 GiB"},
		{"limits.max_leak_body", gib, "1000000000000000000", "limits.max_leak_body is 1000000000000000000: it must be at most"},
		{"limits.gateway_max_inspected_body", gib, "1073741825", "limits.gateway_max_inspected_body is 1073741825: it must be at most 1073741824 bytes (1 GiB"},
		{"limits.gateway_max_gzip_ratio", "1048576", "1048577", "limits.gateway_max_gzip_ratio is 1048577: it must be at most 1048576"},
		{"limits.read_header_timeout", "24h", "24h1ns", "limits.read_header_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"limits.read_timeout", "24h", "24h1ns", "limits.read_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"limits.write_timeout", "24h", "24h1ns", "limits.write_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"limits.idle_timeout", "24h", "24h1ns", "limits.idle_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"limits.idle_timeout", "24h", "876000h", "limits.idle_timeout is 876000h0m0s: it must be at most 24h0m0s"},
		{"limits.shutdown_timeout", "24h", "24h1ns", "limits.shutdown_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"limits.body_rate_grace", "24h", "24h1ns", "limits.body_rate_grace is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"rotation_timeout", "24h", "24h1ns", "rotation_timeout is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"rotation_timeout", "24h", "1279000h", "rotation_timeout is 1279000h0m0s: it must be at most 24h0m0s"},
		// max_header_bytes plus net/http's 4096 wrapped negative: every
		// request refused 431.
		{"limits.max_header_bytes", "1048576", "1048577", "limits.max_header_bytes is 1048577: it must be at most 1048576 bytes (1 MiB"},
		{"limits.max_header_bytes", "1048576", "9223372036854775807", "limits.max_header_bytes is 9223372036854775807: it must be at most 1048576"},
		// An admin token's expiry past 2262 wrapped in the store and read
		// back as long expired.
		{"admin_token_max_ttl", "87600h", "87600h1ns", "admin_token_max_ttl is 87600h0m0.000000001s: it must be at most 87600h0m0s"},
		{"admin_token_max_ttl", "87600h", "2500000h", "admin_token_max_ttl is 2500000h0m0s: it must be at most 87600h0m0s"},
		{"admin_session_ttl", "8760h", "8760h1ns", "admin_session_ttl is 8760h0m0.000000001s: it must be at most 8760h0m0s"},
		{"admin_session_idle", "8760h", "8760h1ns", "admin_session_idle is 8760h0m0.000000001s: it must be at most 8760h0m0s"},
		// A crash's pending credential was never taken for stale and revoked.
		{"minted.stale_pending", "24h", "24h1ns", "minted.stale_pending is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"minted.role_sweep_interval", "24h", "24h1ns", "minted.role_sweep_interval is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"rotation_interval", "24h", "24h1ns", "rotation_interval is 24h0m0.000000001s: it must be at most 24h0m0s"},
		// A backoff of centuries held a target's later alerts for ever, or
		// (past ~234 years) wrapped negative and the next retry panicked.
		{"alerts.initial_backoff", "24h", "24h1ns", "alerts.initial_backoff is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"alerts.max_backoff", "24h", "24h1ns", "alerts.max_backoff is 24h0m0.000000001s: it must be at most 24h0m0s"},
		{"alerts.health_interval", "24h", "24h1ns", "alerts.health_interval is 24h0m0.000000001s: it must be at most 24h0m0s"},
		// The queue is allocated whole at start: a huge one panicked.
		{"alerts.queue", "65536", "65537", "alerts.queue is 65537: it must be at most 65536"},
		{"alerts.queue", "65536", "1000000000000", "alerts.queue is 1000000000000: it must be at most 65536"},
	}
	doc := func(key, v string) string {
		if k, ok := strings.CutPrefix(key, "limits."); ok {
			return "limits:\n  " + k + ": " + v + "\n"
		}
		if k, ok := strings.CutPrefix(key, "minted."); ok {
			return "minted:\n  " + k + ": " + v + "\n"
		}
		if k, ok := strings.CutPrefix(key, "alerts."); ok {
			return "alerts:\n  targets:\n    - name: t\n      url: https://alerts.example/hook\n      format: slack\n  " + k + ": " + v + "\n"
		}
		return key + ": " + v + "\n"
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%s=%s", tc.key, tc.over), func(t *testing.T) {
			at := filepath.Join(dir, fmt.Sprintf("at%d.yaml", i))
			os.WriteFile(at, []byte(doc(tc.key, tc.at)), 0o600)
			if _, err := LoadConfigFile(at); err != nil {
				t.Errorf("%s: %s (the bound) refused: %v", tc.key, tc.at, err)
			}
			over := filepath.Join(dir, fmt.Sprintf("over%d.yaml", i))
			os.WriteFile(over, []byte(doc(tc.key, tc.over)), 0o600)
			_, err := LoadConfigFile(over)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), over) {
				t.Errorf("%s: %s loaded or refused in other words: %v; want %q", tc.key, tc.over, err, tc.want)
			}
		})
	}
}

func TestLoadConfigFileGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mayfly.yaml")
	doc := "data_dir: /d\nadmin_cidrs: [10.0.0.0/8]\nlimits:\n  token_rate: 200\n  read_timeout: 30s\ngithub_leak_keys:\n  any-key-id: pem\naudit_sinks:\n  - type: file\n    path: /x\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/d" || c.Limits.TokenRate != 200 || c.Limits.ReadTimeout != 30*time.Second || c.GitHubLeakKeys["any-key-id"] != "pem" ||
		len(c.AuditSinks) != 1 || c.AuditSinks[0].Path != "/x" || len(c.AdminCIDRs) != 1 {
		t.Errorf("loaded %+v", c)
	}
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	if _, err := LoadConfigFile(empty); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

// An operator's limits.max_header_bytes is what the listener enforces,
// smaller than the default too (it was silently raised to 64 KiB); one too
// small for a job's request is refused at start, in words.
func TestMaxHeaderBytesHonoured(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  int
		want int    // the listener's MaxHeaderBytes
		err  string // New refuses
	}{
		{"unset", 0, DefaultMaxHeaderBytes, ""},
		{"smaller than the default", 20000, 20000, ""},
		{"the minimum", MinMaxHeaderBytes, MinMaxHeaderBytes, ""},
		{"larger", 1 << 20, 1 << 20, ""},
		{"too small", 1024, 0, "limits.max_header_bytes is 1024: it must be at least 16384"},
		{"negative", -5, 0, "limits.max_header_bytes is -5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0"}
			cfg.Limits.MaxHeaderBytes = tt.set
			s, err := New(ctx, cfg, NewLogger(io.Discard, "json", "info"))
			if tt.err != "" {
				if err == nil {
					s.Close(ctx)
				}
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("New = %v, want an error saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			if got := s.http.MaxHeaderBytes; got != tt.want {
				t.Errorf("listener MaxHeaderBytes %d, want %d", got, tt.want)
			}
			if got := s.framingOptions().maxHead; got != tt.want+4096 {
				t.Errorf("framing maxHead %d, want %d", got, tt.want+4096)
			}
		})
	}
}

// configKeys returns the dotted yaml keys of t, nested structs (and lists
// of them) included.
func configKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeOf(time.Duration(0)) {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		out = append(out, prefix+name)
		out = append(out, configKeys(f.Type, prefix+name+".")...)
	}
	return out
}

// Every key the config file accepts is documented in the README, as
// `key` or in a YAML example; and every YAML example of
// the README that is a config (not a policy) loads. The file's timeouts,
// log level and TLS keys were once accepted but written nowhere.
func TestConfigKeysDocumented(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, k := range configKeys(reflect.TypeOf(Config{}), "") {
		leaf := k[strings.LastIndex(k, ".")+1:]
		// `leaf`, a "leaf:" of an example (or its comments), or a name
		// with an underscore written in prose.
		documented := strings.Contains(readme, "`"+leaf+"`") || strings.Contains(readme, "`"+k+"`") ||
			regexp.MustCompile(`\b`+regexp.QuoteMeta(leaf)+`:`).MatchString(readme) ||
			strings.Contains(leaf, "_") && regexp.MustCompile(`\b`+regexp.QuoteMeta(leaf)+`\b`).MatchString(readme)
		if !documented {
			t.Errorf("config key %s is accepted but the README does not document it", k)
		}
	}
	dir := t.TempDir()
	for i, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		if strings.Contains(m[1], "\ngrants:") || strings.HasPrefix(m[1], "issuers:") {
			continue // a policy
		}
		p := filepath.Join(dir, fmt.Sprintf("block%d.yaml", i))
		os.WriteFile(p, []byte(m[1]), 0o600)
		if _, err := LoadConfigFile(p); err != nil {
			t.Errorf("the README's YAML block %d does not load as a config: %v\n%s", i, err, m[1])
		}
	}
}

// A log format or level the server does not know (a typo: --log-format
// jsn, log_level: verbose) once fell back to text and info silently, so a
// SIEM expecting JSON got text; now the start is refused, naming the flag
// and key and the values known.
func TestUnknownLogFormatOrLevelRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format, level string
		want          string
	}{
		{"jsn", "info", "log_format"},
		{"text", "verbose", "log_level"},
		{"JSON", "WARN", ""}, // any case
		{"", "", ""},         // the defaults
	} {
		s, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", MetricsListen: "off", LogFormat: tc.format, LogLevel: tc.level}, nil)
		if err == nil {
			s.Close(context.Background())
		}
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("format %q level %q: %v, want an error naming %q", tc.format, tc.level, err, tc.want)
		}
	}
}

// trusted_proxies that cover every address would let any caller write the
// X-Forwarded-For that decides its address (admin_cidrs, source_cidrs,
// bind_source_ip, rate limits): refused, however it is spelled.
func TestTrustedProxiesMustNotCoverEveryAddress(t *testing.T) {
	tests := []struct {
		in      []string
		wantErr string
	}{
		{[]string{"10.0.0.5/32", "192.168.0.0/16", "fd00::/8", "127.0.0.1"}, ""},
		{nil, ""},
		{[]string{"10.0.0.5"}, ""},
		{[]string{"10.0.0.5", "0.0.0.0/0"}, `trusted_proxies: "0.0.0.0/0" covers every address`},
		{[]string{"::/0"}, `trusted_proxies: "::/0" covers every address`},
		{[]string{"::ffff:0.0.0.0/96"}, `trusted_proxies: "::ffff:0.0.0.0/96" covers every address`},
		{[]string{"10.0.0.0/0"}, `trusted_proxies: "10.0.0.0/0" covers every address`},
		{[]string{"nope"}, `trusted_proxies: "nope" is not a CIDR or address`},
		// Masked as IPv6, "::ffff:0.0.0.0/1" would be ::/1, every global
		// IPv6 address, and "::ffff:10.0.0.0/8" ::/8, which holds ::1.
		{[]string{"::ffff:0.0.0.0/1"}, `trusted_proxies: "::ffff:0.0.0.0/1" is an IPv4-mapped prefix shorter than /96`},
		{[]string{"::ffff:10.0.0.0/8"}, `trusted_proxies: "::ffff:10.0.0.0/8" is an IPv4-mapped prefix shorter than /96`},
		{[]string{"::ffff:10.0.0.0/104", "::ffff:10.0.0.5"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			got, err := parseTrustedProxies(tt.in)
			if tt.wantErr == "" {
				if err != nil || len(got) != len(tt.in) {
					t.Fatalf("got %v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// Callers' addresses are compared unmapped (clientip): an admin_cidrs or
// trusted_proxies entry written IPv4-mapped means its IPv4 network, as a
// mapped source_cidrs is refused rather than never matching.
func TestMappedPrefixesAreIPv4(t *testing.T) {
	tests := []struct {
		in      string
		admits  []string
		refuses []string
	}{
		{"::ffff:10.0.0.0/104", []string{"10.1.2.3", "10.255.0.1"}, []string{"11.0.0.1", "::1", "127.0.0.1"}},
		{"::ffff:192.0.2.7", []string{"192.0.2.7"}, []string{"192.0.2.8"}},
		{"::ffff:192.0.2.0/120", []string{"192.0.2.200"}, []string{"192.0.3.1"}},
		{"10.0.0.0/8", []string{"10.1.2.3"}, []string{"11.0.0.1"}},
		{"fe80::1%eth0", []string{"fe80::1"}, []string{"fe80::2"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ps, err := parsePrefixes([]string{tt.in}, "admin_cidrs")
			if err != nil || len(ps) != 1 {
				t.Fatalf("parsePrefixes: %v, %v", ps, err)
			}
			for _, a := range tt.admits {
				if !ps[0].Contains(netip.MustParseAddr(a)) {
					t.Errorf("%s (read as %s) does not hold %s", tt.in, ps[0], a)
				}
			}
			for _, a := range tt.refuses {
				if ps[0].Contains(netip.MustParseAddr(a)) {
					t.Errorf("%s (read as %s) holds %s", tt.in, ps[0], a)
				}
			}
		})
	}
}
