package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// Rule IDs of the mayfly token rules; --revoke sends the job tokens.
const (
	RuleMayflyJob   = "mayfly-job-token"
	RuleMayflyAdmin = "mayfly-admin-token"
	// RuleMayflyPassword finds the mfyp_ passwords of the database roles
	// mayfly mints; --revoke sends them too (their lease ends, the role
	// is dropped).
	RuleMayflyPassword = "mayfly-db-password"
	RuleGeneric        = "generic-secret"
	// RuleGitHubAppToken finds GitHub App installation tokens (ghs_),
	// which mayfly mints for github_app upstreams; --revoke sends them too
	// (the lease of one mayfly minted ends, the token is deleted).
	RuleGitHubAppToken = "github-app-token"
	// RuleMayflySession finds the mfys_ values of admin sessions (SSO
	// sign-ins, kept by `mayfly auth login`); --revoke sends them too (the
	// session is revoked). They carry no checksum: found by shape.
	RuleMayflySession = "mayfly-admin-session"
)

// RuleInfo describes a rule for reports (SARIF's rule list).
type RuleInfo struct {
	ID          string
	Description string
}

// keyword is a literal that must appear near a rule's match. Keywords are
// found case-insensitively; a case-sensitive one is then compared exactly.
type keyword struct {
	lit string
	cs  bool
}

// matchFunc looks for the rule's matches around one keyword hit b[ks:ke]
// and reports each secret span with add.
type matchFunc func(st *scanState, ri int, b []byte, ks, ke int)

type rule struct {
	id, desc string
	keywords []keyword
	match    matchFunc
	// regexp rules
	re            *regexp.Regexp
	group         int
	before, after int
	multiline     bool
	entropy       float64
	check         func(secret []byte, b []byte, s, e int) (ok, verified bool)
	generic       bool
	files         []string // base names of the only files the rule applies to (match gets the whole buffer)
}

func (r *rule) info() RuleInfo { return RuleInfo{ID: r.id, Description: r.desc} }

// ---- character classes ----

type charset [256]bool

func makeSet(spec string) *charset {
	var cs charset
	for i := 0; i < len(spec); i++ {
		if i+2 < len(spec) && spec[i+1] == '-' {
			for c := spec[i]; c <= spec[i+2]; c++ {
				cs[c] = true
			}
			i += 2
			continue
		}
		cs[spec[i]] = true
	}
	return &cs
}

var (
	setAlnum  = makeSet("a-zA-Z0-9")
	setB62    = setAlnum
	setB62U   = makeSet("a-zA-Z0-9_-")
	setB62UD  = makeSet("a-zA-Z0-9_.-")
	setHex    = makeSet("a-fA-F0-9")
	setLHex   = makeSet("a-f0-9")
	setAWS    = makeSet("A-Z2-7")
	setB64    = makeSet("a-zA-Z0-9+/")
	setB64Any = makeSet("a-zA-Z0-9+/_-")
	setIdent  = makeSet("a-zA-Z0-9_.-")
	setSlackW = makeSet("a-zA-Z0-9/_-")
	setPct    = makeSet("a-zA-Z0-9%._~+/=&:?;,@!*-")
)

// ---- prefix tokens ----

type prefixSpec struct {
	prefix   string
	cs       *charset
	min, max int // length of what follows the prefix
	trim     string
	// left lists the characters that may not stand just before the
	// prefix (the token would be the tail of a longer word); default:
	// letters, digits and cs.
	left  *charset
	check func(tok []byte) (ok, verified bool)
}

func prefixRule(id, desc string, specs ...prefixSpec) *rule {
	r := &rule{id: id, desc: desc}
	byPrefix := map[string]prefixSpec{}
	for _, p := range specs {
		r.keywords = append(r.keywords, keyword{lit: p.prefix, cs: true})
		byPrefix[p.prefix] = p
	}
	r.match = func(st *scanState, ri int, b []byte, ks, ke int) {
		p, ok := byPrefix[string(b[ks:ke])]
		if !ok {
			return
		}
		if ks > 0 && !afterEscape(b, ks) {
			if p.left != nil && p.left[b[ks-1]] || p.left == nil && (setAlnum[b[ks-1]] || p.cs[b[ks-1]]) {
				return
			}
		}
		n := 0
		for ke+n < len(b) && n <= p.max && p.cs[b[ke+n]] {
			n++
		}
		if n > p.max {
			return
		}
		end := ke + n
		for p.trim != "" && end > ke && strings.IndexByte(p.trim, b[end-1]) >= 0 {
			end--
		}
		if end-ke < p.min || (end < len(b) && setAlnum[b[end]]) {
			return
		}
		verified := false
		if p.check != nil {
			var ok bool
			if ok, verified = p.check(b[ks:end]); !ok {
				return
			}
		}
		if isExample(b[ks:end]) {
			return
		}
		st.add(ri, ks, end, verified)
	}
	return r
}

// afterEscape reports whether b[i-1] is the last character of an escape
// (JSON's or C's "\n", "\t", "\u000A", "\x0a"; a URL's "%0A"; a terminal
// code): a letter or digit there is a separator in disguise, and what
// starts at i is not the tail of a longer word.
func afterEscape(b []byte, i int) bool {
	// odd: b[j] is a backslash that is not itself escaped.
	odd := func(j int) bool {
		n := 0
		for j-n >= 0 && b[j-n] == '\\' {
			n++
		}
		return n%2 == 1
	}
	isHex := func(bs []byte) bool {
		for _, c := range bs {
			if _, ok := unhex(c); !ok {
				return false
			}
		}
		return true
	}
	switch {
	case i >= 3 && b[i-3] == '%' && isHex(b[i-2:i]):
		return true
	case i >= 2 && strings.IndexByte("nrtbfvae0", b[i-1]) >= 0 && odd(i-2):
		return true
	case i >= 6 && b[i-5] == 'u' && isHex(b[i-4:i]) && odd(i-6):
		return true
	case i >= 4 && b[i-3] == 'x' && isHex(b[i-2:i]) && odd(i-4):
		return true
	}
	return afterCSI(b, i)
}

// afterCSI reports whether b[:i] ends with a terminal code (ESC '[', at
// most csiMax bytes in 0x20-0x3F, a final byte in 0x40-0x7E, as
// stripTermCodes reads them): its final letter ("\033[0m", "\033[K") is
// no part of a word before a token.
func afterCSI(b []byte, i int) bool {
	if i < 3 || b[i-1] < 0x40 || b[i-1] > 0x7e {
		return false
	}
	j := i - 2
	for j >= 0 && i-2-j < csiMax && b[j] >= 0x20 && b[j] <= 0x3f {
		j--
	}
	return j >= 1 && b[j] == '[' && b[j-1] == escByte
}

// crc62 verifies GitHub's and npm's token checksum: the last six
// characters are the base62 CRC-32 of the thirty before them (the same
// construction and alphabet as mayfly's own tokens).
func crc62(tok []byte) (bool, bool) {
	if len(tok) < 36 {
		return false, false
	}
	body := tok[len(tok)-36 : len(tok)-6]
	ok := token.Checksum(string(body)) == string(tok[len(tok)-6:])
	return ok, ok
}

// ---- regexp rules ----

func regexRule(id, desc string, kws []keyword, expr string, before, after int) *rule {
	r := &rule{id: id, desc: desc, keywords: kws, re: regexp.MustCompile(expr), before: before, after: after}
	r.group = secretGroup(r.re, 0)
	r.match = regexMatch
	return r
}

// fromRunStart makes r, whose keyword is c repeated and whose secret
// begins with the run of c, act only on the hit that starts a run: every
// later byte of a run is a hit too, each a regexp over its window, and the
// base64 of zero bytes is "A" repeated (24 s of CPU for 1 MiB of it,
// against 3 ms for text).
func fromRunStart(r *rule, c byte) *rule {
	match := r.match
	r.match = func(st *scanState, ri int, b []byte, ks, ke int) {
		if ks > 0 && b[ks-1] == c {
			return
		}
		match(st, ri, b, ks, ke)
	}
	return r
}

func secretGroup(re *regexp.Regexp, want int) int {
	if i := re.SubexpIndex("secret"); i > 0 {
		return i
	}
	if want > 0 && want <= re.NumSubexp() {
		return want
	}
	if re.NumSubexp() >= 1 {
		return 1
	}
	return 0
}

func regexMatch(st *scanState, ri int, b []byte, ks, ke int) {
	r := st.e.rules[ri]
	ws, we := ks-r.before, ke+r.after
	if ws < 0 {
		ws = 0
	}
	if we > len(b) {
		we = len(b)
	}
	if !r.multiline {
		if i := bytes.LastIndexByte(b[ws:ks], '\n'); i >= 0 {
			ws += i + 1
		}
		if i := bytes.IndexByte(b[ke:we], '\n'); i >= 0 {
			we = ke + i
		}
	}
	if ws >= st.winS[ri] && we <= st.winE[ri] {
		return
	}
	st.winS[ri], st.winE[ri] = ws, we
	regexWindow(st, ri, r, b, ws, we)
}

func regexWindow(st *scanState, ri int, r *rule, b []byte, ws, we int) {
	clipped := we < len(b) && b[we] != '\n'
	for _, m := range r.re.FindAllSubmatchIndex(b[ws:we], -1) {
		if clipped && m[1]+ws == we {
			continue // may be cut short by the window; a later hit sees it whole
		}
		s, e := m[2*r.group], m[2*r.group+1]
		if s < 0 {
			continue
		}
		s, e = s+ws, e+ws
		sec := b[s:e]
		if r.entropy > 0 && entropy(sec) < r.entropy {
			continue
		}
		if isExample(sec) {
			continue
		}
		verified := false
		if r.check != nil {
			var ok bool
			if ok, verified = r.check(sec, b, s, e); !ok {
				continue
			}
		}
		st.add(ri, s, e, verified)
	}
}

// ---- helpers ----

func entropy(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// knownExamples are secrets printed in vendors' documentation.
var knownExamples = []string{
	"AKIAIOSFODNN7EXAMPLE",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", // jwt.io
	"AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",     // Google docs
	"sk_live_4eC39HqLyjWDarjtT1zdp7dc",            // Stripe docs
	"SK2a0747eba6abf96b7e3c3ff0b4530f6e",          // Twilio docs
}

func isExample(sec []byte) bool {
	if bytes.Contains(sec, []byte("EXAMPLE")) {
		return true
	}
	for _, k := range knownExamples {
		if bytes.Contains(sec, []byte(k)) {
			return true
		}
	}
	return false
}

var placeholderWords = []string{
	"changeme", "change_me", "change-me", "changeit", "example", "placeholder", "your_", "your-", "yourtoken",
	"yoursecret", "yourpassword", "xxxx", "****", "....", "…", "<", ">", "${", "{{", "}}", "%s", "%(",
	"redacted", "dummy", "sample", "todo", "fixme", "insert", "replace", "secret_here", "token_here",
	"password_here", "notsecret", "not_a_secret", "foobar", "abcdef", "123456", "qwerty", "process.env",
	"os.getenv", "getenv", "environ", "config.", "settings.", "secrets.", "vault:", "env(", "$(",
}

func isPlaceholder(v []byte) bool {
	if len(v) == 0 {
		return true
	}
	same := true
	for _, c := range v[1:] {
		if c != v[0] {
			same = false
			break
		}
	}
	if same {
		return true
	}
	l := bytes.ToLower(v)
	for _, w := range placeholderWords {
		if bytes.Contains(l, []byte(w)) {
			return true
		}
	}
	switch v[0] {
	case '$', '%', '@', '&', '*', '#', '!', '/':
		return true
	}
	return false
}

// ---- built-in rules ----

func builtinRules() []*rule {
	ghCheck := func(tok []byte) (bool, bool) { return crc62(tok) }
	rs := []*rule{
		prefixRule("aws-access-key-id", "AWS access key ID",
			prefixSpec{prefix: "AKIA", cs: setAWS, min: 16, max: 16},
			prefixSpec{prefix: "ASIA", cs: setAWS, min: 16, max: 16},
			prefixSpec{prefix: "ABIA", cs: setAWS, min: 16, max: 16},
			prefixSpec{prefix: "ACCA", cs: setAWS, min: 16, max: 16}),
		withEntropy(regexRule("aws-secret-access-key", "AWS secret access key in an assignment",
			[]keyword{{lit: "secret_access_key"}, {lit: "SecretAccessKey"}, {lit: "secret-access-key"}, {lit: "aws_secret"}},
			`(?i)(?:secret[_-]?access[_-]?key|aws_secret(?:_key)?)["'\x60]?\s*(?::=|=>|=|:|,)\s*["'\x60]?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)`,
			64, 120), 3.5),
		withCheck(regexRule("gcp-service-account", "Google Cloud service-account key (JSON)",
			[]keyword{{lit: "private_key_id"}},
			`\\?"private_key_id\\?"\s*:\s*\\?"(?P<secret>[a-f0-9]{40})\\?"`, 4, 80), func(sec, b []byte, s, e int) (bool, bool) {
			lo, hi := max(0, s-4096), min(len(b), e+4096)
			return bytes.Contains(b[lo:hi], []byte("service_account")), false
		}),
		prefixRule("gcp-api-key", "Google Cloud API key", prefixSpec{prefix: "AIza", cs: setB62U, min: 35, max: 35}),
		withEntropy(regexRule("azure-storage-account-key", "Azure storage account key (connection string)",
			[]keyword{{lit: "AccountKey"}}, `(?i)AccountKey\s*=\s*(?P<secret>[A-Za-z0-9+/]{86}==)`, 4, 120), 4),
		withEntropy(regexRule("azure-connection-string", "Azure Service Bus / Event Hubs shared access key",
			[]keyword{{lit: "SharedAccessKey="}}, `(?i)SharedAccessKey=(?P<secret>[A-Za-z0-9+/]{42,44}=)`, 4, 60), 3.5),
		withEntropy(regexRule("azure-client-secret", "Microsoft Entra ID (Azure AD) client secret",
			[]keyword{{lit: "Q~", cs: true}}, `(?:^|[^A-Za-z0-9_~.-])(?P<secret>[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~.-]|$)`, 8, 40), 3),
		prefixRule("github-pat", "GitHub personal access token (classic)", prefixSpec{prefix: "ghp_", cs: setB62, min: 36, max: 36, check: ghCheck}),
		prefixRule("github-oauth", "GitHub OAuth access token", prefixSpec{prefix: "gho_", cs: setB62, min: 36, max: 36, check: ghCheck}),
		prefixRule("github-user-token", "GitHub user-to-server token", prefixSpec{prefix: "ghu_", cs: setB62, min: 36, max: 36, check: ghCheck}),
		{id: RuleGitHubAppToken, desc: "GitHub App installation (server-to-server) token", keywords: []keyword{{lit: "ghs_", cs: true}}, match: ghsMatch},
		prefixRule(RuleMayflySession, "mayfly admin session (SSO sign-in)", prefixSpec{prefix: "mfys_", cs: setB62U, min: 43, max: 43}),
		prefixRule("github-refresh-token", "GitHub refresh token", prefixSpec{prefix: "ghr_", cs: setB62, min: 36, max: 36, check: ghCheck}),
		prefixRule("github-fine-grained-pat", "GitHub fine-grained personal access token",
			prefixSpec{prefix: "github_pat_", cs: setB62U, min: 82, max: 82, check: func(t []byte) (bool, bool) {
				return t[11+22] == '_', false
			}}),
		prefixRule("gitlab-pat", "GitLab personal, project or group access token",
			prefixSpec{prefix: "glpat-", cs: setB62UD, min: 20, max: 300, trim: ".-"}),
		prefixRule("gitlab-deploy-token", "GitLab deploy token", prefixSpec{prefix: "gldt-", cs: setB62UD, min: 20, max: 300, trim: ".-"}),
		prefixRule("gitlab-runner-token", "GitLab runner authentication or registration token",
			prefixSpec{prefix: "glrt-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "GR1348941", cs: setB62U, min: 20, max: 40, trim: "-"}),
		prefixRule("gitlab-token", "GitLab token (trigger, CI build, feed, OAuth, agent, incoming mail, SCIM)",
			prefixSpec{prefix: "glptt-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "glcbt-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "glft-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "gloas-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "glagent-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "glimt-", cs: setB62UD, min: 20, max: 300, trim: ".-"},
			prefixSpec{prefix: "glsoat-", cs: setB62UD, min: 20, max: 300, trim: ".-"}),
		prefixRule("slack-token", "Slack token",
			prefixSpec{prefix: "xoxb-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxa-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxp-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxr-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxs-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxe.xoxp-", cs: setB62U, min: 20, max: 255, trim: "-"},
			prefixSpec{prefix: "xoxe-", cs: setB62U, min: 20, max: 255, trim: "-"}),
		prefixRule("slack-webhook", "Slack incoming webhook URL",
			prefixSpec{prefix: "hooks.slack.com/", cs: setSlackW, min: 40, max: 200, trim: "/", left: setB62UD, check: func(t []byte) (bool, bool) {
				rest := t[len("hooks.slack.com/"):]
				for _, p := range []string{"services/", "workflows/", "triggers/"} {
					if bytes.HasPrefix(rest, []byte(p)) {
						return entropy(rest[len(p):]) >= 3.5, false
					}
				}
				return false, false
			}}),
		// A test-mode key still reads and writes the test account (its
		// customers, webhooks, settings); gitleaks reports every mode too.
		// Docs write placeholders in test mode: those have little entropy.
		prefixRule("stripe-secret-key", "Stripe secret or restricted key (live or test mode)",
			prefixSpec{prefix: "sk_live_", cs: setB62, min: 24, max: 247},
			prefixSpec{prefix: "rk_live_", cs: setB62, min: 24, max: 247},
			prefixSpec{prefix: "sk_test_", cs: setB62, min: 24, max: 247, check: stripeEntropy},
			prefixSpec{prefix: "rk_test_", cs: setB62, min: 24, max: 247, check: stripeEntropy},
			prefixSpec{prefix: "sk_prod_", cs: setB62, min: 24, max: 247, check: stripeEntropy},
			prefixSpec{prefix: "rk_prod_", cs: setB62, min: 24, max: 247, check: stripeEntropy}),
		prefixRule("twilio-api-key", "Twilio API key SID", prefixSpec{prefix: "SK", cs: setHex, min: 32, max: 32, check: hexEntropy}),
		prefixRule("twilio-account-sid", "Twilio account SID", prefixSpec{prefix: "AC", cs: setLHex, min: 32, max: 32, check: hexEntropy}),
		prefixRule("sendgrid-api-key", "SendGrid API key", prefixSpec{prefix: "SG.", cs: setB62UD, min: 66, max: 66, check: func(t []byte) (bool, bool) {
			return t[3+22] == '.' && bytes.Count(t, []byte(".")) == 2, false
		}}),
		prefixRule("npm-token", "npm access token", prefixSpec{prefix: "npm_", cs: setB62, min: 36, max: 36, check: ghCheck}),
		prefixRule("pypi-token", "PyPI API token", prefixSpec{prefix: "pypi-AgEIcHlwaS5vcmc", cs: setB62U, min: 50, max: 1000}),
		prefixRule("dockerhub-token", "Docker Hub personal or organisation access token",
			prefixSpec{prefix: "dckr_pat_", cs: setB62U, min: 27, max: 64},
			prefixSpec{prefix: "dckr_oat_", cs: setB62U, min: 27, max: 64}),
		prefixRule("shopify-token", "Shopify access token or shared secret",
			prefixSpec{prefix: "shpat_", cs: setHex, min: 32, max: 32},
			prefixSpec{prefix: "shpca_", cs: setHex, min: 32, max: 32},
			prefixSpec{prefix: "shppa_", cs: setHex, min: 32, max: 32},
			prefixSpec{prefix: "shpss_", cs: setHex, min: 32, max: 32}),
		regexRule("openai-api-key", "OpenAI API key",
			[]keyword{{lit: "sk-proj-", cs: true}, {lit: "sk-svcacct-", cs: true}, {lit: "sk-admin-", cs: true}, {lit: "T3BlbkFJ", cs: true}},
			`(?:^|[^A-Za-z0-9_-])(?P<secret>sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,300}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}))(?:[^A-Za-z0-9_-]|$)`, 200, 320),
		prefixRule("anthropic-api-key", "Anthropic API key",
			prefixSpec{prefix: "sk-ant-api03-", cs: setB62U, min: 80, max: 120},
			prefixSpec{prefix: "sk-ant-admin01-", cs: setB62U, min: 80, max: 120}),
		{id: "jwt", desc: "JSON Web Token", keywords: []keyword{{lit: "eyJ", cs: true}}, match: jwtMatch},
		{id: "private-key", desc: "PEM or OpenSSH private key", keywords: []keyword{{lit: "PRIVATE KEY", cs: true}}, match: pemMatch},
	}
	rs = append(rs, providerRules()...)
	rs = append(rs, []*rule{
		{id: RuleGeneric, desc: "High-entropy value assigned to a secret-like name", generic: true, match: genericMatch,
			keywords: []keyword{{lit: "pass"}, {lit: "pwd"}, {lit: "secret"}, {lit: "token"}, {lit: "apikey"}, {lit: "api_key"},
				{lit: "api-key"}, {lit: "access_key"}, {lit: "accesskey"}, {lit: "private_key"}, {lit: "credential"}, {lit: "auth_key"}}},
	}...)
	return rs
}

func withEntropy(r *rule, h float64) *rule { r.entropy = h; return r }

func withCheck(r *rule, f func(sec, b []byte, s, e int) (bool, bool)) *rule { r.check = f; return r }

func hexEntropy(t []byte) (bool, bool) { return entropy(t[2:]) >= 3.0, false }

func stripeEntropy(t []byte) (bool, bool) { return entropy(t[len("sk_test_"):]) >= 3.0, false }

// ---- JWT ----

func jwtMatch(st *scanState, ri int, b []byte, ks, ke int) {
	if ks > 0 && (setB62U[b[ks-1]] || b[ks-1] == '.') {
		return
	}
	var dots [2]int
	nd := 0
	i := ks
	limit := min(len(b), ks+16384)
	for ; i < limit; i++ {
		c := b[i]
		if c == '.' {
			if nd == 2 {
				break
			}
			dots[nd] = i
			nd++
			continue
		}
		if !setB62U[c] {
			break
		}
	}
	if nd != 2 || i == limit && limit < len(b) {
		// Not a JWT. "eyJ" also starts the base64 of any JSON document
		// (`{"`): a Kubernetes secret, a Docker auth file, a CI variable.
		if nd == 0 && i-ks >= 16 && st.e.decode && st.depth < maxDepth {
			st.decodeHit(encBase64, ks, i)
		}
		return
	}
	if !jwtParts(b[ks:dots[0]], b[dots[0]+1:dots[1]], b[dots[1]+1:i]) || isExample(b[ks:i]) {
		return
	}
	st.add(ri, ks, i, false)
}

// jwtParts reports whether h.p.sig has a signed JWT's shape: a header that
// is a JSON object naming an algorithm other than none, a payload that is
// a JSON object, and a signature.
func jwtParts(h, p, sig []byte) bool {
	if len(h) < 10 || len(p) < 4 || len(sig) < 16 {
		return false
	}
	var hdr map[string]any
	hb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(string(h), "="))
	if err != nil || json.Unmarshal(hb, &hdr) != nil {
		return false
	}
	if alg, _ := hdr["alg"].(string); alg == "" || strings.EqualFold(alg, "none") {
		return false
	}
	pb, err := base64.RawURLEncoding.DecodeString(string(p))
	return err == nil && len(pb) > 0 && pb[0] == '{'
}

// ghsMatch finds GitHub App installation tokens of both forms (ghsAt); only
// the classic form's checksum verifies one.
func ghsMatch(st *scanState, ri int, b []byte, ks, ke int) {
	if ks > 0 && setAlnum[b[ks-1]] && !afterEscape(b, ks) {
		return
	}
	end, verified, ok := ghsAt(b, ks)
	if !ok || isExample(b[ks:end]) {
		return
	}
	st.add(ri, ks, end, verified)
}

// ---- private keys ----

var pemHeader = regexp.MustCompile(`-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----`)

func pemMatch(st *scanState, ri int, b []byte, ks, ke int) {
	lo := max(0, ks-40)
	hm := pemHeader.FindIndex(b[lo:min(len(b), ke+12)])
	if hm == nil {
		return
	}
	s, he := lo+hm[0], lo+hm[1]
	limit := min(len(b), he+32768)
	end := limit
	if j := bytes.Index(b[he:limit], []byte("-----END")); j >= 0 {
		end = he + j
		if k := bytes.Index(b[end+8:min(limit, end+80)], []byte("-----")); k >= 0 {
			end += 8 + k + 5
		}
	}
	n := 0
	for _, c := range b[he:end] {
		if setB64[c] {
			n++
		}
	}
	if n < 64 || bytes.Contains(b[he:end], []byte("...")) || bytes.Contains(b[he:end], []byte("…")) {
		return
	}
	st.add(ri, s, end, false)
}

// ---- generic assignments ----

var genericNameStop = []string{"name", "type", "url", "uri", "path", "file", "length", "len", "size", "count",
	"header", "field", "prefix", "env", "id", "format", "mode", "kind", "key_id", "hash", "policy", "expiry", "expires",
	"hint", "endpoint", "mgr", "manager", "source", "provider", "class", "func", "fn", "label", "desc", "description",
	"scope", "scopes", "ttl", "timeout", "flag", "var", "param", "arg", "option", "config", "store", "dir"}

var genericKnownPrefixes = []string{"mfy_", "mfya_", "mfyp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "npm_",
	"glpat-", "xox", "sk_live_", "rk_live_", "sk_test_", "rk_test_", "sk_prod_", "rk_prod_", "AKIA", "ASIA", "AIza", "SG.", "sk-", "dckr_", "shp", "pypi-", "eyJ"}

// sourceExts are files in which an unquoted value is an expression (a
// variable, a call), not a literal. Shell, .env, YAML, INI and other
// config formats are not here: there a bare value is the value.
var sourceExts = []string{".go", ".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".kts",
	".scala", ".rb", ".cs", ".php", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".swift", ".m", ".dart", ".lua",
	".groovy", ".vb", ".fs", ".ex", ".exs", ".erl", ".clj", ".r", ".jl", ".pl", ".pm"}

func isSourceCode(file string) bool {
	i := strings.LastIndexByte(file, '.')
	if i < 0 || strings.ContainsAny(file[i:], "/\\") {
		return false
	}
	ext := strings.ToLower(file[i:])
	return slices.Contains(sourceExts, ext)
}

func genericMatch(st *scanState, ri int, b []byte, ks, ke int) {
	// The keyword must start a word inside the name (so "bypass" is not "pass").
	if ks > 0 && isLetter(b[ks-1]) && !(isUpper(b[ks]) && !isUpper(b[ks-1])) {
		return
	}
	ne := ke
	for ne < len(b) && ne-ke < 64 && setIdent[b[ne]] {
		ne++
	}
	if xmlElementValue(st, ri, b, ks, ne) {
		return
	}
	i := ne
	if i < len(b) && (b[i] == '"' || b[i] == '\'' || b[i] == '`') {
		i++
	}
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	// <add key="ApiToken" value="…"/>: the value is the next attribute.
	if i > ne && i+6 <= len(b) && bytes.EqualFold(b[i:i+6], []byte("value=")) {
		i += 5
	}
	// operator
	colon := false
	switch {
	case i+1 < len(b) && (b[i] == ':' || b[i] == '?' || b[i] == '+') && b[i+1] == '=':
		i += 2
	case i+1 < len(b) && b[i] == '=' && b[i+1] == '>':
		i += 2
	case i < len(b) && b[i] == '=':
		if i+1 < len(b) && b[i+1] == '=' {
			return
		}
		i++
	case i < len(b) && b[i] == ':':
		colon = true
		i++
	default:
		return
	}
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i >= len(b) {
		return
	}
	if j, ok := nextLineValue(b, ks, i, colon); ok {
		i = j
	} else if b[i] == '\n' || b[i] == '\r' {
		return
	}
	// Only now (most hits are not assignments) look at the whole name.
	ns := ks
	for ns > 0 && ks-ns < 64 && setIdent[b[ns-1]] {
		ns--
	}
	if name := bytes.TrimRight(b[ns:ne], "_.-"); stopName(name) || string(name) == "PASS" || vectorName(name) {
		return // PASS: is a test runner's status; shared_secret a protocol's test vector
	}
	var vs, ve int
	quoted := false
	escaped := false // the value is inside a quoted string itself: \"value\"
	if b[i] == '\\' && i+1 < len(b) && (b[i+1] == '"' || b[i+1] == '\'') {
		escaped = true
		i++
	}
	if q := b[i]; q == '"' || q == '\'' || q == '`' {
		quoted = true
		vs = i + 1
		j := vs
		for j < len(b) && j-vs <= 256 && b[j] != q && b[j] != '\n' {
			if b[j] == '\\' {
				if escaped && j+1 < len(b) && b[j+1] == q {
					break
				}
				j++
			}
			j++
		}
		if escaped {
			if j+1 >= len(b) || b[j] != '\\' || b[j+1] != q {
				return
			}
		} else if j >= len(b) || b[j] != q {
			return
		}
		ve = j
		if concatenated(b, ve+1) {
			return // "prefix" + something: part of an expression, not a whole value
		}
	} else {
		if st.code {
			return // in source code a bare value is a variable or a call
		}
		vs = i
		j := vs
		for j < len(b) && j-vs <= 256 {
			c := b[j]
			if c <= ' ' || c == ',' || c == ';' || c == '"' || c == '\'' || c == '`' || c == ')' || c == '}' || c == ']' {
				break
			}
			// An escaped line end or tab (a line printed into a notebook's
			// outputs or a JSON log) ends the value as the character would.
			if c == '\\' && j+1 < len(b) && (b[j+1] == 'n' || b[j+1] == 'r' || b[j+1] == 't') {
				break
			}
			j++
		}
		ve = j
	}
	v := b[vs:ve]
	if len(v) < 8 || len(v) > 256 || isPlaceholder(v) || isExample(v) || notLiteral(v, quoted) || textish(v) {
		return
	}
	for _, p := range genericKnownPrefixes {
		if bytes.HasPrefix(v, []byte(p)) {
			return // the specific rule decides
		}
	}
	var lowr, upr, dig, sym bool
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z':
			lowr = true
		case c >= 'A' && c <= 'Z':
			upr = true
		case c >= '0' && c <= '9':
			dig = true
		case c == ' ':
			if !quoted {
				return
			}
			sym = true
		default:
			sym = true
		}
	}
	h := entropy(v)
	switch {
	case (dig || sym) && (lowr || upr) && h >= 3.0:
	case len(v) >= 24 && h >= 4.0:
	default:
		return
	}
	st.add(ri, vs, ve, false)
}

// nextLineValue finds a value that starts on the line after its name's
// (b[ks:] the name, b[i:] what follows the operator and blanks): after a
// backslash that continues the line (shell, Python), or after YAML's ':'
// ending the line or a block scalar's indicator (| or >, then a chomping
// sign or indentation digit), on a line indented deeper than the name's
// that is no mapping or list (a nested key, "- item"). It returns where
// the value starts.
func nextLineValue(b []byte, ks, i int, colon bool) (int, bool) {
	eol := func(j int) (int, bool) { // past the line end at b[j:], if there is one
		if j+1 < len(b) && b[j] == '\r' && b[j+1] == '\n' {
			return j + 2, true
		}
		return j + 1, j < len(b) && b[j] == '\n'
	}
	blanks := func(j int) int {
		for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
			j++
		}
		return j
	}
	if b[i] == '\\' {
		if n, ok := eol(i + 1); ok {
			if j := blanks(n); j < len(b) && b[j] != '\n' && b[j] != '\r' {
				return j, true
			}
		}
		return 0, false
	}
	if !colon {
		return 0, false
	}
	j := i
	if b[j] == '|' || b[j] == '>' {
		j++
		for k := 0; k < 2 && j < len(b) && (b[j] == '-' || b[j] == '+' || isDigit(b[j])); k++ {
			j++
		}
		j = blanks(j)
	}
	n, ok := eol(j)
	if !ok {
		return 0, false
	}
	ls := bytes.LastIndexByte(b[:ks], '\n') + 1
	indent := blanks(ls) - ls
	v := blanks(n)
	if v-n <= indent || v >= len(b) {
		return 0, false
	}
	le := bytes.IndexByte(b[v:], '\n')
	if le < 0 {
		le = len(b) - v
	}
	line := bytes.TrimRight(b[v:v+le], " \t\r")
	if len(line) == 0 || line[0] == '-' && (len(line) == 1 || line[1] == ' ') ||
		line[len(line)-1] == ':' || bytes.Contains(line, []byte(": ")) {
		return 0, false
	}
	return v, true
}

// xmlElementValue handles <Password>value</Password> and <Pass
// encoding="base64">value</Pass>: the element's text is the value. It
// reports whether b[ks:ne] was such an element's name.
func xmlElementValue(st *scanState, ri int, b []byte, ks, ne int) bool {
	ns := ks
	for ns > 0 && ks-ns < 64 && isLetter(b[ns-1]) {
		ns--
	}
	if ns == 0 || b[ns-1] != '<' || ne >= len(b) || (b[ne] != '>' && b[ne] != ' ') {
		return false
	}
	i := ne
	for i < len(b) && i-ne < 120 && b[i] != '>' && b[i] != '\n' {
		i++
	}
	if i >= len(b) || b[i] != '>' || b[i-1] == '/' {
		return true
	}
	vs := i + 1
	ve := vs
	for ve < len(b) && ve-vs <= 256 && b[ve] != '<' && b[ve] != '\n' {
		ve++
	}
	if ve >= len(b) || b[ve] != '<' || !bytes.HasPrefix(b[ve:], []byte("</")) {
		return true
	}
	name := b[ns:ne]
	if stopName(name) || vectorName(name) {
		return true
	}
	v := b[vs:ve]
	if len(v) < 8 || isPlaceholder(v) || isExample(v) || notLiteral(v, true) || textish(v) || entropy(v) < 3.0 {
		return true
	}
	st.add(ri, vs, ve, false)
	return true
}

// stopName reports whether an assigned name says its value is not a secret
// itself (tokenURL, password_hint, awsAccessKeyIDEnv): its last word, after
// a separator or at a camel-case boundary, is one of genericNameStop.
func stopName(name []byte) bool {
	for _, w := range genericNameStop {
		if len(name) <= len(w) || !hasSuffixFold(name, w) {
			continue
		}
		at := len(name) - len(w)
		prev, first := name[at-1], name[at]
		switch {
		case len(w) >= 4 && !isLetter(prev):
			return true
		case prev == '_' || prev == '-' || prev == '.':
			return true
		case isUpper(first) && !isUpper(prev): // camel case: tokenURL, secretName
			return true
		case len(w) >= 4 && isUpper(first) == isUpper(prev) && allUpper(name): // SECRETNAME is rare; SECRET_NAME handled above
			return false
		case len(w) >= 4:
			return true
		}
	}
	return false
}

// vectorName reports names that key derivation test vectors use for
// values that are secrets only inside the protocol under test (HPKE, ECDH,
// TLS key schedules): shared_secret, SharedSecret, exporter_secret.
func vectorName(name []byte) bool {
	var n []byte
	for _, c := range name {
		if isLetter(c) {
			n = append(n, lower(c))
		}
	}
	for _, w := range []string{"sharedsecret", "exportersecret", "presharedsecret", "handshakesecret", "mastersecret", "earlysecret"} {
		if bytes.HasSuffix(n, []byte(w)) {
			return true
		}
	}
	return false
}

// textish reports values that are text rather than a key: non-ASCII
// letters or escaped control characters (\n, \t) inside.
func textish(v []byte) bool {
	for i, c := range v {
		if c >= 0x80 {
			return true
		}
		if c == '\\' && i+1 < len(v) && (v[i+1] == 'n' || v[i+1] == 't' || v[i+1] == 'r') {
			return true
		}
	}
	return false
}

func allUpper(b []byte) bool {
	for _, c := range b {
		if c >= 'a' && c <= 'z' {
			return false
		}
	}
	return true
}

// concatenated reports whether a closing quote at b[i-1] is followed by a
// concatenation operator: the quoted text is a piece of an expression.
func concatenated(b []byte, i int) bool {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i < len(b) && (b[i] == '+' || b[i] == '.' && i+1 < len(b) && (b[i+1] == ' ' || b[i+1] == '$') || b[i] == '|' && i+1 < len(b) && b[i+1] == '|')
}

// notLiteral reports values that name or compute a secret rather than hold
// one: identifiers and references (api-token, client_secret, AWS_SECRET_KEY,
// credSourceEc2Metadata, urn:ietf:params:oauth:…), calls and indexing,
// URLs without credentials, prose, and text that starts mid-expression.
func notLiteral(v []byte, quoted bool) bool {
	switch c := v[0]; {
	case c == '+' || c == ' ' || c == '\t' || c == ',' || c == ')':
		return true // the text between two string literals, or after one
	}
	if v[len(v)-1] == ' ' {
		return true
	}
	if !quoted && bytes.ContainsAny(v, "([") {
		return true
	}
	if i := bytes.Index(v, []byte("://")); i > 0 && isScheme(v[:i]) && !bytes.ContainsRune(v[i+3:], '@') {
		return true
	}
	if bytes.ContainsRune(v, ' ') {
		return isProse(v) // "Time to generate first token, in seconds"
	}
	return wordLike(v)
}

// isProse reports text of several words ("put your unique phrase here",
// "invalid jsontext.Token; it has been voided").
func isProse(v []byte) bool {
	f := bytes.Fields(v)
	if len(f) < 2 {
		return false
	}
	for _, w := range f {
		w = bytes.Trim(w, ".,;:!?()'\"…`")
		if len(w) == 0 || len(w) > 24 {
			continue
		}
		plain := true
		for _, c := range w {
			if !isLetter(c) && c != '\'' && c != '-' && c != '.' {
				plain = false
				break
			}
		}
		if !plain && !wordLike(w) {
			return false
		}
	}
	return true
}

func isScheme(s []byte) bool {
	for _, c := range s {
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// wordLike reports whether v is made of words: parts split at - _ . : / and
// at camel-case boundaries, each an ordinary word (lower, Capitalised or
// UPPER letters, optionally followed by digits: v1, Ec2, sha256) or a
// number. Random secrets almost never split this way.
func wordLike(v []byte) bool {
	if len(v) == 0 {
		return true
	}
	parts, short, letters, vowels := 0, 0, 0, 0
	start := 0
	flush := func(end int) bool {
		w := v[start:end]
		start = end
		if len(w) == 0 {
			return true
		}
		parts++
		k := 0 // letters, then digits
		for k < len(w) && isLetter(w[k]) {
			k++
		}
		for j := k; j < len(w); j++ {
			if w[j] < '0' || w[j] > '9' {
				return false
			}
		}
		if k == 0 {
			return true // a number
		}
		l := w[:k]
		letters += k
		for _, c := range l {
			if strings.IndexByte("aeiouyAEIOUY", c) >= 0 {
				vowels++
			}
		}
		if k > 20 {
			return false
		}
		if k <= 2 {
			short++
		}
		if allUpper(l) {
			return true
		}
		for _, c := range l[1:] {
			if isUpper(c) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '/':
			if !flush(i) {
				return false
			}
			start = i + 1
		case isUpper(c) && i > start && !isUpper(v[i-1]):
			// camel boundary: fooBar → foo | Bar (also after digits: Ec2Metadata)
			if !flush(i) {
				return false
			}
		case isUpper(c) && i > start && isUpper(v[i-1]) && i+1 < len(v) && v[i+1] >= 'a' && v[i+1] <= 'z':
			// HTTPServer → HTTP | Server
			if !flush(i) {
				return false
			}
		case isLetter(c) || c >= '0' && c <= '9':
		default:
			return false
		}
	}
	if !flush(len(v)) || letters == 0 {
		return false
	}
	// Random text split at case changes gives many one- and two-letter
	// pieces (q8 Vn3 Zk1), and a single run of letters without vowels.
	if short > max(1, parts/3) {
		return false
	}
	return parts > 1 || vowels*10 >= letters*3
}

func hasSuffixFold(s []byte, suf string) bool {
	if len(s) < len(suf) {
		return false
	}
	t := s[len(s)-len(suf):]
	for i := 0; i < len(suf); i++ {
		if lower(t[i]) != suf[i] {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isUpper(c byte) bool  { return c >= 'A' && c <= 'Z' }
