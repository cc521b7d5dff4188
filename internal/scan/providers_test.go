package scan

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

const (
	abcLower36 = "0123456789abcdefghijklmnopqrstuvwxyz"
	abcUpper36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	abcAlpha   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	abcBech32  = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
)

func (g *gen) uuid() string {
	return g.str(abcHex, 8) + "-" + g.str(abcHex, 4) + "-" + g.str(abcHex, 4) + "-" + g.str(abcHex, 4) + "-" + g.str(abcHex, 12)
}

// providerSamples gives one valid secret (from the provider's documented
// shape) per provider rule, with the text that carries it where the rule
// needs context. Generated at run time, so this file holds no secret.
func providerSamples(g *gen) []planted {
	ppk := "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: ci\nPublic-Lines: 2\n" +
		g.str(abcB64, 64) + "\n" + g.str(abcB64, 20) + "\nPrivate-Lines: 1\n" + g.str(abcB64, 44) + "\nPrivate-MAC: " + g.str(abcHex, 64)
	ppkSecret := ppk[:strings.Index(ppk, "\nPrivate-MAC")]
	dockerAuth := base64.StdEncoding.EncodeToString([]byte("ci-bot:" + g.str(abcB62, 20)))
	npmAuth := base64.StdEncoding.EncodeToString([]byte("deploy:" + g.str(abcB62, 16)))
	dbPass := g.str(abcB62, 10) + "9x" + g.str(abcB62, 6)
	gitPass := "ghp" + g.str(abcB62, 20) + "7"
	netrcPass := g.str(abcB62, 12) + "4Q"
	redisPass := g.str(abcB62, 18) + "7k"
	wpSalt := g.str(abcB62+"!@#%^&*()-_[]{};:,.<>?|~", 64)
	hash := "$6$" + g.str(abcB62, 16) + "$" + g.str(abcB62+"./", 86)
	apr := "$apr1$" + g.str(abcB62, 8) + "$" + g.str(abcB62+"./", 22)
	sas := g.str(abcB62, 40) + "%3D"
	pgpw := g.str(abcB62, 14) + "3z"
	bcrypt := "$2y$12$" + g.str(abcB62+"./", 53)
	ps := []planted{
		{rule: "google-oauth-client-secret", secret: "GOCSPX-" + g.str(abcB62U, 28)},
		{rule: "google-oauth-access-token", secret: "ya29.a0" + g.str(abcB62U, 150)},
		{rule: "google-oauth-refresh-token", secret: "1//0" + g.str(abcB62U, 99)},
		{rule: "digitalocean-token", secret: "dop_v1_" + g.str(abcHex, 64)},
		{rule: "digitalocean-token", secret: "dor_v1_" + g.str(abcHex, 64)},
		{rule: "alibaba-access-key-id", secret: "LTAI" + g.str(abcB62, 20)},
		{rule: "tencent-secret-id", secret: "AKID" + g.str(abcB62, 32)},
		{rule: "scaleway-access-key", secret: "SCW" + g.str(abcUpper36, 17)},
		{rule: "heroku-api-key", secret: "HRKU-AA" + g.str(abcB62U, 58)},
		{rule: "aws-mws-key", secret: "amzn.mws." + g.uuid()},
		{rule: "azure-sas-token", secret: sas, text: "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01T00:00:00Z&sig=" + sas},
		{rule: "vault-token", secret: "hvs." + g.str(abcB62U, 92)},
		{rule: "terraform-cloud-token", secret: g.str(abcB62, 14) + ".atlasv1." + g.str(abcB62U, 67)},
		{rule: "pulumi-token", secret: "pul-" + g.str(abcHex, 40)},
		{rule: "doppler-token", secret: "dp.pt." + g.str(abcB62, 43)},
		{rule: "age-secret-key", secret: "AGE-SECRET-KEY-1" + g.str(abcBech32, 58)},
		{rule: "flyio-token", secret: "fo1_" + g.str(abcB62U, 43)},
		{rule: "cloudflare-origin-ca-key", secret: "v1.0-" + g.str(abcHex, 24) + "-" + g.str(abcHex, 146)},
		{rule: "databricks-token", secret: "dapi" + g.str(abcHex, 32)},
		{rule: "supabase-token", secret: "sbp_" + g.str(abcHex, 40)},
		{rule: "planetscale-token", secret: "pscale_tkn_" + g.str(abcB62U, 43)},
		{rule: "netlify-token", secret: "nfp_" + g.str(abcB62, 36)},
		{rule: "vercel-token", secret: "vcp_" + g.str(abcB62, 56)},
		{rule: "bitbucket-app-password", secret: "ATBB" + g.str(abcB62, 28) + g.str(abcHex, 8)},
		{rule: "atlassian-api-token", secret: "ATATT3xFfGF0" + g.str(abcB62U, 170) + "=" + g.str(abcHex, 8)},
		{rule: "circleci-token", secret: "CCIPAT_" + g.str(abcB62, 22) + "_" + g.str(abcHex, 40)},
		{rule: "travis-ci-token", secret: "x" + g.str(abcB62U, 20) + "Q", text: "TRAVIS_API_TOKEN: "},
		{rule: "gitlab-feature-flag-token", secret: "glffct-" + g.str(abcB62U, 20)},
		{rule: "sonarqube-token", secret: "squ_" + g.str(abcHex, 40)},
		{rule: "jfrog-api-key", secret: "AKCp" + g.str(abcB62, 69)},
		{rule: "postman-api-key", secret: "PMAK-" + g.str(abcHex, 24) + "-" + g.str(abcHex, 34)},
		{rule: "rubygems-api-key", secret: "rubygems_" + g.str(abcHex, 48)},
		{rule: "nuget-api-key", secret: "oy2" + g.str(abcLower36, 43)},
		{rule: "crates-io-token", secret: "cio" + g.str(abcB62, 32)},
		{rule: "clojars-token", secret: "CLOJARS_" + g.str(abcLower36, 60)},
		{rule: "npmrc-auth", secret: npmAuth, text: "registry=https://npm.example.com/\n_auth=" + npmAuth + "\nalways-auth=true", file: ".npmrc"},
		{rule: "docker-config-auth", secret: dockerAuth, text: `{"auths":{"registry.example.com":{"auth":"` + dockerAuth + `"}}}`, file: "config.json"},
		{rule: "slack-app-token", secret: "xapp-1-A" + g.str(abcUpper36, 10) + "-" + g.str("0123456789", 13) + "-" + g.str(abcHex, 64)},
		{rule: "discord-webhook", secret: "discord.com/api/webhooks/" + g.str("0123456789", 18) + "/" + g.str(abcB62U, 68)},
		{rule: "discord-bot-token", secret: "MT" + g.str(abcB62, 24) + "." + g.str(abcB62U, 6) + "." + g.str(abcB62U, 38), text: "DISCORD_TOKEN="},
		{rule: "telegram-bot-token", secret: g.str("123456789", 10) + ":AA" + g.str(abcB62U, 33)},
		{rule: "mailgun-api-key", secret: "key-" + g.str(abcHex, 32)},
		{rule: "mailgun-signing-key", secret: g.str(abcHex, 32) + "-" + g.str(abcHex, 8) + "-" + g.str(abcHex, 8), text: "MAILGUN_API_KEY="},
		{rule: "mailchimp-api-key", secret: g.str(abcHex, 32) + "-us21"},
		{rule: "brevo-api-key", secret: "xkeysib-" + g.str(abcHex, 64) + "-" + g.str(abcB62, 16)},
		{rule: "teams-webhook", secret: "acme.webhook.office.com/webhookb2/" + g.uuid() + "@" + g.uuid() + "/IncomingWebhook/" + g.str(abcHex, 32) + "/" + g.uuid()},
		{rule: "zapier-webhook", secret: "hooks.zapier.com/hooks/catch/" + g.str("0123456789", 7) + "/" + g.str(abcLower36, 7)},
		{rule: "stripe-webhook-secret", secret: "whsec_" + g.str(abcB62, 32)},
		{rule: "square-token", secret: "sq0atp-" + g.str(abcB62U, 22)},
		{rule: "square-token", secret: "sq0csp-" + g.str(abcB62U, 43)},
		{rule: "square-token", secret: "EAAA" + g.str(abcB62U, 60)},
		{rule: "braintree-access-token", secret: "access_token$production$" + g.str(abcLower36, 16) + "$" + g.str(abcHex, 32)},
		{rule: "razorpay-key", secret: "rzp_live_" + g.str(abcB62, 14)},
		{rule: "flutterwave-secret-key", secret: "FLWSECK-" + g.str(abcHex, 32) + "-X"},
		{rule: "shippo-token", secret: "shippo_live_" + g.str(abcHex, 40)},
		{rule: "easypost-api-key", secret: "EZAK" + g.str(abcB62, 54)},
		{rule: "plaid-access-token", secret: "access-production-" + g.uuid()},
		{rule: "huggingface-token", secret: "hf_" + g.str(abcAlpha, 34)},
		{rule: "groq-api-key", secret: "gsk_" + g.str(abcB62, 52)},
		{rule: "replicate-api-token", secret: "r8_" + g.str(abcB62, 37)},
		{rule: "perplexity-api-key", secret: "pplx-" + g.str(abcB62, 48)},
		{rule: "xai-api-key", secret: "xai-" + g.str(abcB62, 80)},
		{rule: "cohere-api-key", secret: g.str(abcB62, 40), text: "COHERE_API_KEY="},
		{rule: "datadog-api-key", secret: g.str(abcHex, 32), text: "DD_API_KEY="},
		{rule: "datadog-api-key", secret: g.str(abcHex, 40), text: "datadog_app_key: "},
		{rule: "newrelic-key", secret: "NRAK-" + g.str(abcUpper36, 27)},
		{rule: "newrelic-license-key", secret: g.str(abcHex, 36) + "NRAL"},
		{rule: "sentry-token", secret: "sntryu_" + g.str(abcHex, 64)},
		{rule: "grafana-token", secret: "glsa_" + g.str(abcB62, 32) + "_" + g.str(abcHex, 8)},
		{rule: "dynatrace-token", secret: "dt0c01." + g.str(abcUpper36, 24) + "." + g.str(abcUpper36, 64)},
		{rule: "linear-api-key", secret: "lin_api_" + g.str(abcB62, 40)},
		{rule: "notion-token", secret: "ntn_" + g.str(abcB62, 46)},
		{rule: "figma-token", secret: "figd_" + g.str(abcB62U, 40)},
		{rule: "contentful-token", secret: "CFPAT-" + g.str(abcB62U, 43)},
		{rule: "airtable-pat", secret: "pat" + g.str(abcB62, 14) + "." + g.str(abcHex, 64)},
		{rule: "typeform-token", secret: "tfp_" + g.str(abcB62U, 59)},
		{rule: "prefect-api-key", secret: "pnu_" + g.str(abcB62, 36)},
		{rule: "readme-api-key", secret: "rdme_" + g.str(abcLower36, 70)},
		{rule: "scalingo-token", secret: "tk-us-" + g.str(abcB62U, 48)},
		{rule: "mapbox-secret-token", secret: "sk.eyJ1Ijoi" + g.str(abcB62, 60) + "." + g.str(abcB62U, 22)},
		{rule: "twitter-bearer-token", secret: "AAAAAAAAAAAAAAAAAAAAA" + "A" + g.str(abcB62, 40) + "%3D" + g.str(abcB62, 50)},
		{rule: "okta-api-token", secret: "00" + g.str(abcB62U, 40), text: "OKTA_API_TOKEN="},
		{rule: "url-credentials", secret: dbPass, text: "DATABASE_URL=postgres://app:" + dbPass + "@db.internal:5432/app?sslmode=require"},
		{rule: "url-credentials", secret: gitPass, text: "https://ci-bot:" + gitPass + "@git.example.com"},
		// Redis and Valkey URLs carry a password with no user name.
		{rule: "url-credentials", secret: redisPass, text: "REDIS_URL=redis://:" + redisPass + "@cache.internal:6379/0"},
		{rule: "url-credentials", secret: redisPass + "Q", text: "rediss://:" + redisPass + "Q@cache.example.com:6380"},
		{rule: "netrc-password", secret: netrcPass, text: "machine api.example.com\n  login ci\n  password " + netrcPass, file: ".netrc"},
		{rule: "wordpress-salt", secret: wpSalt, text: "define( 'AUTH_KEY', '" + wpSalt + "' );", file: "wp-config.php"},
		{rule: "password-hash", secret: hash, text: "root:" + hash + ":19000:0:99999:7:::", file: "shadow"},
		{rule: "password-hash", secret: apr, text: "admin:" + apr, file: ".htpasswd"},
		{rule: "pgpass-password", secret: pgpw, text: "db.internal:5432:app:ci:" + pgpw, file: ".pgpass"},
		{rule: "bcrypt-hash", secret: bcrypt, text: "INSERT INTO users VALUES (1, 'ci', '" + bcrypt + "');"},
		{rule: "putty-private-key", secret: ppkSecret, text: ppk, file: "deploy.ppk"},
	}
	// A text that ends where the secret goes is completed with it.
	for i, p := range ps {
		if p.text != "" && !strings.Contains(p.text, p.secret) {
			ps[i].text = p.text + p.secret
		}
	}
	return ps
}

// providerDecoys are near misses of the provider shapes: none may be found.
func providerDecoys(g *gen) []string {
	return []string{
		"GOCSPX-" + g.str(abcB62U, 12),
		"dop_v1_" + g.str(abcHex, 40),
		"LTAIxxxxxxxxxxxxxxxx",
		"hvs.short",
		"pul-" + g.str(abcHex, 12),
		"AGE-SECRET-KEY-1" + strings.Repeat("Q", 10),
		"key-" + strings.Repeat("a", 32),
		"mongodb://mongo:27017/app",
		"postgres://user:password@localhost:5432/db",
		"redis://:${REDIS_PASSWORD}@redis:6379",
		"mysql://root:<password>@db/app",
		"https://user:pass@example.com",
		"https://github.com/acme/app.git",
		"machine github.com login ci password $GITHUB_TOKEN",
		"define( 'AUTH_KEY', 'put your unique phrase here' );",
		"hf_" + strings.Repeat("a", 34),
		"xai-short",
		"EAAA" + g.str(abcB62U, 20),
		"oy2" + g.str(abcLower36, 10),
		"1//0abc",
		"root:x:0:0:root:/root:/bin/bash",
		"The cost is " + g.str("0123456789", 9) + ":AA short",
		fmt.Sprintf("%s-us", g.str(abcHex, 32)),
		"PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\n...",
		`"auth": "` + base64.StdEncoding.EncodeToString([]byte("no-colon-here")) + `"`,
	}
}

// TestFileRules: a rule for files of a given name applies to them only.
func TestFileRules(t *testing.T) {
	s, err := New(Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := newGen(5)
	pw := g.str(abcB62, 14) + "3z"
	body := "# host:port:db:user:password\ndb.internal:5432:app:ci:" + pw + "\n*:*:*:postgres:\\:x\n"
	fs := s.ScanBytes("home/.pgpass", []byte(body))
	if len(fs) != 1 || fs[0].Rule != "pgpass-password" || fs[0].Secret != pw || fs[0].Line != 2 {
		t.Fatalf(".pgpass: %v", rulesOf(fs))
	}
	if fs := s.ScanBytes("notes.txt", []byte(body)); len(fs) != 0 {
		t.Fatalf("notes.txt: %v", rulesOf(fs))
	}
}
