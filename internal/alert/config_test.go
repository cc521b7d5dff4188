package alert

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name, yaml, err string
	}{
		{"slack on https", `targets: [{name: s, url: "https://hooks.example/T/B/x", format: slack}]`, ""},
		{"json needs a key", `targets: [{name: j, url: "https://example.com/h"}]`, "hmac_key_file or hmac_key_secret"},
		{"json with key file", `targets: [{name: j, url: "https://example.com/h", hmac_key_file: /k}]`, ""},
		{"both keys", `targets: [{name: j, url: "https://example.com/h", hmac_key_file: /k, hmac_key_secret: s}]`, "not both"},
		{"http loopback", `targets: [{name: j, url: "http://127.0.0.1:9/h", hmac_key_file: /k}]`, ""},
		{"http localhost", `targets: [{name: j, url: "http://localhost:9/h", hmac_key_file: /k}]`, ""},
		{"http off loopback", `targets: [{name: j, url: "http://alerts.example.com/h", hmac_key_file: /k}]`, "allow_http"},
		{"http off loopback allowed", `targets: [{name: j, url: "http://alerts.example.com/h", hmac_key_file: /k, allow_http: true}]`, ""},
		{"bad url", `targets: [{name: j, url: "not a url", hmac_key_file: /k}]`, "absolute"},
		{"ftp url", `targets: [{name: j, url: "ftp://example.com/x", hmac_key_file: /k}]`, "scheme"},
		{"user in url", `targets: [{name: j, url: "https://u:p@example.com/x", hmac_key_file: /k}]`, "user"},
		{"no targets", `rules: [{rule: leak_revoked}]`, "at least one target"},
		{"unnamed target", `targets: [{url: "https://example.com/h", format: slack}]`, "needs a name"},
		{"duplicate target", `targets: [{name: a, url: "https://e.com/h", format: slack}, {name: a, url: "https://e.com/i", format: slack}]`, "used twice"},
		{"bad format", `targets: [{name: a, url: "https://e.com/h", format: teams}]`, "slack or json"},
		{"unknown rule", `{targets: [{name: a, url: "https://e.com/h", format: slack}], rules: [{rule: leak}]}`, `unknown rule "leak"`},
		{"rule twice", `{targets: [{name: a, url: "https://e.com/h", format: slack}], rules: [{rule: leak_revoked}, {rule: leak_revoked}]}`, "twice"},
		{"bad by", `{targets: [{name: a, url: "https://e.com/h", format: slack}], rules: [{rule: refused_burst, by: job}]}`, "identity, source or both"},
		{"by on other rule", `{targets: [{name: a, url: "https://e.com/h", format: slack}], rules: [{rule: leak_revoked, by: source}]}`, "applies only"},
		{"negative threshold", `{targets: [{name: a, url: "https://e.com/h", format: slack}], rules: [{rule: mass_revocation, threshold: -1}]}`, "negative"},
		{"target rule not enabled", `{targets: [{name: a, url: "https://e.com/h", format: slack, rules: [refused_burst]}], rules: [{rule: leak_revoked}]}`, "not enabled"},
		{"negative queue", `{targets: [{name: a, url: "https://e.com/h", format: slack}], queue: -1}`, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			if err := yaml.Unmarshal([]byte(tt.yaml), &c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.err)
			}
			if strings.Contains(err.Error(), "u:p@") || strings.Contains(err.Error(), "/T/B/") {
				t.Fatalf("error quotes the URL: %v", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Targets: []TargetConfig{{Name: "a", URL: "https://e.com/h", Format: "slack"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Rules) != len(ruleNames) {
		t.Fatalf("no rules listed enables %d rules, want all %d", len(c.Rules), len(ruleNames))
	}
	for _, r := range c.Rules {
		if r.Rule == RuleRefusedBurst && (r.Threshold != 10 || r.Window != time.Minute || r.By != "both") {
			t.Fatalf("refused_burst defaults: %+v", r)
		}
	}
	if c.Queue != 1000 || c.MaxAttempts != 10 || c.InitialBackoff != time.Second || c.MaxAge != 10*time.Minute {
		t.Fatalf("defaults: %+v", c)
	}
}
