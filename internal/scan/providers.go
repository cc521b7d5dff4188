package scan

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"slices"
	"strconv"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// providerRules are the provider formats beyond the core ones in
// builtinRules, each written from the provider's documented token shape:
// a fixed prefix and alphabet, a fixed layout, or a keyword plus a shape
// where the provider's tokens have no prefix.
func providerRules() []*rule {
	lower36 := makeSet("a-z0-9")
	upper36 := makeSet("A-Z0-9")
	alpha := makeSet("a-zA-Z")
	entropic := func(h float64) func([]byte) (bool, bool) {
		return func(t []byte) (bool, bool) { return entropy(t) >= h, false }
	}
	return []*rule{
		// Cloud
		prefixRule("google-oauth-client-secret", "Google OAuth client secret",
			prefixSpec{prefix: "GOCSPX-", cs: setB62U, min: 28, max: 28}),
		prefixRule("google-oauth-access-token", "Google OAuth access token",
			prefixSpec{prefix: "ya29.", cs: setB62U, min: 30, max: 2048, check: entropic(4)}),
		prefixRule("google-oauth-refresh-token", "Google OAuth refresh token",
			prefixSpec{prefix: "1//0", cs: setB62U, min: 40, max: 512, left: setB62UD, check: entropic(4)}),
		prefixRule("digitalocean-token", "DigitalOcean personal, OAuth or refresh token",
			prefixSpec{prefix: "dop_v1_", cs: setLHex, min: 64, max: 64},
			prefixSpec{prefix: "doo_v1_", cs: setLHex, min: 64, max: 64},
			prefixSpec{prefix: "dor_v1_", cs: setLHex, min: 64, max: 64}),
		prefixRule("alibaba-access-key-id", "Alibaba Cloud AccessKey ID",
			prefixSpec{prefix: "LTAI", cs: setAlnum, min: 12, max: 20, check: entropic(3.2)}),
		prefixRule("tencent-secret-id", "Tencent Cloud SecretId",
			prefixSpec{prefix: "AKID", cs: setAlnum, min: 32, max: 32, check: entropic(3.5)}),
		prefixRule("scaleway-access-key", "Scaleway access key",
			prefixSpec{prefix: "SCW", cs: upper36, min: 17, max: 17, check: entropic(3.2)}),
		prefixRule("heroku-api-key", "Heroku API key",
			prefixSpec{prefix: "HRKU-", cs: setB62U, min: 50, max: 70, check: entropic(4)}),
		regexRule("aws-mws-key", "Amazon MWS auth token", []keyword{{lit: "amzn.mws.", cs: true}},
			`(?P<secret>amzn\.mws\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`, 0, 50),
		withCheck(regexRule("azure-sas-token", "Azure shared access signature (sig= of a SAS URL)",
			[]keyword{{lit: "sig=", cs: true}}, `(?:[?&;]|\\u0026)sig=(?P<secret>[A-Za-z0-9%+/]{40,}(?:%3[Dd]|=){0,2})`, 8, 120),
			func(sec, b []byte, s, e int) (bool, bool) {
				lo, hi := max(0, s-600), min(len(b), e+600)
				return bytes.Contains(b[lo:hi], []byte("sv=")) && bytes.Contains(b[lo:hi], []byte("se=")), false
			}),
		prefixRule("vault-token", "HashiCorp Vault service or batch token",
			prefixSpec{prefix: "hvs.", cs: setB62U, min: 90, max: 200},
			prefixSpec{prefix: "hvb.", cs: setB62U, min: 90, max: 300}),
		regexRule("terraform-cloud-token", "Terraform Cloud / Enterprise API token", []keyword{{lit: ".atlasv1.", cs: true}},
			`(?:^|[^A-Za-z0-9])(?P<secret>[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70})(?:[^A-Za-z0-9_=-]|$)`, 16, 72),
		prefixRule("pulumi-token", "Pulumi access token", prefixSpec{prefix: "pul-", cs: setLHex, min: 40, max: 40}),
		prefixRule("doppler-token", "Doppler token",
			prefixSpec{prefix: "dp.pt.", cs: setAlnum, min: 40, max: 44},
			prefixSpec{prefix: "dp.st.", cs: setB62UD, min: 40, max: 80, trim: ".-"},
			prefixSpec{prefix: "dp.sa.", cs: setAlnum, min: 40, max: 44},
			prefixSpec{prefix: "dp.ct.", cs: setAlnum, min: 40, max: 44},
			prefixSpec{prefix: "dp.scim.", cs: setAlnum, min: 40, max: 44},
			prefixSpec{prefix: "dp.audit.", cs: setAlnum, min: 40, max: 44}),
		prefixRule("age-secret-key", "age encryption secret key",
			prefixSpec{prefix: "AGE-SECRET-KEY-1", cs: makeSet("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"), min: 58, max: 58}),
		prefixRule("flyio-token", "Fly.io access token",
			prefixSpec{prefix: "fo1_", cs: setB62U, min: 40, max: 48},
			prefixSpec{prefix: "fm2_", cs: makeSet("a-zA-Z0-9+/=_-"), min: 60, max: 4096}),
		prefixRule("cloudflare-origin-ca-key", "Cloudflare Origin CA key",
			prefixSpec{prefix: "v1.0-", cs: makeSet("a-f0-9-"), min: 171, max: 171, left: setB62UD, check: func(t []byte) (bool, bool) {
				return t[5+24] == '-' && bytes.Count(t[5:], []byte("-")) == 1, false
			}}),
		prefixRule("databricks-token", "Databricks personal access token",
			prefixSpec{prefix: "dapi", cs: setLHex, min: 32, max: 32, check: entropic(3.2)}),
		prefixRule("supabase-token", "Supabase access token", prefixSpec{prefix: "sbp_", cs: setLHex, min: 40, max: 40}),
		prefixRule("planetscale-token", "PlanetScale token or password",
			prefixSpec{prefix: "pscale_tkn_", cs: setB62UD, min: 32, max: 64},
			prefixSpec{prefix: "pscale_pw_", cs: setB62UD, min: 32, max: 64},
			prefixSpec{prefix: "pscale_oauth_", cs: setB62UD, min: 32, max: 64}),
		prefixRule("netlify-token", "Netlify personal access token", prefixSpec{prefix: "nfp_", cs: setAlnum, min: 36, max: 40}),
		prefixRule("vercel-token", "Vercel access token",
			prefixSpec{prefix: "vcp_", cs: setAlnum, min: 56, max: 60},
			prefixSpec{prefix: "vci_", cs: setAlnum, min: 56, max: 60}),

		// VCS and CI
		prefixRule("bitbucket-app-password", "Bitbucket app password", prefixSpec{prefix: "ATBB", cs: makeSet("a-zA-Z0-9_=.-"), min: 32, max: 40, left: setB62U}),
		prefixRule("atlassian-api-token", "Atlassian / Bitbucket API or access token",
			prefixSpec{prefix: "ATATT3", cs: makeSet("a-zA-Z0-9_=-"), min: 150, max: 300, left: setB62U, check: atlassianTail},
			prefixSpec{prefix: "ATCTT3", cs: makeSet("a-zA-Z0-9_=-"), min: 150, max: 300, left: setB62U, check: atlassianTail}),
		prefixRule("circleci-token", "CircleCI personal or project API token",
			prefixSpec{prefix: "CCIPAT_", cs: setB62U, min: 60, max: 70},
			prefixSpec{prefix: "CCIPRJ_", cs: setB62U, min: 60, max: 70}),
		withEntropy(regexRule("travis-ci-token", "Travis CI API token", []keyword{{lit: "travis"}},
			`(?i)travis[a-z_.-]*(?:token|key)["']?\s*(?::=|=>|=|:)\s*["']?(?P<secret>[A-Za-z0-9_-]{22})(?:[^A-Za-z0-9_-]|$)`, 0, 80), 3.5),
		prefixRule("gitlab-feature-flag-token", "GitLab feature-flags client token", prefixSpec{prefix: "glffct-", cs: setB62UD, min: 20, max: 300, trim: ".-"}),
		prefixRule("sonarqube-token", "SonarQube / SonarCloud token",
			prefixSpec{prefix: "squ_", cs: setLHex, min: 40, max: 40},
			prefixSpec{prefix: "sqp_", cs: setLHex, min: 40, max: 40},
			prefixSpec{prefix: "sqa_", cs: setLHex, min: 40, max: 40}),
		prefixRule("jfrog-api-key", "JFrog Artifactory API key or reference token",
			prefixSpec{prefix: "AKCp", cs: setAlnum, min: 69, max: 69},
			prefixSpec{prefix: "cmVmdGtuOjAxOj", cs: setB62, min: 50, max: 64}),
		prefixRule("postman-api-key", "Postman API key", prefixSpec{prefix: "PMAK-", cs: makeSet("a-f0-9-"), min: 59, max: 59, check: func(t []byte) (bool, bool) {
			return t[5+24] == '-', false
		}}),

		// Package registries
		prefixRule("rubygems-api-key", "RubyGems API key", prefixSpec{prefix: "rubygems_", cs: setLHex, min: 48, max: 48}),
		prefixRule("nuget-api-key", "NuGet API key", prefixSpec{prefix: "oy2", cs: lower36, min: 43, max: 43, check: entropic(3.8)}),
		prefixRule("crates-io-token", "crates.io API token", prefixSpec{prefix: "cio", cs: setAlnum, min: 32, max: 32, check: entropic(4)}),
		prefixRule("clojars-token", "Clojars deploy token", prefixSpec{prefix: "CLOJARS_", cs: lower36, min: 60, max: 60}),
		withCheck(regexRule("npmrc-auth", "npm _auth (base64 user:password) in .npmrc", []keyword{{lit: "_auth"}},
			`(?:^|[\s"'])_auth\s*=\s*["']?(?P<secret>[A-Za-z0-9+/]{12,}={0,2})`, 2, 200), basicPair),
		withCheck(regexRule("docker-config-auth", "Registry credentials (base64 user:password) in a Docker config",
			[]keyword{{lit: `"auth"`}}, `"auth"\s*:\s*"(?P<secret>[A-Za-z0-9+/]{12,}={0,2})"`, 0, 300), basicPair),

		// Chat and mail
		prefixRule("slack-app-token", "Slack app-level token", prefixSpec{prefix: "xapp-", cs: setB62U, min: 30, max: 255, trim: "-"}),
		withEntropy(regexRule("discord-webhook", "Discord webhook URL",
			[]keyword{{lit: "discord.com/api/webhooks/", cs: true}, {lit: "discordapp.com/api/webhooks/", cs: true}},
			`(?:^|[^A-Za-z0-9.-])(?P<secret>discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,68})(?:[^A-Za-z0-9_-]|$)`, 8, 120), 4),
		withEntropy(regexRule("discord-bot-token", "Discord bot token", []keyword{{lit: "discord"}},
			`(?:^|[^A-Za-z0-9_.-])(?P<secret>[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38})(?:[^A-Za-z0-9_.-]|$)`, 200, 200), 4),
		regexRule("telegram-bot-token", "Telegram bot token", []keyword{{lit: ":AA", cs: true}},
			`(?:^|[^0-9A-Za-z_])(?P<secret>[0-9]{8,10}:AA[A-Za-z0-9_-]{33})(?:[^A-Za-z0-9_-]|$)`, 12, 40),
		prefixRule("mailgun-api-key", "Mailgun private API key", prefixSpec{prefix: "key-", cs: setLHex, min: 32, max: 32, check: func(t []byte) (bool, bool) {
			return entropy(t[4:]) >= 3.2, false
		}}),
		withEntropy(regexRule("mailgun-signing-key", "Mailgun API or webhook signing key", []keyword{{lit: "mailgun"}},
			`(?:^|[^0-9a-f])(?P<secret>[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})(?:[^0-9a-f-]|$)`, 200, 200), 3.2),
		withEntropy(regexRule("mailchimp-api-key", "Mailchimp API key", []keyword{{lit: "-us", cs: true}},
			`(?:^|[^0-9A-Za-z])(?P<secret>[0-9a-f]{32}-us[0-9]{1,2})(?:[^0-9A-Za-z]|$)`, 40, 8), 3.2),
		prefixRule("brevo-api-key", "Brevo (Sendinblue) API or SMTP key",
			prefixSpec{prefix: "xkeysib-", cs: makeSet("a-zA-Z0-9-"), min: 81, max: 81},
			prefixSpec{prefix: "xsmtpsib-", cs: makeSet("a-zA-Z0-9-"), min: 81, max: 81}),
		regexRule("teams-webhook", "Microsoft Teams incoming webhook URL", []keyword{{lit: ".webhook.office.com/webhookb2/", cs: true}},
			`(?P<secret>[a-z0-9-]+\.webhook\.office\.com/webhookb2/[0-9a-f-]{36}@[0-9a-f-]{36}/IncomingWebhook/[0-9a-f]{32}/[0-9a-f-]{36})`, 64, 200),
		regexRule("zapier-webhook", "Zapier webhook URL", []keyword{{lit: "hooks.zapier.com/hooks/catch/", cs: true}},
			`(?P<secret>hooks\.zapier\.com/hooks/catch/[0-9]+/[a-z0-9]{6,})`, 0, 80),

		// Payments
		prefixRule("stripe-webhook-secret", "Stripe webhook signing secret", prefixSpec{prefix: "whsec_", cs: setB62, min: 32, max: 64, check: entropic(4)}),
		prefixRule("square-token", "Square access token or OAuth secret",
			prefixSpec{prefix: "sq0atp-", cs: setB62U, min: 22, max: 22},
			prefixSpec{prefix: "sq0csp-", cs: setB62U, min: 43, max: 43},
			prefixSpec{prefix: "EAAA", cs: setB62U, min: 60, max: 60, check: entropic(4.5)}),
		regexRule("braintree-access-token", "PayPal Braintree access token", []keyword{{lit: "access_token$production$", cs: true}},
			`(?P<secret>access_token\$production\$[0-9a-z]{16}\$[0-9a-f]{32})`, 0, 80),
		prefixRule("razorpay-key", "Razorpay live key", prefixSpec{prefix: "rzp_live_", cs: setAlnum, min: 14, max: 14}),
		prefixRule("flutterwave-secret-key", "Flutterwave secret key", prefixSpec{prefix: "FLWSECK-", cs: makeSet("a-fA-F0-9X-"), min: 34, max: 34, check: func(t []byte) (bool, bool) {
			return bytes.HasSuffix(t, []byte("-X")), false
		}}),
		prefixRule("shippo-token", "Shippo live API token", prefixSpec{prefix: "shippo_live_", cs: setLHex, min: 40, max: 40}),
		prefixRule("easypost-api-key", "EasyPost production API key", prefixSpec{prefix: "EZAK", cs: setAlnum, min: 54, max: 54}),
		regexRule("plaid-access-token", "Plaid production access token", []keyword{{lit: "access-production-", cs: true}},
			`(?P<secret>access-production-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})`, 0, 60),

		// AI
		prefixRule("huggingface-token", "Hugging Face access token",
			prefixSpec{prefix: "hf_", cs: alpha, min: 34, max: 34, check: entropic(4)},
			prefixSpec{prefix: "api_org_", cs: alpha, min: 34, max: 34, check: entropic(4)}),
		prefixRule("groq-api-key", "Groq API key", prefixSpec{prefix: "gsk_", cs: setAlnum, min: 52, max: 52}),
		prefixRule("replicate-api-token", "Replicate API token", prefixSpec{prefix: "r8_", cs: setAlnum, min: 37, max: 37, check: entropic(4)}),
		prefixRule("perplexity-api-key", "Perplexity API key", prefixSpec{prefix: "pplx-", cs: setAlnum, min: 48, max: 48}),
		prefixRule("xai-api-key", "xAI API key", prefixSpec{prefix: "xai-", cs: setAlnum, min: 80, max: 80}),
		withEntropy(regexRule("cohere-api-key", "Cohere API key", []keyword{{lit: "cohere"}},
			`(?i)cohere[a-z_.-]*(?:token|key)["']?\s*(?::=|=>|=|:)\s*["']?(?P<secret>[A-Za-z0-9]{40})(?:[^A-Za-z0-9]|$)`, 0, 90), 4),

		// Observability
		withEntropy(regexRule("datadog-api-key", "Datadog API or application key", []keyword{{lit: "datadog"}, {lit: "dd_api"}, {lit: "dd-api"}, {lit: "dd_app"}, {lit: "dd-app"}},
			`(?i)(?:datadog|dd)[a-z_.-]*(?:api|app|application)[_.-]?key["']?\s*(?::=|=>|=|:)\s*["']?(?P<secret>[a-f0-9]{32}|[a-f0-9]{40})(?:[^A-Za-z0-9]|$)`, 20, 100), 3.2),
		prefixRule("newrelic-key", "New Relic user, insights, browser or REST key",
			prefixSpec{prefix: "NRAK-", cs: upper36, min: 27, max: 27},
			prefixSpec{prefix: "NRII-", cs: setB62U, min: 32, max: 32},
			prefixSpec{prefix: "NRJS-", cs: setLHex, min: 19, max: 19},
			prefixSpec{prefix: "NRRA-", cs: setLHex, min: 42, max: 42}),
		regexRule("newrelic-license-key", "New Relic ingest license key", []keyword{{lit: "NRAL", cs: true}},
			`(?:^|[^A-Za-z0-9])(?P<secret>[a-f0-9]{36}NRAL)(?:[^A-Za-z0-9]|$)`, 40, 8),
		prefixRule("sentry-token", "Sentry organisation or user auth token",
			prefixSpec{prefix: "sntrys_", cs: makeSet("a-zA-Z0-9+/=_"), min: 60, max: 400},
			prefixSpec{prefix: "sntryu_", cs: setLHex, min: 64, max: 64}),
		prefixRule("grafana-token", "Grafana service-account or Grafana Cloud token",
			prefixSpec{prefix: "glsa_", cs: setB62U, min: 41, max: 41, check: func(t []byte) (bool, bool) {
				return t[5+32] == '_', false
			}},
			prefixSpec{prefix: "glc_", cs: makeSet("a-zA-Z0-9+/="), min: 32, max: 400, check: entropic(4)}),
		regexRule("dynatrace-token", "Dynatrace API token", []keyword{{lit: "dt0c01.", cs: true}},
			`(?P<secret>dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64})`, 0, 100),

		// Other SaaS
		prefixRule("linear-api-key", "Linear API key", prefixSpec{prefix: "lin_api_", cs: setAlnum, min: 40, max: 40}),
		prefixRule("notion-token", "Notion integration token", prefixSpec{prefix: "ntn_", cs: setAlnum, min: 46, max: 46}),
		prefixRule("figma-token", "Figma personal access token", prefixSpec{prefix: "figd_", cs: setB62U, min: 40, max: 48}),
		prefixRule("contentful-token", "Contentful personal access token", prefixSpec{prefix: "CFPAT-", cs: setB62U, min: 43, max: 43}),
		regexRule("airtable-pat", "Airtable personal access token", []keyword{{lit: "pat", cs: true}},
			`(?:^|[^A-Za-z0-9])(?P<secret>pat[A-Za-z0-9]{14}\.[a-f0-9]{64})(?:[^A-Za-z0-9]|$)`, 1, 90),
		prefixRule("typeform-token", "Typeform personal access token", prefixSpec{prefix: "tfp_", cs: makeSet("a-zA-Z0-9_.=-"), min: 59, max: 59, left: setB62U}),
		prefixRule("prefect-api-key", "Prefect API key", prefixSpec{prefix: "pnu_", cs: setAlnum, min: 36, max: 36}),
		prefixRule("readme-api-key", "ReadMe API key", prefixSpec{prefix: "rdme_", cs: lower36, min: 70, max: 70}),
		prefixRule("scalingo-token", "Scalingo API token", prefixSpec{prefix: "tk-us-", cs: setB62U, min: 48, max: 48}),
		prefixRule("mapbox-secret-token", "Mapbox secret access token", prefixSpec{prefix: "sk.eyJ", cs: setB62UD, min: 60, max: 300, check: func(t []byte) (bool, bool) {
			return bytes.Count(t, []byte(".")) == 2, false
		}}),
		fromRunStart(withEntropy(regexRule("twitter-bearer-token", "X / Twitter app bearer token", []keyword{{lit: "AAAAAAAAAAAAAAAAAAAAA", cs: true}},
			`(?P<secret>A{22}[A-Za-z0-9]*%[0-9A-F]{2}[A-Za-z0-9%]{20,120})`, 0, 150), 4), 'A'),
		withEntropy(regexRule("okta-api-token", "Okta API token", []keyword{{lit: "okta"}},
			`(?:^|[^A-Za-z0-9_-])(?P<secret>00[A-Za-z0-9_-]{40})(?:[^A-Za-z0-9_-]|$)`, 120, 120), 4),

		// Credentials in files and URLs
		{id: "url-credentials", desc: "Password in a URL (database connection string, git credentials, FTP…)",
			keywords: []keyword{{lit: "://", cs: true}}, match: urlCredMatch},
		withCheck(multiline(regexRule("netrc-password", ".netrc / _netrc machine password", []keyword{{lit: "machine", cs: true}},
			`(?:^|\n)[ \t]*machine\s+[A-Za-z0-9-]+[.:]\S*\s+(?:login\s+\S+\s+)?password\s+(?P<secret>\S+)`, 1, 300)),
			func(sec, b []byte, s, e int) (bool, bool) {
				return !isPlaceholder(sec) && !notLiteral(sec, false), false
			}),
		withCheck(regexRule("wordpress-salt", "WordPress authentication key or salt in wp-config.php",
			[]keyword{{lit: "_KEY'", cs: true}, {lit: "_SALT'", cs: true}, {lit: `_KEY"`, cs: true}, {lit: `_SALT"`, cs: true}},
			`define\(\s*['"](?:SECURE_)?(?:AUTH|LOGGED_IN|NONCE)_(?:KEY|SALT)['"]\s*,\s*['"](?P<secret>[^'"\n]{32,})['"]\s*\)`, 40, 120),
			func(sec, b []byte, s, e int) (bool, bool) {
				return !bytes.Contains(bytes.ToLower(sec), []byte("unique phrase")) && !isProse(sec), false
			}),
		regexRule("password-hash", "Password hash in a credential store (shadow, htpasswd, proftpd)",
			[]keyword{{lit: ":$1$", cs: true}, {lit: ":$2a$", cs: true}, {lit: ":$2b$", cs: true}, {lit: ":$2y$", cs: true},
				{lit: ":$5$", cs: true}, {lit: ":$6$", cs: true}, {lit: ":$y$", cs: true}, {lit: ":$apr1$", cs: true},
				{lit: ":$argon2", cs: true}, {lit: ":{SHA}", cs: true}, {lit: ":{SSHA}", cs: true}},
			`(?m)^[A-Za-z0-9_.@-]{1,64}:(?P<secret>(?:\$(?:1|2[aby]|5|6|y|apr1|argon2(?:id|i|d))\$[./A-Za-z0-9$=,+-]{20,}|\{S?SHA\}[A-Za-z0-9+/=]{20,}))(?::|\s*$)`, 80, 200),
		regexRule("bcrypt-hash", "bcrypt password hash in a quoted value (SQL dump, seed data)",
			[]keyword{{lit: "$2a$", cs: true}, {lit: "$2b$", cs: true}, {lit: "$2y$", cs: true}},
			`['"](?P<secret>\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53})['"]`, 1, 64),
		{id: "putty-private-key", desc: "PuTTY private key (.ppk)", keywords: []keyword{{lit: "PuTTY-User-Key-File-", cs: true}}, match: ppkMatch},
		{id: "pgpass-password", desc: "PostgreSQL .pgpass password", files: []string{".pgpass", "pgpass.conf"}, match: pgpassMatch},
	}
}

// basicPair accepts a base64 value that decodes to "user:password".
func basicPair(sec, b []byte, s, e int) (bool, bool) {
	d, err := base64.StdEncoding.DecodeString(string(sec))
	if err != nil {
		return false, false
	}
	i := bytes.IndexByte(d, ':')
	if i <= 0 || i == len(d)-1 {
		return false, false
	}
	for _, c := range d {
		if c < 0x20 || c > 0x7e {
			return false, false
		}
	}
	pw := d[i+1:]
	return !isPlaceholder(pw) && len(pw) >= 4, false
}

// atlassianTail checks the end of an Atlassian token: "=" and an
// eight-digit hex checksum.
func atlassianTail(t []byte) (bool, bool) {
	i := bytes.LastIndexByte(t, '=')
	if i < 0 || len(t)-i-1 != 8 {
		return false, false
	}
	for _, c := range t[i+1:] {
		if !setHex[c] {
			return false, false
		}
	}
	return true, false
}

func multiline(r *rule) *rule { r.multiline = true; return r }

// urlCredMatch finds scheme://user:password@host and reports the password
// when it is a literal (not ${VAR}, <password>, a word or a placeholder).
func urlCredMatch(st *scanState, ri int, b []byte, ks, ke int) {
	s := ks
	for s > 0 && ks-s < 32 && (isLetter(b[s-1]) || b[s-1] >= '0' && b[s-1] <= '9' || b[s-1] == '+' || b[s-1] == '.' || b[s-1] == '-') {
		s--
	}
	if s == ks || !isLetter(b[s]) {
		return
	}
	// userinfo up to '@', within the authority
	i := ke
	colon, at := -1, -1
	for ; i < len(b) && i-ke < 512; i++ {
		c := b[i]
		if c == '@' {
			at = i
			break
		}
		if c == '/' || c == '?' || c == '#' || c <= ' ' || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>' {
			return
		}
		if c == ':' && colon < 0 {
			colon = i
		}
	}
	// No user name before the colon is a password all the same: Redis and
	// Valkey URLs are written "redis://:PASSWORD@host".
	if at < 0 || colon < 0 {
		return
	}
	pw := b[colon+1 : at]
	host := at + 1
	if host >= len(b) || !(isLetter(b[host]) || b[host] >= '0' && b[host] <= '9' || b[host] == '[') {
		return
	}
	if len(pw) < 6 || isPlaceholder(pw) || isExample(pw) || notLiteral(pw, true) || bytes.ContainsAny(pw, "{}$%") && bytes.Contains(pw, []byte("{")) {
		return
	}
	if token.ParsePassword(string(pw)) == nil {
		return // a password mayfly minted: its own rule reports it, verified
	}
	user := b[ke:colon]
	if bytes.Equal(user, pw) || slices.Contains(urlPlaceholders, string(bytes.ToLower(pw))) {
		return
	}
	st.add(ri, colon+1, at, false)
}

var urlPlaceholders = []string{"password", "passwd", "secret", "token", "username", "userpass", "mypassword", "yourpassword"}

// ppkMatch reports a PuTTY private key file: its header through the end
// of the Private-Lines block.
var ppkLines = regexp.MustCompile(`Private-Lines:\s*([0-9]{1,3})\r?\n`)

func ppkMatch(st *scanState, ri int, b []byte, ks, ke int) {
	if ks > 0 && b[ks-1] != '\n' {
		return
	}
	limit := min(len(b), ks+16384)
	m := ppkLines.FindSubmatchIndex(b[ks:limit])
	if m == nil {
		return
	}
	n, _ := strconv.Atoi(string(b[ks+m[2] : ks+m[3]]))
	end := ks + m[1]
	got := 0
	for got < n && end < limit {
		j := bytes.IndexByte(b[end:limit], '\n')
		if j < 0 {
			j = limit - end
		}
		line := bytes.TrimRight(b[end:end+j], "\r")
		for _, c := range line {
			if !setB64[c] && c != '=' {
				return
			}
		}
		end += j
		if end < limit {
			end++
		}
		got++
	}
	if n == 0 || got < n {
		return
	}
	for end > ks && (b[end-1] == '\n' || b[end-1] == '\r') {
		end--
	}
	st.add(ri, ks, end, false)
}

// pgpassMatch reports the password field of each host:port:db:user:password
// line of a .pgpass file (':' and '\\' are escaped with '\\').
func pgpassMatch(st *scanState, ri int, b []byte, _, _ int) {
	for off := 0; off < len(b); {
		le := bytes.IndexByte(b[off:], '\n')
		if le < 0 {
			le = len(b) - off
		}
		line := b[off : off+le]
		if len(line) > 0 && line[0] != '#' {
			fields, start := 0, 0
			for i := 0; i < len(line); i++ {
				if line[i] == '\\' {
					i++
					continue
				}
				if line[i] == ':' {
					fields++
					start = i + 1
				}
			}
			pw := bytes.TrimRight(line[min(start, len(line)):], "\r")
			if fields == 4 && len(pw) >= 4 && !isPlaceholder(pw) {
				st.add(ri, off+start, off+start+len(pw), false)
			}
		}
		off += le + 1
	}
}
