package policy

import (
	"strings"
	"testing"
)

// minted is a valid policy with SPEC section 9's credential sources. Lines:
//
//	 5 upstreams:        18 grants:
//	 6 gh:               19 release:
//	 9 github_app:       22 github:
//	11 private_key_secret
//	13 db:               30 migrate:
//	15 admin_dsn_secret
const minted = `issuers:
  ci:
    url: https://ci.example.com
    audience: mayfly
upstreams:
  gh:
    url: https://api.github.com
    credential:
      github_app:
        app_id: "123456"
        private_key_secret: gh-app-key
        installation_id: "7890"
  db:
    postgres:
      admin_dsn_secret: db-admin
      creation: CREATE ROLE "{{name}}" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expires}}';
      revocation: DROP ROLE IF EXISTS "{{name}}";
grants:
  release:
    upstream: gh
    ttl: 10m
    github:
      repositories: [app]
      permissions: {contents: write, pull_requests: read}
    allow:
      - methods: [GET, POST]
        paths: ["/repos/acme/app/**"]
    who:
      - {issuer: ci, claims: {project: app}}
  migrate:
    upstream: db
    ttl: 15m
    bind_source_ip: true
    who:
      - {issuer: ci, claims: {project: app}}
`

func TestMintedAccepts(t *testing.T) {
	tests := []struct {
		name, old, new string
		check          func(t *testing.T, p *Policy)
		warn           string
	}{
		{"spec sample", "", "", func(t *testing.T, p *Policy) {
			gh, db := p.Upstreams["gh"], p.Upstreams["db"]
			if gh.Kind() != KindGitHubApp || db.Kind() != KindPostgres || !gh.Minted() {
				t.Errorf("kinds %s %s", gh.Kind(), db.Kind())
			}
			a := gh.Credential.GitHubApp
			if a.AppID != "123456" || a.InstallationID != "7890" || a.PrivateKeySecret != "gh-app-key" || gh.Credential.Prefix != "token " {
				t.Errorf("github_app = %+v", a)
			}
			r := p.Grants["release"]
			if r.Deliver != DeliverGateway || r.GitHub.Permissions["contents"] != "write" || r.GitHub.Repositories[0] != "app" {
				t.Errorf("release = %+v %+v", r, r.GitHub)
			}
			m := p.Grants["migrate"]
			if m.Deliver != DeliverJob || len(m.Rules) != 0 {
				t.Errorf("migrate = %+v", m)
			}
			if !strings.Contains(db.Postgres.Creation, "{{password}}") || db.Postgres.AdminDSNSecret != "db-admin" {
				t.Errorf("postgres = %+v", db.Postgres)
			}
			if len(p.Warnings) != 0 {
				t.Errorf("warnings: %v", p.Warnings)
			}
		}, ""},
		{"owner", `installation_id: "7890"`, "owner: acme-corp\n        api_url: http://127.0.0.1:9/api/", func(t *testing.T, p *Policy) {
			a := p.Upstreams["gh"].Credential.GitHubApp
			if a.Owner != "acme-corp" || a.InstallationID != "" || a.APIURL != "http://127.0.0.1:9/api" {
				t.Errorf("github_app = %+v", a)
			}
		}, ""},
		{"deliver job warns without bind_source_ip", "    ttl: 10m\n", "    ttl: 10m\n    deliver: job\n", func(t *testing.T, p *Policy) {
			if p.Grants["release"].Deliver != DeliverJob {
				t.Error("deliver")
			}
		}, "grants.release: deliver: job without bind_source_ip"},
		{"deliver job bound", "    ttl: 10m\n", "    ttl: 10m\n    deliver: job\n    bind_source_ip: true\n", nil, ""},
		{"all repositories", "      repositories: [app]\n", "", func(t *testing.T, p *Policy) {
			if len(p.Grants["release"].GitHub.Repositories) != 0 {
				t.Error("repositories")
			}
		}, ""},
		{"postgres without bind warns", "    bind_source_ip: true\n", "", nil, "grants.migrate: deliver: job without bind_source_ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := minted
			if tt.old != "" {
				if !strings.Contains(src, tt.old) {
					t.Fatalf("edit %q not in the sample", tt.old)
				}
				src = strings.Replace(src, tt.old, tt.new, 1)
			}
			p, err := Parse(one("policy.yaml", src), secrets("gh-app-key", "db-admin"))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
			if tt.warn != "" && !strings.Contains(p.Warnings.Error(), tt.warn) {
				t.Errorf("warnings %q lack %q", p.Warnings.Error(), tt.warn)
			}
			back, err := Parse([]File{{Name: "back", Data: p.Source}}, nil)
			if err != nil || back.Hash != p.Hash {
				t.Fatalf("source does not read back: %v", err)
			}
		})
	}
}

func TestMintedErrors(t *testing.T) {
	tests := []struct {
		name, old, new string
		secrets        []string
		want           string
	}{
		{"unknown permission", "pull_requests: read", "pull_request: read", nil, `grants.release.github.permissions.pull_request: unknown GitHub permission "pull_request" (did you mean "pull_requests"?)`},
		{"bad level", "contents: write", "contents: admin", nil, `grants.release.github.permissions.contents: level "admin" is not one GitHub accepts for contents (read, write)`},
		{"no permissions", "      permissions: {contents: write, pull_requests: read}\n", "", nil, `policy.yaml:22: grants.release.github.permissions: missing`},
		{"empty permissions", "{contents: write, pull_requests: read}", "{}", nil, `grants.release.github.permissions: empty`},
		{"no github on app grant", "    github:\n      repositories: [app]\n      permissions: {contents: write, pull_requests: read}\n", "", nil, `policy.yaml:19: grants.release.github: missing`},
		{"owner/repo", "repositories: [app]", "repositories: [acme/app]", nil, `"acme/app": name the repository alone`},
		{"allow on db grant", "    bind_source_ip: true\n", "    bind_source_ip: true\n    allow: [{methods: [GET], paths: [/x]}]\n", nil, `grants.migrate.allow: a grant on a postgres upstream has no allow rules`},
		{"deliver gateway on db", "    bind_source_ip: true\n", "    bind_source_ip: true\n    deliver: gateway\n", nil, `grants.migrate.deliver: a postgres upstream's role is always delivered to the job`},
		{"deliver bogus", "    ttl: 10m\n", "    ttl: 10m\n    deliver: pigeon\n", nil, `grants.release.deliver: deliver must be gateway or job, not "pigeon"`},
		{"no allow on app grant", "    allow:\n      - methods: [GET, POST]\n        paths: [\"/repos/acme/app/**\"]\n", "", nil, `grants.release.allow: missing`},
		{"both installation and owner", `installation_id: "7890"`, "installation_id: \"7890\"\n        owner: acme", nil, `upstreams.gh.credential.github_app.owner: give installation_id or owner, not both`},
		{"neither installation nor owner", "        installation_id: \"7890\"\n", "", nil, `upstreams.gh.credential.github_app.installation_id: missing`},
		{"app id not digits", `app_id: "123456"`, "app_id: abc", nil, `app_id "abc" is not a GitHub App id`},
		{"unknown key secret", "", "", []string{"db-admin"}, `policy.yaml:11: upstreams.gh.credential.github_app.private_key_secret: unknown secret "gh-app-key"`},
		{"unknown dsn secret", "", "", []string{"gh-app-key"}, `policy.yaml:15: upstreams.db.postgres.admin_dsn_secret: unknown secret "db-admin"`},
		{"secret and github_app", "      github_app:\n", "      secret: x\n      github_app:\n", nil, `upstreams.gh.credential.secret: not with github_app`},
		{"url on postgres", "    postgres:\n", "    url: https://db.example.com\n    postgres:\n", nil, `upstreams.db.url: a postgres upstream has no url`},
		{"unknown placeholder", `DROP ROLE IF EXISTS "{{name}}"`, `DROP ROLE IF EXISTS "{{name}}" {{user}}`, nil, `upstreams.db.postgres.revocation: unknown placeholder {{user}}`},
		{"creation without password", `PASSWORD '{{password}}'`, ``, nil, `upstreams.db.postgres.creation: must use {{password}}`},
		{"no revocation", "      revocation: DROP ROLE IF EXISTS \"{{name}}\";\n", "", nil, `upstreams.db.postgres.revocation: missing`},
		{"github on secret upstream", "credential:\n      github_app:\n        app_id: \"123456\"\n        private_key_secret: gh-app-key\n        installation_id: \"7890\"\n", "credential:\n      secret: gh-app-key\n", nil, `grants.release.github: only for a grant on an upstream whose credential is github_app`},
		{"plain http api_url", `installation_id: "7890"`, "installation_id: \"7890\"\n        api_url: http://gh.example.com", nil, `api_url: plain http to a non-loopback host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := minted
			if tt.old != "" {
				if !strings.Contains(src, tt.old) {
					t.Fatalf("edit %q not in the sample", tt.old)
				}
				src = strings.Replace(src, tt.old, tt.new, 1)
			}
			s := tt.secrets
			if s == nil {
				s = []string{"gh-app-key", "db-admin", "x"}
			}
			p, err := Parse(one("policy.yaml", src), secrets(s...))
			if err == nil {
				t.Fatalf("accepted:\n%s", src)
			}
			if p != nil {
				t.Fatal("policy and error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %q", err.Error(), tt.want)
			}
		})
	}
}

func TestGitHubPermissionLevels(t *testing.T) {
	if l := GitHubPermissionLevels("contents"); len(l) != 2 {
		t.Errorf("contents: %v", l)
	}
	if GitHubPermissionLevels("nope") != nil {
		t.Error("unknown permission has levels")
	}
}
