package scan

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

const (
	abcB62  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	abcB62U = abcB62 + "_-"
	abcB64  = abcB62 + "+/"
	abcHex  = "0123456789abcdef"
	abcAWS  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
)

type gen struct{ r *rand.Rand }

func newGen(seed uint64) *gen { return &gen{rand.New(rand.NewPCG(seed, 7))} }

func (g *gen) str(abc string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = abc[g.r.IntN(len(abc))]
	}
	return string(b)
}

func (g *gen) crcTok(prefix string) string {
	body := g.str(abcB62, 30)
	return prefix + body + token.Checksum(body)
}

func (g *gen) pem(kind string) string {
	raw := make([]byte, 900)
	for i := range raw {
		raw[i] = byte(g.r.UintN(256))
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	var lines []string
	for len(b64) > 64 {
		lines = append(lines, b64[:64])
		b64 = b64[64:]
	}
	lines = append(lines, b64)
	return "-----BEGIN " + kind + "PRIVATE KEY-----\n" + strings.Join(lines, "\n") + "\n-----END " + kind + "PRIVATE KEY-----"
}

func (g *gen) jwt() string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","kid":"` + g.str(abcHex, 8) + `"}`))
	p := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"repo:o/r","iat":%d}`, 1700000000+g.r.IntN(1e6))))
	return h + "." + p + "." + g.str(abcB62U, 86)
}

// planted is one secret of a rule; also lists rules that legitimately
// report part of the same text.
type planted struct {
	rule, secret, text string
	also               []string
	// file, when set, names the only file the sample is planted in: a
	// credential store's own format (.netrc, shadow, .ppk…) is met as such
	// a file, not inside a JSON string or a log line.
	file string
}

// samples returns one valid secret per built-in rule, with the text that
// carries it (the secret itself unless the rule needs context).
func samples(g *gen) []planted {
	mj, _ := token.New(token.Job)
	ma, _ := token.New(token.Admin)
	mp, _ := token.NewPassword()
	escaped, _ := token.New(token.Job)
	awsSecret := g.str(abcB64, 40)
	sa := g.str(abcHex, 40)
	saPem := g.pem("")
	saJSON, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "demo-1", "private_key_id": sa,
		"private_key": saPem + "\n", "client_email": "ci@demo-1.iam.gserviceaccount.com"})
	azKey := g.str(abcB64, 86) + "=="
	sbKey := g.str(abcB64, 43) + "="
	azCS := g.str("abcdefghij", 3) + "8Q~" + g.str(abcB62+"_~.-", 31) + "a"
	gen := g.str(abcB62, 10) + "9$" + g.str(abcB62, 8)
	oaProj := "sk-proj-" + g.str(abcB62U, 74) + "T3BlbkFJ" + g.str(abcB62U, 74)
	oaOld := "sk-" + g.str(abcB62, 20) + "T3BlbkFJ" + g.str(abcB62, 20)
	return append([]planted{
		{rule: RuleMayflyJob, secret: mj},
		// A JSON log escapes the newline before it: "\n" glues a letter to
		// the token, which is still a whole, live token.
		{rule: RuleMayflyJob, secret: escaped, text: `{"log":"$ mayfly login\n` + escaped + `\n"}`},
		{rule: RuleMayflyAdmin, secret: ma},
		{rule: RuleMayflySession, secret: "mfys_" + g.str(abcB62U, 43)},
		{rule: RuleMayflyPassword, secret: mp, text: "DATABASE_URL=postgres://mayfly_0123456789abcdef01234567_89abcdef:" + mp + "@db.internal:5432/app"},
		{rule: "aws-access-key-id", secret: "AKIA" + g.str(abcAWS, 16)},
		{rule: "aws-access-key-id", secret: "ASIA" + g.str(abcAWS, 16)},
		{rule: "aws-secret-access-key", secret: awsSecret, text: "aws_secret_access_key = " + awsSecret},
		{rule: "gcp-service-account", secret: sa, text: string(saJSON), also: []string{"private-key"}},
		{rule: "gcp-api-key", secret: "AIza" + g.str(abcB62U, 35)},
		{rule: "azure-storage-account-key", secret: azKey, text: "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=" + azKey + ";EndpointSuffix=core.windows.net"},
		{rule: "azure-connection-string", secret: sbKey, text: "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=" + sbKey},
		{rule: "azure-client-secret", secret: azCS},
		{rule: "github-pat", secret: g.crcTok("ghp_")},
		{rule: "github-oauth", secret: g.crcTok("gho_")},
		{rule: "github-user-token", secret: g.crcTok("ghu_")},
		{rule: "github-app-token", secret: g.crcTok("ghs_")},
		{rule: "github-refresh-token", secret: g.crcTok("ghr_")},
		{rule: "github-fine-grained-pat", secret: "github_pat_11" + g.str(abcB62, 20) + "_" + g.str(abcB62, 59)},
		{rule: "gitlab-pat", secret: "glpat-" + g.str(abcB62U, 20)},
		{rule: "gitlab-deploy-token", secret: "gldt-" + g.str(abcB62U, 20)},
		{rule: "gitlab-runner-token", secret: "glrt-" + g.str(abcB62U, 20)},
		{rule: "gitlab-token", secret: "glptt-" + g.str(abcHex, 40)},
		{rule: "slack-token", secret: "xoxb-" + g.str("0123456789", 12) + "-" + g.str("0123456789", 13) + "-" + g.str(abcB62, 24)},
		{rule: "slack-token", secret: "xoxp-" + g.str("0123456789", 12) + "-" + g.str("0123456789", 12) + "-" + g.str(abcB62, 32)},
		{rule: "slack-webhook", secret: "hooks.slack.com/services/T" + g.str(abcAWS, 8) + "/B" + g.str(abcAWS, 10) + "/" + g.str(abcB62, 24)},
		{rule: "stripe-secret-key", secret: "sk_live_" + g.str(abcB62, 24)},
		{rule: "stripe-secret-key", secret: "rk_live_" + g.str(abcB62, 99)},
		{rule: "stripe-secret-key", secret: "sk_test_" + g.str(abcB62, 24)},
		{rule: "stripe-secret-key", secret: "rk_test_" + g.str(abcB62, 99)},
		{rule: "twilio-api-key", secret: "SK" + g.str(abcHex, 32)},
		{rule: "twilio-account-sid", secret: "AC" + g.str(abcHex, 32)},
		{rule: "sendgrid-api-key", secret: "SG." + g.str(abcB62U, 22) + "." + g.str(abcB62U, 43)},
		{rule: "npm-token", secret: g.crcTok("npm_")},
		{rule: "pypi-token", secret: "pypi-AgEIcHlwaS5vcmc" + g.str(abcB62U, 140)},
		{rule: "dockerhub-token", secret: "dckr_pat_" + g.str(abcB62U, 27)},
		{rule: "shopify-token", secret: "shpat_" + g.str(abcHex, 32)},
		{rule: "shopify-token", secret: "shpss_" + g.str(abcHex, 32)},
		{rule: "openai-api-key", secret: oaProj},
		{rule: "openai-api-key", secret: oaOld},
		{rule: "anthropic-api-key", secret: "sk-ant-api03-" + g.str(abcB62U, 93) + "AA"},
		{rule: "jwt", secret: g.jwt()},
		{rule: "private-key", secret: g.pem("RSA ")},
		{rule: "private-key", secret: g.pem("OPENSSH ")},
		{rule: "private-key", secret: g.pem("EC ")},
		{rule: RuleGeneric, secret: gen, text: `db_password = "` + gen + `"`},
	}, providerSamples(g)...)
}

func (p planted) body() string {
	if p.text != "" {
		return p.text
	}
	return p.secret
}

// decoys must give no finding at all.
func decoys(g *gen) []string {
	mj, _ := token.New(token.Job)
	badMfy := mj[:len(mj)-1] + string(rotate(mj[len(mj)-1]))
	ma, _ := token.New(token.Admin)
	badMfya := ma[:10] + string(rotate(ma[10])) + ma[11:]
	gh := g.crcTok("ghp_")
	badGh := gh[:len(gh)-1] + string(rotate(gh[len(gh)-1]))
	np := g.crcTok("npm_")
	badNpm := np[:8] + string(rotate(np[8])) + np[9:]
	return append([]string{
		"token = " + badMfy,
		"admin: " + badMfya,
		"export GH=" + badGh,
		"npm config set //registry.npmjs.org/:_authToken=" + badNpm,
		"id: " + fmt.Sprintf("%s-%s-4%s-a%s-%s", g.str(abcHex, 8), g.str(abcHex, 4), g.str(abcHex, 3), g.str(abcHex, 3), g.str(abcHex, 12)),
		"sha256: " + g.str(abcHex, 64),
		"commit " + g.str(abcHex, 40),
		"checksum=" + g.str(abcHex, 64),
		"key_id: AKIAIOSFODNN7EXAMPLE",
		"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
		`password = "changeme"`,
		`password: "${DB_PASSWORD}"`,
		`api_key = "<your-api-key>"`,
		`secret = "xxxxxxxxxxxxxxxxxxxx"`,
		`token: aaaaaaaaaaaaaaaaaaaa`,
		`client_secret = os.Getenv("CLIENT_SECRET")`,
		`token := tok.Next()`,
		`if token == "" { return errMissingToken }`,
		`password = getPassword(user, realm)`,
		`bypass_mode = enabled9x`,
		"-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
		"-----BEGIN PUBLIC KEY-----\n" + base64.StdEncoding.EncodeToString([]byte(g.str(abcB62, 200))) + "\n-----END PUBLIC KEY-----",
		"blob: " + base64.StdEncoding.EncodeToString([]byte(g.str(abcB62, 300))),
		"hex: " + hex.EncodeToString([]byte(g.str(abcB62, 100))),
		"SKIP_TESTS=1 ACCEPT=yes TASK_ID=" + g.str(abcHex, 32),
		"glpat-short",
		"sk_test_" + strings.Repeat("x", 24),
		"the private key is kept in the vault",
		"xoxb-not-a-token",
	}, providerDecoys(g)...)
}

func rotate(c byte) byte {
	i := strings.IndexByte(abcB62, c)
	return abcB62[(i+1)%62]
}

func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

type corpusFile struct {
	name    string
	content string
	want    []planted
}

// buildCorpus plants every sample in code, config, env, log, minified
// JSON and encoded forms, and writes the decoys into their own files.
func buildCorpus(g *gen) []corpusFile {
	var files []corpusFile
	ss := samples(g)
	for i, p := range ss {
		if p.file != "" {
			files = append(files, corpusFile{fmt.Sprintf("files/s%02d/%s", i, p.file), p.body() + "\n", []planted{p}})
			continue
		}
		body := p.body()
		jb, _ := json.Marshal(body)
		files = append(files,
			corpusFile{fmt.Sprintf("code/s%02d.go", i), "package x\n\n// connects\nfunc f() {\n\tv := " + strings.ReplaceAll(string(jb), "\\n", "\\n") + "\n\t_ = v\n}\n", []planted{p}},
			corpusFile{fmt.Sprintf("cfg/s%02d.yaml", i), "service:\n  name: api\n  value: |\n    " + strings.ReplaceAll(body, "\n", "\n    ") + "\n  replicas: 3\n", []planted{p}},
			corpusFile{fmt.Sprintf("logs/s%02d.log", i), "2025-01-02T03:04:05Z INFO started\n2025-01-02T03:04:06Z DEBUG request payload=" + strings.ReplaceAll(body, "\n", " ") + " status=200\n", []planted{p}},
		)
		// Rules whose only keyword has two characters have no base64 trigger.
		// So do three-character ones (":AA", "-us", "://").
		if !slices.Contains([]string{"twilio-api-key", "twilio-account-sid", "azure-client-secret", "telegram-bot-token", "mailchimp-api-key", "url-credentials"}, p.rule) {
			files = append(files, corpusFile{fmt.Sprintf("enc/s%02d.b64", i), "data: " + base64.StdEncoding.EncodeToString([]byte("export V="+body+"\n")) + "\n", []planted{p}})
		}
		files = append(files,
			corpusFile{fmt.Sprintf("enc/s%02d.hex", i), "blob=" + hex.EncodeToString([]byte(body)) + ";\n", []planted{p}},
			corpusFile{fmt.Sprintf("enc/s%02d.pct", i), "GET /cb?v=" + pctAll(body) + " HTTP/1.1\n", []planted{p}},
		)
		if strings.ContainsAny(body, "+/=;:") && p.rule != "bcrypt-hash" { // a query-escaped $ (%24) reveals nothing
			files = append(files, corpusFile{fmt.Sprintf("enc/s%02d.url", i), "https://example.net/run?config=" + url.QueryEscape(body) + "&x=1\n", []planted{p}})
		}
	}
	// One minified JSON line holding everything.
	m := map[string]string{}
	for i, p := range ss {
		if p.file == "" {
			m[fmt.Sprintf("k%02d", i)] = p.body()
		}
	}
	mj, _ := json.Marshal(m)
	var inline []planted
	for _, p := range ss {
		if p.file == "" {
			inline = append(inline, p)
		}
	}
	files = append(files, corpusFile{"min/all.json", string(mj), inline})
	for i, d := range decoys(g) {
		files = append(files, corpusFile{fmt.Sprintf("decoy/d%02d.txt", i), "# decoy\n" + d + "\n", nil})
	}
	return files
}

func TestCorpusRecallPrecision(t *testing.T) {
	g := newGen(1)
	files := buildCorpus(g)
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	byFile := map[string][]Finding{}
	_, err = s.ScanPaths(t.Context(), []string{dir}, func(f Finding) {
		rel, _ := filepath.Rel(dir, filepath.FromSlash(f.File))
		byFile[filepath.ToSlash(rel)] = append(byFile[filepath.ToSlash(rel)], f)
	})
	if err != nil {
		t.Fatal(err)
	}
	type stat struct{ tp, fn, fp int }
	stats := map[string]*stat{}
	get := func(r string) *stat {
		if stats[r] == nil {
			stats[r] = &stat{}
		}
		return stats[r]
	}
	for _, cf := range files {
		got := byFile[cf.name]
		used := make([]bool, len(got))
		for _, p := range cf.want {
			found := false
			for i, f := range got {
				if f.Rule == p.rule && sameSecret(p.rule, f.Secret, p.secret) {
					found, used[i] = true, true
				}
			}
			if found {
				get(p.rule).tp++
			} else {
				get(p.rule).fn++
				t.Errorf("%s: %s not found (got %v)", cf.name, p.rule, rulesOf(got))
			}
			for i, f := range got {
				for _, a := range p.also {
					if f.Rule == a {
						used[i] = true
					}
				}
			}
		}
		for i, f := range got {
			if !used[i] {
				get(f.Rule).fp++
				t.Errorf("%s: false positive %s %s", cf.name, f.Rule, f.Hint)
			}
			if strings.Contains(f.Hint, f.Secret) && len(f.Secret) > 8 {
				t.Errorf("%s: hint holds the whole secret", cf.name)
			}
		}
	}
	for r, st := range stats {
		recall := float64(st.tp) / float64(st.tp+st.fn)
		precision := float64(st.tp) / float64(max(1, st.tp+st.fp))
		t.Logf("%-28s recall %.2f precision %.2f (tp %d fn %d fp %d)", r, recall, precision, st.tp, st.fn, st.fp)
	}
	for _, r := range []string{RuleMayflyJob, RuleMayflyAdmin, RuleMayflyPassword} {
		if st := stats[r]; st == nil || st.fp != 0 || st.fn != 0 {
			t.Errorf("%s: want exact detection, got %+v", r, st)
		}
	}
	// Every built-in rule is exercised.
	for _, ri := range BuiltinRules() {
		if stats[ri.ID] == nil || stats[ri.ID].tp == 0 {
			t.Errorf("rule %s has no true positive in the corpus", ri.ID)
		}
	}
}

// sameSecret compares secrets; a private key may have been re-wrapped
// (JSON escapes, indentation, newlines folded in a log line).
func sameSecret(rule, got, want string) bool {
	if rule != "private-key" {
		return got == want
	}
	norm := func(s string) string {
		s = strings.ReplaceAll(s, `\n`, "")
		return strings.Join(strings.Fields(s), "")
	}
	return norm(got) == norm(want)
}

func rulesOf(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rule+"@"+fmt.Sprint(f.Line)+":"+fmt.Sprint(f.Column))
	}
	return out
}
