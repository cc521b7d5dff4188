package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// base is a small valid policy; error cases edit it. Line numbers:
//
//	1 issuers:          8 credential:     15 - methods
//	3 url               9 secret          16 paths
//	4 audience         10 grants:         17 who:
//	5 upstreams:       11 deploy:         18 - issuer
//	6 api:             12 upstream        19 claims:
//	7 url              13 ttl             20 project
//	                   14 allow:
const base = `issuers:
  ci:
    url: https://ci.example.com
    audience: mayfly
upstreams:
  api:
    url: https://api.example.com
    credential:
      secret: api-token
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/repos/**"]
    who:
      - issuer: ci
        claims:
          project: app
`

func one(name, data string) []File { return []File{{Name: name, Data: []byte(data)}} }

func secrets(names ...string) func(string) bool {
	return func(n string) bool { return slices.Contains(names, n) }
}

func mustParse(t *testing.T, files []File) *Policy {
	t.Helper()
	p, err := Parse(files, nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestParseSpecSample(t *testing.T) {
	files, err := ReadPaths("testdata/spec.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(files, secrets("github-deploy-token"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	is := p.Issuers["github"]
	if is == nil || is.URL != "https://token.actions.githubusercontent.com" || is.Audience != "https://mayfly.example.com" ||
		!is.Shared || is.Preset != "github" || !slices.Equal(is.Algorithms, []string{"RS256"}) || is.JWKSURL != "" {
		t.Errorf("issuer = %+v", is)
	}
	up := p.Upstreams["github-api"]
	if up == nil || up.URL != "https://api.github.com" || up.Credential != (Credential{Secret: "github-deploy-token", Header: "Authorization", Prefix: "Bearer "}) {
		t.Errorf("upstream = %+v", up)
	}
	g := p.Grants["deploy-prod"]
	if g == nil {
		t.Fatal("no grant deploy-prod")
	}
	if g.Upstream != "github-api" || g.TTL != 10*time.Minute || g.MaxTTL != time.Hour || !g.BindSourceIP || g.MaxUses != 0 || len(g.Rules) != 2 || len(g.Who) != 1 {
		t.Errorf("grant = %+v", g)
	}
	w := g.Who[0]
	if w.Issuer != "github" || w.Broad || len(w.Claims) != 3 || !slices.Equal(w.Claims["repository_id"], []string{"123456789"}) ||
		!slices.Equal(w.SourceCIDRs, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Errorf("who = %+v", w)
	}
	if len(p.Hash) != 64 || string(p.Source) != string(files[0].Data) {
		t.Errorf("hash %q, source %d bytes", p.Hash, len(p.Source))
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %v", p.Warnings)
	}
	if _, ok := g.Allow("GET", "/repos/acme/app/pulls/1"); !ok {
		t.Error("GET under /repos/acme/app refused")
	}
	if i, ok := g.Allow("POST", "/repos/acme/app/deployments"); !ok || i != 1 {
		t.Errorf("POST deployments: %d %v", i, ok)
	}
	if _, ok := g.Allow("POST", "/repos/acme/app/releases"); ok {
		t.Error("POST releases allowed")
	}
	// the secret is checked when asked to
	_, err = Parse(files, secrets())
	wantErr(t, err, `spec.yaml:12: upstreams.github-api.credential.secret: unknown secret "github-deploy-token"`)
	// and the refusal, which `mayfly policy plan/apply` and a start print,
	// names the command that stores it, not only the API call
	wantErr(t, err, `mayfly secret put github-deploy-token`)
}

func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error is %T, not policy.Errors: %v", err, err)
	}
	for _, e := range es {
		if e.File == "" || e.Line < 1 {
			t.Errorf("error without a position: %#v", e)
		}
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name      string
		old, new  string // edit of base ("" old: append new)
		secrets   []string
		want      []string
		wantCount int // 0: don't check
	}{
		{"unknown top key", "", "extra: 1\n", nil, []string{`policy.yaml:21: extra: unknown key "extra"`}, 1},
		{"typo key", "    ttl: 10m", "    tll: 10m", nil, []string{`policy.yaml:13: grants.deploy.tll: unknown key "tll" (did you mean "ttl"?)`, `policy.yaml:11: grants.deploy.ttl: missing`}, 2},
		{"unknown nested key", "      secret: api-token", "      secret: api-token\n      value: hunter2", nil, []string{`policy.yaml:10: upstreams.api.credential.value: unknown key "value"`}, 1},
		{"bad duration", "ttl: 10m", "ttl: 10x", nil, []string{`policy.yaml:13: grants.deploy.ttl: bad duration "10x"`}, 1},
		{"number duration", "ttl: 10m", "ttl: 600", nil, []string{`policy.yaml:13: grants.deploy.ttl: bad duration "600"`}, 1},
		{"negative duration", "ttl: 10m", "ttl: -5m", nil, []string{`policy.yaml:13: grants.deploy.ttl: duration "-5m" must be positive`}, 1},
		{"ttl too long", "ttl: 10m", "ttl: 48h", nil, []string{`policy.yaml:13: grants.deploy.ttl: duration "48h" is more than 24h`}, 1},
		{"ttl over max_ttl", "ttl: 10m", "ttl: 2h\n    max_ttl: 1h", nil, []string{`policy.yaml:14: grants.deploy.max_ttl: max_ttl 1h is less than ttl 2h`}, 1},
		{"no who", "    who:\n      - issuer: ci\n        claims:\n          project: app\n", "", nil, []string{`policy.yaml:11: grants.deploy.who: missing`}, 0},
		{"empty who", "    who:\n      - issuer: ci\n        claims:\n          project: app\n", "    who: []\n", nil, []string{`policy.yaml:17: grants.deploy.who: empty`}, 0},
		{"no allow", "    allow:\n      - methods: [GET]\n        paths: [\"/repos/**\"]\n", "", nil, []string{`policy.yaml:11: grants.deploy.allow: missing`}, 1},
		{"unknown upstream", "upstream: api", "upstream: nope", nil, []string{`policy.yaml:12: grants.deploy.upstream: unknown upstream "nope"`}, 1},
		{"unknown issuer", "- issuer: ci", "- issuer: nope", nil, []string{`policy.yaml:18: grants.deploy.who[0].issuer: unknown issuer "nope"`}, 1},
		{"unknown secret", "", "", []string{"other"}, []string{`policy.yaml:9: upstreams.api.credential.secret: unknown secret "api-token"`}, 1},
		{"http issuer", "url: https://ci.example.com", "url: http://ci.example.com", nil, []string{`policy.yaml:3: issuers.ci.url: "http://ci.example.com": http is allowed only on a loopback host`}, 1},
		{"ftp issuer", "url: https://ci.example.com", "url: ftp://ci.example.com", nil, []string{`policy.yaml:3: issuers.ci.url: "ftp://ci.example.com" must start with https://`}, 1},
		{"issuer query", "url: https://ci.example.com", "url: https://ci.example.com/?a=b", nil, []string{`policy.yaml:3: issuers.ci.url: "https://ci.example.com/?a=b" must not have a query or fragment`}, 1},
		{"no audience", "    audience: mayfly\n", "", nil, []string{`policy.yaml:2: issuers.ci.audience: missing`}, 1},
		{"alg none", "    audience: mayfly", "    audience: mayfly\n    algorithms: [RS256, none]", nil, []string{`policy.yaml:5: issuers.ci.algorithms[1]: algorithm "none" is never accepted`}, 1},
		{"allow_multiple_audiences not a bool", "    audience: mayfly", "    audience: mayfly\n    allow_multiple_audiences: yes please", nil, []string{`policy.yaml:5: issuers.ci.allow_multiple_audiences: expected true or false`}, 1},
		{"alg HS256", "    audience: mayfly", "    audience: mayfly\n    algorithms: HS256", nil, []string{`policy.yaml:5: issuers.ci.algorithms: symmetric algorithm "HS256" is never accepted`}, 1},
		{"alg unknown", "    audience: mayfly", "    audience: mayfly\n    algorithms: [rs256]", nil, []string{`policy.yaml:5: issuers.ci.algorithms[0]: unknown algorithm "rs256"`}, 1},
		{"jwks http", "    audience: mayfly", "    audience: mayfly\n    jwks_url: http://keys.example.com/jwks", nil, []string{`policy.yaml:5: issuers.ci.jwks_url:`}, 1},
		{"bad preset", "    audience: mayfly", "    audience: mayfly\n    preset: jenkins", nil, []string{`policy.yaml:5: issuers.ci.preset: unknown preset "jenkins"`}, 1},
		{"upstream ftp", "url: https://api.example.com", "url: ftp://api.example.com", nil, []string{`policy.yaml:7: upstreams.api.url: "ftp://api.example.com" is not an absolute http(s) URL`}, 1},
		{"upstream relative", "url: https://api.example.com", "url: /api", nil, []string{`policy.yaml:7: upstreams.api.url: "/api" is not an absolute`}, 1},
		{"upstream userinfo", "url: https://api.example.com", "url: https://u:p@api.example.com", nil, []string{`policy.yaml:7: upstreams.api.url: "https://xxxxx@api.example.com" must not contain user info`}, 1},
		{"no credential", "    credential:\n      secret: api-token\n", "", nil, []string{`policy.yaml:6: upstreams.api.credential: missing`}, 1},
		{"forbidden header", "      secret: api-token", "      secret: api-token\n      header: host", nil, []string{`policy.yaml:10: upstreams.api.credential.header: header "host" cannot carry a credential`}, 1},
		{"bad header", "      secret: api-token", "      secret: api-token\n      header: \"X Token\"", nil, []string{`policy.yaml:10: upstreams.api.credential.header: bad header name "X Token"`}, 1},
		{"prefix newline", "      secret: api-token", "      secret: api-token\n      prefix: \"Bearer\\r\\nX: \"", nil, []string{`policy.yaml:10: upstreams.api.credential.prefix: control characters`}, 1},
		{"bad timeout", "      secret: api-token", "      secret: api-token\n    timeout: soon", nil, []string{`policy.yaml:10: upstreams.api.timeout: bad duration "soon"`}, 1},
		{"lowercase method", "methods: [GET]", "methods: [get]", nil, []string{`policy.yaml:15: grants.deploy.allow[0].methods[0]: method "get" must be uppercase ("GET")`}, 1},
		{"star and method", "methods: [GET]", "methods: [GET, \"*\"]", nil, []string{`policy.yaml:15: grants.deploy.allow[0].methods[0]: "*" already allows GET`}, 1},
		{"bad method", "methods: [GET]", "methods: [\"GE T\"]", nil, []string{`policy.yaml:15: grants.deploy.allow[0].methods[0]: bad method "GE T"`}, 1},
		{"empty methods", "methods: [GET]", "methods: []", nil, []string{`policy.yaml:15: grants.deploy.allow[0].methods: empty list`}, 1},
		{"relative path", `paths: ["/repos/**"]`, `paths: ["repos/**"]`, nil, []string{`policy.yaml:16: grants.deploy.allow[0].paths[0]: path "repos/**" must start with /`}, 1},
		{"dotdot path", `paths: ["/repos/**"]`, `paths: ["/repos/../admin"]`, nil, []string{`policy.yaml:16: grants.deploy.allow[0].paths[0]: path "/repos/../admin" has a ".." segment`}, 1},
		{"partial star", `paths: ["/repos/**"]`, `paths: ["/repos/a**"]`, nil, []string{`policy.yaml:16: grants.deploy.allow[0].paths[0]: path "/repos/a**": * and ** stand only as a whole segment`}, 1},
		{"trailing slash", `paths: ["/repos/**"]`, `paths: ["/repos/"]`, nil, []string{`policy.yaml:16: grants.deploy.allow[0].paths[0]: path "/repos/" ends with /`}, 1},
		{"empty segment", `paths: ["/repos/**"]`, `paths: ["/repos//x"]`, nil, []string{`policy.yaml:16: grants.deploy.allow[0].paths[0]: path "/repos//x" has an empty segment`}, 1},
		{"second path bad", `paths: ["/repos/**"]`, "paths:\n          - /ok\n          - nope", nil, []string{`policy.yaml:18: grants.deploy.allow[0].paths[1]: path "nope" must start with /`}, 1},
		{"null claim", "project: app", "project:", nil, []string{`policy.yaml:20: grants.deploy.who[0].claims.project: missing value`}, 1},
		{"empty claim", "project: app", `project: ""`, nil, []string{`policy.yaml:20: grants.deploy.who[0].claims.project: empty`}, 1},
		{"map claim", "project: app", "project: {a: b}", nil, []string{`policy.yaml:20: grants.deploy.who[0].claims.project: expected a string or a list of strings, got a mapping`}, 1},
		{"bad cidr", "          project: app", "          project: app\n        source_cidrs: [10.0.0.0/33]", nil, []string{`policy.yaml:21: grants.deploy.who[0].source_cidrs[0]: bad CIDR "10.0.0.0/33"`}, 1},
		{"host bits", "          project: app", "          project: app\n        source_cidrs: 10.1.2.3/8", nil, []string{`policy.yaml:21: grants.deploy.who[0].source_cidrs: CIDR "10.1.2.3/8" has host bits set (did you mean 10.0.0.0/8?)`}, 1},
		{"broad not bool", "          project: app", "          project: app\n        broad: yes", nil, []string{`policy.yaml:21: grants.deploy.who[0].broad: expected true or false, got "yes"`}, 1},
		{"max_uses negative", "    ttl: 10m", "    ttl: 10m\n    max_uses: -1", nil, []string{`policy.yaml:14: grants.deploy.max_uses: -1 is out of range`}, 1},
		{"max_uses word", "    ttl: 10m", "    ttl: 10m\n    max_uses: many", nil, []string{`policy.yaml:14: grants.deploy.max_uses: expected a whole number, got "many"`}, 1},
		{"duplicate key", "    ttl: 10m", "    ttl: 10m\n    ttl: 5m", nil, []string{`policy.yaml:14: grants.deploy.ttl: duplicate key "ttl"`}, 1},
		{"duplicate grant same file", "", "  deploy:\n    ttl: 1m\n", nil, []string{`policy.yaml:21: grants.deploy: duplicate key "deploy"`}, 1},
		{"bad name", "  deploy:", "  \"deploy prod\":", nil, []string{`policy.yaml:11: grants.deploy prod: bad name "deploy prod"`}, 1},
		{"merge key", "    ttl: 10m", "    <<: {ttl: 10m}", nil, []string{`policy.yaml:13: grants.deploy: merge keys (<<) are not supported`}, 0},
		{"allow not a list", "    allow:\n      - methods: [GET]\n        paths: [\"/repos/**\"]\n", "    allow: everything\n", nil, []string{`policy.yaml:14: grants.deploy.allow: expected a list, got "everything"`}, 1},
		{"grant not a mapping", "  deploy:\n", "  other: 5\n  deploy:\n", nil, []string{`policy.yaml:11: grants.other: expected a mapping, got "5"`}, 1},
		{"empty grant", "", "  empty:\n", nil, []string{`policy.yaml:21: grants.empty: empty`}, 1},
		{"top not a mapping", base, "- a\n- b\n", nil, []string{`policy.yaml:1: expected a mapping, got a list`}, 1},
		{"syntax error", "    audience: mayfly", "    audience: [mayfly", nil, []string{`policy.yaml:`, `bad YAML`}, 1},
		{"tab indent", "    ttl: 10m", "\tttl: 10m", nil, []string{`policy.yaml:13: bad YAML`}, 1},
		{"custom tag", "audience: mayfly", "audience: !secret mayfly", nil, []string{`policy.yaml:4: issuers.ci.audience: unsupported tag !secret`}, 1},
		{"value and reference errors together", "upstream: api\n    ttl: 10m", "upstream: nope\n    ttl: 10x", nil, []string{`policy.yaml:12: grants.deploy.upstream: unknown upstream "nope"`, `policy.yaml:13: grants.deploy.ttl: bad duration "10x"`}, 2},
		{"many at once", "ttl: 10m", "ttl: 10x\n    max_ttl: 10y\n    bind_source_ip: 3", nil, []string{"policy.yaml:13:", "policy.yaml:14:", "policy.yaml:15:"}, 3},
		{"broad github", "url: https://ci.example.com", "url: https://token.actions.githubusercontent.com", nil,
			[]string{`policy.yaml:18: grants.deploy.who[0]: issuer "ci" (https://token.actions.githubusercontent.com) is shared by everyone on the platform and this entry pins no repository: add one of repository_id, repository_owner_id, repository, repository_owner, or say broad: true`}, 1},
		{"broad gitlab sub only", "url: https://ci.example.com", "url: https://gitlab.com", nil, []string{`policy.yaml:18: grants.deploy.who[0]: issuer "ci" (https://gitlab.com) is shared by everyone on the platform and this entry pins no project: add one of project_id`}, 1},
		{"preset contradicts", "url: https://ci.example.com", "url: https://gitlab.com\n    preset: github", nil, []string{`policy.yaml:4: issuers.ci.preset: preset "github" contradicts the url, which is gitlab's`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base + tt.new
			if tt.old != "" {
				if !strings.Contains(base, tt.old) {
					t.Fatalf("base has no %q", tt.old)
				}
				src = strings.Replace(base, tt.old, tt.new, 1)
			}
			var se func(string) bool
			if tt.secrets != nil {
				se = secrets(tt.secrets...)
			}
			p, err := Parse(one("policy.yaml", src), se)
			if p != nil {
				t.Error("policy returned with an error")
			}
			wantErr(t, err, tt.want...)
			var es Errors
			if errors.As(err, &es) && tt.wantCount > 0 && len(es) != tt.wantCount {
				t.Errorf("%d errors, want %d:\n%v", len(es), tt.wantCount, err)
			}
		})
	}
}

// An issuer or upstream url with user info is refused, and whichever
// check refuses it (scheme, http off loopback, parse, user info) quotes it
// without the user info: policy check prints the error (a CI log), PUT
// /v1/policy answers it, and a SIGHUP reload logs it.
func TestURLErrorsNeverQuoteAPassword(t *testing.T) {
	const pw = "PLANTEDpolicyPassw0rd"
	iss := `issuers:
  ci: {url: "%ISS%", audience: x}
upstreams:
  api:
    url: "%UP%"
    credential: {secret: s}
grants:
  g:
    upstream: api
    ttl: 10m
    allow: [{methods: [GET], paths: ["/**"]}]
    who: [{issuer: ci, claims: {p: x}}]
`
	for _, tt := range []struct{ name, iss, up string }{
		{"issuer over http off loopback", "http://ci:" + pw + "@idp.example.com", "https://api.example.com"},
		{"issuer with another scheme", "ftp://ci:" + pw + "@idp.example.com", "https://api.example.com"},
		{"upstream with another scheme", "https://idp.example.com", "ftp://deploy:" + pw + "@api.example.com"},
		{"upstream with a query", "https://idp.example.com", "https://deploy:" + pw + "@api.example.com/?x=1"},
		{"issuer that does not parse", "https://ci:" + pw + "%zz@idp.example.com", "https://api.example.com"},
		{"issuer read as opaque", "ci:" + pw + "@idp.example.com", "https://api.example.com"},
		{"upstream with a raw / in the password", "https://idp.example.com", "https://deploy:a/" + pw + "@api.example.com"},
		{"upstream with a token for user name", "https://idp.example.com", "https://" + pw + "@api.example.com"},
		{"upstream token for user name over http", "https://idp.example.com", "ftp://" + pw + "@api.example.com"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			y := strings.NewReplacer("%ISS%", tt.iss, "%UP%", tt.up).Replace(iss)
			_, err := Parse([]File{{Name: "p.yaml", Data: []byte(y)}}, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "PLANTED") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, old, new string
		check          func(t *testing.T, p *Policy)
		warn           string
	}{
		{"base", "", "", func(t *testing.T, p *Policy) {
			if len(p.Warnings) != 0 {
				t.Errorf("warnings: %v", p.Warnings)
			}
			if p.Grants["deploy"].MaxTTL != 10*time.Minute {
				t.Error("max_ttl does not default to ttl")
			}
		}, ""},
		{"loopback http issuer", "url: https://ci.example.com", "url: http://127.0.0.1:8080", nil, ""},
		{"localhost http issuer", "url: https://ci.example.com", "url: http://localhost:8080/x", nil, ""},
		{"ipv6 loopback http issuer", "url: https://ci.example.com", "url: http://[::1]:8080", nil, ""},
		{"numeric claims", "project: app", "project_id: 123456789\n          main: true\n          ids: [1, 2.5, app]", func(t *testing.T, p *Policy) {
			c := p.Grants["deploy"].Who[0].Claims
			if !slices.Equal(c["project_id"], []string{"123456789"}) || !slices.Equal(c["main"], []string{"true"}) || !slices.Equal(c["ids"], []string{"1", "2.5", "app"}) {
				t.Errorf("claims = %v", c)
			}
		}, ""},
		{"every method", "methods: [GET]", `methods: "*"`, func(t *testing.T, p *Policy) {
			if _, ok := p.Grants["deploy"].Allow("PROPFIND", "/repos/x"); !ok {
				t.Error("* does not allow PROPFIND")
			}
		}, ""},
		{"upstream extras", "      secret: api-token", "      secret: api-token\n      header: x-api-key\n    ca_file: /etc/ca.pem\n    timeout: 30s", func(t *testing.T, p *Policy) {
			up := p.Upstreams["api"]
			if up.Credential.Header != "X-Api-Key" || up.CAFile != "/etc/ca.pem" || up.Timeout != 30*time.Second {
				t.Errorf("upstream = %+v", up)
			}
		}, ""},
		{"upstream trailing slash", "url: https://api.example.com", "url: https://api.example.com/v3/", func(t *testing.T, p *Policy) {
			if u := p.Upstreams["api"].URL; u != "https://api.example.com/v3" {
				t.Errorf("url = %q", u)
			}
		}, ""},
		{"plain http upstream warns", "url: https://api.example.com", "url: http://api.example.com", nil, "policy.yaml:7: upstreams.api.url: plain http"},
		{"algorithms", "    audience: mayfly", "    audience: mayfly\n    algorithms: [ES256, EdDSA, ES256]\n    jwks_url: https://ci.example.com/keys?v=1", func(t *testing.T, p *Policy) {
			if a := p.Issuers["ci"].Algorithms; !slices.Equal(a, []string{"ES256", "EdDSA"}) {
				t.Errorf("algorithms = %v", a)
			}
		}, ""},
		{"max_uses and cidrs", "          project: app", "          project: app\n        source_cidrs: [10.0.0.0/8, 2001:db8::/32, 192.0.2.7]\n    max_uses: 3", func(t *testing.T, p *Policy) {
			g := p.Grants["deploy"]
			if g.MaxUses != 3 || len(g.Who[0].SourceCIDRs) != 3 || g.Who[0].SourceCIDRs[2] != netip.MustParsePrefix("192.0.2.7/32") {
				t.Errorf("grant = %+v", g)
			}
		}, ""},
		{"github pinned by id", "url: https://ci.example.com", "url: https://token.actions.githubusercontent.com", nil, ""}, // claims edited below
		{"broad true", "url: https://ci.example.com", "url: https://token.actions.githubusercontent.com", nil, ""},
		{"github pinned by name warns", "url: https://ci.example.com", "url: https://token.actions.githubusercontent.com", nil, "pins by name only"},
		{"enterprise issuer is not shared", "url: https://ci.example.com", "url: https://token.actions.githubusercontent.com/acme", func(t *testing.T, p *Policy) {
			if is := p.Issuers["ci"]; is.Shared || is.Preset != "github" {
				t.Errorf("issuer = %+v", is)
			}
		}, ""},
		{"multiple audiences off by default", "", "", func(t *testing.T, p *Policy) {
			if p.Issuers["ci"].AllowMultipleAudiences {
				t.Error("allow_multiple_audiences defaults to true")
			}
		}, ""},
		{"allow_multiple_audiences", "    audience: mayfly", "    audience: mayfly\n    allow_multiple_audiences: true", func(t *testing.T, p *Policy) {
			if !p.Issuers["ci"].AllowMultipleAudiences {
				t.Error("allow_multiple_audiences not read")
			}
		}, ""},
		{"self-managed gitlab preset", "    audience: mayfly", "    audience: mayfly\n    preset: gitlab", func(t *testing.T, p *Policy) {
			if is := p.Issuers["ci"]; is.Shared || is.Preset != "gitlab" {
				t.Errorf("issuer = %+v", is)
			}
		}, ""},
		{"shared url other jwks warns", "    audience: mayfly", "    audience: mayfly\n  ci2:\n    url: https://ci.example.com\n    audience: other\n    jwks_url: https://ci.example.com/keys", nil,
			`policy.yaml:5: issuers.ci2.jwks_url: url is also issuer "ci"'s, which has no jwks_url (OIDC discovery): issuers sharing a url share one key source, so this issuer is ignored and its tokens refused`},
		{"shared url two jwks warns", "    audience: mayfly", "    audience: mayfly\n    jwks_url: https://ci.example.com/a\n  ci2:\n    url: https://ci.example.com\n    audience: other\n    jwks_url: https://ci.example.com/b", nil,
			`policy.yaml:6: issuers.ci2.jwks_url: url is also issuer "ci"'s, which has jwks_url "https://ci.example.com/a"`},
		{"shared url same jwks", "    audience: mayfly", "    audience: mayfly\n    jwks_url: https://ci.example.com/keys\n  ci2:\n    url: https://ci.example.com\n    audience: other\n    jwks_url: https://ci.example.com/keys", nil, "issuers.ci2: not used by any grant"},
		{"no claims warns", "        claims:\n          project: app\n", "", nil, `no claims: any token of issuer "ci" matches`},
		{"unused warns", "upstreams:\n", "upstreams:\n  extra:\n    url: https://x.example.com\n    credential: {secret: s}\n", nil, "upstreams.extra: not used by any grant"},
		{"aliases", "      - issuer: ci\n        claims:\n          project: app\n",
			"      - &w\n        issuer: ci\n        claims:\n          project: &apps [app, web]\n      - *w\n  other:\n    upstream: api\n    ttl: 1m\n    allow: [{methods: [GET], paths: [/x]}]\n    who: [{issuer: ci, claims: {project: *apps}}]\n",
			func(t *testing.T, p *Policy) {
				if w := p.Grants["other"].Who[0]; !slices.Equal(w.Claims["project"], []string{"app", "web"}) || len(p.Grants["deploy"].Who) != 2 {
					t.Errorf("aliases not followed: %+v", p.Grants)
				}
			}, ""},
		{"empty sections", base, "issuers:\nupstreams: {}\ngrants:\n", func(t *testing.T, p *Policy) {
			if len(p.Grants) != 0 {
				t.Error("grants")
			}
		}, ""},
		{"empty file", base, "# nothing yet\n", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base
			if tt.old != "" {
				src = strings.Replace(base, tt.old, tt.new, 1)
			}
			switch tt.name {
			case "github pinned by id":
				src = strings.Replace(src, "project: app", "repository_id: \"42\"", 1)
			case "broad true":
				src = strings.Replace(src, "project: app", "workflow: deploy\n        broad: true", 1)
			case "github pinned by name warns":
				src = strings.Replace(src, "project: app", "repository: acme/app", 1)
			}
			p := mustParse(t, one("policy.yaml", src))
			if tt.check != nil {
				tt.check(t, p)
			}
			if tt.warn != "" && !strings.Contains(p.Warnings.Error(), tt.warn) {
				t.Errorf("warnings %q do not contain %q", p.Warnings.Error(), tt.warn)
			}
		})
	}
}

func TestFolderOfFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("10-issuers.yaml", "issuers:\n  ci:\n    url: https://ci.example.com\n    audience: mayfly\n")
	write("20-upstreams.yml", "upstreams:\n  api:\n    url: https://api.example.com\n    credential: {secret: api-token}") // no final newline
	write("30-grants.yaml", "grants:\n  deploy:\n    upstream: api\n    ttl: 10m\n    allow: [{methods: [GET], paths: [/x]}]\n    who: [{issuer: ci, claims: {project: app}}]\n")
	write(".hidden.yaml", "nonsense: [")
	write("notes.txt", "nonsense: [")
	write("sub/40.yaml", "nonsense: [")
	files, err := ReadPaths(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Name))
	}
	if !slices.Equal(names, []string{"10-issuers.yaml", "20-upstreams.yml", "30-grants.yaml"}) {
		t.Fatalf("files = %v", names)
	}
	p := mustParse(t, files)
	if len(p.Issuers) != 1 || len(p.Upstreams) != 1 || len(p.Grants) != 1 {
		t.Fatalf("policy = %+v", p)
	}
	if !strings.Contains(string(p.Source), "# file: "+filepath.Join(dir, "20-upstreams.yml")+"\n") {
		t.Errorf("source lacks separators:\n%s", p.Source)
	}
	// the stored source reads back as the same policy
	back := mustParse(t, one("stored", string(p.Source)))
	if back.Hash != p.Hash {
		t.Error("source does not read back to the same hash")
	}

	// errors name the file they are in; duplicates name the first definition
	write("40-more.yaml", "grants:\n  deploy:\n    upstream: nope\n    ttl: 1m\n    allow: [{methods: [GET], paths: [/x]}]\n    who: [{issuer: ci, claims: {project: app}}]\n")
	files, err = ReadPaths(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(files, nil)
	wantErr(t, err, "40-more.yaml:2: grants.deploy: grant \"deploy\" is already defined at "+filepath.Join(dir, "30-grants.yaml")+":2")

	// a file and a folder together; a missing path; an empty folder
	if _, err := ReadPaths(filepath.Join(dir, "10-issuers.yaml"), filepath.Join(dir, "sub")); err != nil {
		t.Error(err)
	}
	if _, err := ReadPaths(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file read")
	}
	if _, err := ReadPaths(t.TempDir()); err == nil {
		t.Error("empty folder accepted")
	}
	if _, err := ReadPaths(); err == nil {
		t.Error("no paths accepted")
	}
}

// The Source of several files is what the server stores and every node
// parses again: whatever Parse accepts reads back to the same Hash, and
// what would not read back is refused here, not at the next start.
func TestSourceReadsBack(t *testing.T) {
	i := strings.Index(base, "upstreams:")
	head, tail := base[:i], base[i:]
	tests := []struct {
		name  string
		files []File
		err   string // "" when accepted
	}{
		{"plain", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte(tail)}}, ""},
		{"byte-order mark on a later file", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte("\ufeff" + tail)}}, ""},
		{"byte-order mark on each file", []File{{"a.yaml", []byte("\ufeff" + head)}, {"b.yaml", []byte("\ufeff" + tail)}}, ""},
		// Windows PowerShell 5's > and Out-File write UTF-16: say what to do.
		{"UTF-16", []File{{"a.yaml", []byte(head)}, {"b.yaml", append([]byte{0xff, 0xfe}, utf16le(tail)...)}}, "b.yaml:1: file is UTF-16 text, not UTF-8: save it as UTF-8"},
		{"UTF-16 big-endian", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte{0xfe, 0xff, 0, 'x'}}}, "b.yaml:1: file is UTF-16 text, not UTF-8: save it as UTF-8"},
		{"not UTF-8", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte("# caf\xe9\n" + tail)}}, "b.yaml:1: file is not UTF-8 text: save it as UTF-8"},
		{"a directive mid-stream", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte("%YAML 1.1\n---\n" + tail)}}, ""},
		// Joining ends each file with a line break, which a block scalar
		// at the very end keeps: "app" would read back as "app\n".
		{"a block scalar without a final line break", []File{{"a.yaml", []byte(head)}, {"b.yaml", []byte(strings.Replace(tail, "project: app\n", "project: |\n            app", 1))}}, "do not read back"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.files, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse = %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(one("policy-v1.yaml", string(p.Source)), nil)
			if err != nil {
				t.Fatalf("the accepted Source does not parse back: %v", err)
			}
			if back.Hash != p.Hash {
				t.Fatalf("hash %s, read back %s", p.Hash, back.Hash)
			}
		})
	}
}

func utf16le(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8)) // ASCII only
	}
	return b
}

func TestLimits(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	for i := range big {
		big[i] = '#'
	}
	_, err := Parse([]File{{Name: "big.yaml", Data: big}}, nil)
	wantErr(t, err, "big.yaml:1: file is larger than")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big.yaml"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPaths(filepath.Join(dir, "big.yaml")); err == nil {
		t.Error("big file read")
	}

	// a billion laughs: aliases nested so that following them all is 10^9 nodes
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	bomb := strings.Replace(base, "          project: app\n", "          project: *a9\n", 1)
	bomb = strings.Replace(bomb, "issuers:\n", "issuers:\n  "+strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", "\n  ")+"\n", 1)
	start := time.Now()
	_, err = Parse(one("bomb.yaml", bomb), nil)
	if err == nil {
		t.Fatal("bomb accepted")
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("bomb took %v", time.Since(start))
	}
	wantErr(t, err, "bomb.yaml:")

	// an alias bomb along the schema: who entries × claims × values
	var w strings.Builder
	w.WriteString(strings.Split(base, "    who:\n")[0])
	w.WriteString("    who:\n      - &w\n        issuer: ci\n        claims:\n          k0: &v [")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&w, "v%d, ", i)
	}
	w.WriteString("x]\n")
	for i := 1; i < 1000; i++ {
		fmt.Fprintf(&w, "          k%d: *v\n", i)
	}
	for i := 1; i < 1000; i++ {
		w.WriteString("      - *w\n")
	}
	start = time.Now()
	_, err = Parse(one("bomb2.yaml", w.String()), nil)
	wantErr(t, err, "bomb2.yaml:", "too many YAML nodes")
	t.Logf("schema bomb refused in %v", time.Since(start))

	// a long list of distinct values is read in linear time
	var l strings.Builder
	l.WriteString(strings.Replace(base, "project: app", "project: [", 1))
	for i := 0; i < maxListLen+1; i++ {
		fmt.Fprintf(&l, "p%d, ", i)
	}
	_, err = Parse(one("long.yaml", strings.Replace(l.String(), "project: [", "project: [", 1)+"]\n"), nil)
	wantErr(t, err)
}

func TestErrorCap(t *testing.T) {
	var b strings.Builder
	b.WriteString("grants:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "  g%d: {ttl: bad}\n", i)
	}
	_, err := Parse(one("many.yaml", b.String()), nil)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatal(err)
	}
	if len(es) > maxErrors+1 || !strings.Contains(es[len(es)-1].Msg, "more problems") {
		t.Errorf("%d errors, last %v", len(es), es[len(es)-1])
	}
}

func TestHash(t *testing.T) {
	p1 := mustParse(t, one("a.yaml", base))
	// comments, quoting, flow style and order do not change the meaning
	same := `# a comment
grants:
  deploy: {upstream: api, ttl: 10m, max_ttl: 10m, allow: [{methods: GET, paths: "/repos/**"}], who: [{issuer: ci, claims: {project: [app]}}]}
upstreams:
  api: {url: "https://api.example.com/", credential: {secret: api-token, header: authorization}}
issuers:
  ci: {url: https://ci.example.com, audience: mayfly, algorithms: [RS256]}
`
	p2 := mustParse(t, one("b.yaml", same))
	if p1.Hash != p2.Hash {
		t.Errorf("same meaning, different hash:\n%s\n%s", canonical(p1), canonical(p2))
	}
	p3 := mustParse(t, one("a.yaml", strings.Replace(base, "ttl: 10m", "ttl: 11m", 1)))
	if p3.Hash == p1.Hash {
		t.Error("different ttl, same hash")
	}
	multi := mustParse(t, one("a.yaml", strings.Replace(base, "    audience: mayfly", "    audience: mayfly\n    allow_multiple_audiences: true", 1)))
	if multi.Hash == p1.Hash {
		t.Error("allow_multiple_audiences: true, same hash")
	}
	if off := mustParse(t, one("a.yaml", strings.Replace(base, "    audience: mayfly", "    audience: mayfly\n    allow_multiple_audiences: false", 1))); off.Hash != p1.Hash {
		t.Error("allow_multiple_audiences: false (the default) changed the hash")
	}
	if got := Plan(p1, multi); len(got) != 1 || got[0].String() != "~ issuers.ci: allow_multiple_audiences: + true" {
		t.Errorf("plan = %v", got)
	}
}

func TestPlan(t *testing.T) {
	old := mustParse(t, one("old.yaml", base+"  gone:\n    upstream: api\n    ttl: 1m\n    allow: [{methods: [GET], paths: [/x]}]\n    who: [{issuer: ci, claims: {project: app}}]\n"))
	newSrc := strings.Replace(base, "ttl: 10m", "ttl: 15m\n    max_ttl: 1h", 1)
	newSrc = strings.Replace(newSrc, "project: app", "project: [app, web]\n          ref: refs/heads/main", 1)
	newSrc = strings.Replace(newSrc, "issuers:\n", "issuers:\n  gl:\n    url: https://gitlab.example.com\n    audience: mayfly\n", 1)
	nw := mustParse(t, one("new.yaml", newSrc))
	got := Plan(old, nw)
	var lines []string
	for _, c := range got {
		lines = append(lines, c.String())
	}
	want := []string{
		`+ issuers.gl (https://gitlab.example.com)`,
		`~ grants.deploy: ttl: 10m → 15m; max_ttl: 10m → 1h; who[0].claims.project: ["app"] → ["app","web"]; who[0].claims.ref: + ["refs/heads/main"]`,
		`- grants.gone`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got[1].Kind != "change" || got[1].Section != "grants" || got[1].Name != "deploy" {
		t.Errorf("change = %+v", got[1])
	}
	if len(Plan(nw, nw)) != 0 {
		t.Error("plan of a policy against itself is not empty")
	}
	all := Plan(nil, old)
	if len(all) != 4 || all[0].String() != "+ issuers.ci (https://ci.example.com)" ||
		all[2].String() != "+ grants.deploy (upstream api, ttl 10m, 1 allow rules, 1 who entries)" {
		t.Errorf("plan from nothing: %v", all)
	}
	gone := Plan(old, mustParse(t, one("empty.yaml", "")))
	if len(gone) != 4 || gone[0].Kind != "remove" {
		t.Errorf("plan to nothing: %v", gone)
	}
	// GET allows HEAD: a plan says so wherever it shows a rule's methods,
	// so that taking HEAD out of [GET, HEAD] does not read as a narrowing.
	for _, tc := range []struct{ from, to, want string }{
		{"methods: [GET, HEAD]", "methods: [GET]", `allow[0].methods: ["GET","HEAD"] → ["GET"] (and HEAD)`},
		{"methods: [GET, HEAD]", "methods: [POST, GET]", `allow[0].methods: ["GET","HEAD"] → ["GET","POST"] (and HEAD)`},
		{"methods: [GET]", "methods: [HEAD]", `allow[0].methods: ["GET"] (and HEAD) → ["HEAD"]`},
		{"methods: [GET]", "methods: [GET, HEAD]", `allow[0].methods: ["GET"] (and HEAD) → ["GET","HEAD"]`},
		{"methods: [GET]", `methods: ["*"]`, `allow[0].methods: ["GET"] (and HEAD) → ["*"]`},
	} {
		src := strings.Replace(base, "methods: [GET]", tc.from, 1)
		a, b := mustParse(t, one("a.yaml", src)), mustParse(t, one("b.yaml", strings.Replace(src, tc.from, tc.to, 1)))
		if got := Plan(a, b); len(got) != 1 || got[0].Detail != tc.want {
			t.Errorf("%s → %s: plan %v, want %s", tc.from, tc.to, got, tc.want)
		}
	}
}

var posRE = regexp.MustCompile(`^[^:]+:\d+: `)

func TestErrorFormat(t *testing.T) {
	_, err := Parse(one("p.yaml", strings.Replace(base, "ttl: 10m", "ttl: 10x", 1)), nil)
	for _, line := range strings.Split(err.Error(), "\n") {
		if !posRE.MatchString(line) {
			t.Errorf("line without a position: %q", line)
		}
	}
	if (&Error{File: "f", Line: 3, Msg: "m"}).Error() != "f:3: m" {
		t.Error("format without a path")
	}
}

// TestUpstreamChoices reads an upstream's two-way settings: the default
// when absent, either word, and anything else refused with both named.
func TestUpstreamChoices(t *testing.T) {
	tests := []struct {
		line            string
		ignore, forward bool
		wantErr         string
	}{
		{"", false, false, ""},
		{"method_override: check", false, false, ""},
		{"method_override: ignore", true, false, ""},
		{"ranges: strip", false, false, ""},
		{"ranges: forward", false, true, ""},
		{"method_override: Ignore", false, false, `policy.yaml:10: upstreams.api.method_override: method_override must be check or ignore, not "Ignore"`},
		{"ranges: keep", false, false, `policy.yaml:10: upstreams.api.ranges: ranges must be strip or forward, not "keep"`},
		{`ranges: ""`, false, false, `policy.yaml:10: upstreams.api.ranges: empty`},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			src := strings.Replace(base, "      secret: api-token\n", "      secret: api-token\n    "+tt.line+"\n", 1)
			p, err := Parse(one("policy.yaml", src), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			up := p.Upstreams["api"]
			if up.IgnoreMethodOverride != tt.ignore || up.ForwardRanges != tt.forward {
				t.Fatalf("ignore %v forward %v, want %v %v", up.IgnoreMethodOverride, up.ForwardRanges, tt.ignore, tt.forward)
			}
		})
	}
}
