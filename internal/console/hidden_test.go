package console

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// Text from outside (an ID token's claims, a gateway path, a leak report's
// URL, a policy under review) may hold characters a browser does not show
// as themselves: a bidi override (U+202E) reorders the rest of its line,
// so that "refs/heads/<RLO>niam" reads as "refs/heads/main", and a policy
// line "paths: [...] #<RLO>..." reads as something it is not (Trojan
// Source); zero-width ones make two different values look the same. The
// plan's change lines already show them escaped (policy.Shown); every page
// shows them escaped too, as \u202e, and keeps them as they are only where
// they are sent back (a textarea, an input's value).
func TestPagesShowHiddenCharactersEscaped(t *testing.T) {
	b := newTestBench(t)
	ctx := context.Background()
	const rlo, zwsp = "\u202e", "\u200b"
	subject := "repo:acme/app:ref:refs/heads/" + rlo + "niam"
	// A live lease whose claims hold them.
	now := time.Now()
	if _, err := b.db.SQL().Exec(b.db.Rebind(`INSERT INTO leases (id, token_hash, issuer, subject, job, claims, grants, issued_at, expires_at, max_expires_at, source, bind_source, jkt, uses, max_uses, revoked_at, revoke_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '')`), "lse_hidden01", make([]byte, 32), "https://ci.example", subject, "job"+zwsp+"-1",
		`{"repository":"acme/`+rlo+`ppa"}`, "read", now.UnixNano(), now.Add(time.Hour).UnixNano(), now.Add(2*time.Hour).UnixNano(), "10.0.0.1", 0, "", 0, 0); err != nil {
		t.Fatal(err)
	}
	// A refused exchange, a gateway request and a leak report that hold
	// them, indexed as the indexer would.
	var last int64
	for _, ev := range []audit.Event{
		{Type: audit.TypeExchange, Issuer: "https://ci.example", Subject: subject, Repository: "acme/" + rlo + "ppa", Grant: "deploy", Status: 403,
			Reason: "claim_mismatch", Check: "claims.ref", Source: "10.0.0.1", Detail: map[string]any{"got": "refs/heads/" + rlo + "niam"}},
		{Type: audit.TypeGateway, Lease: "lse_hidden01", Upstream: "api", Method: "GET", Path: "/v1/" + rlo + "items", Status: 200},
		{Type: audit.TypeLeak, Source: "10.0.0.9", Status: 200, Detail: map[string]any{"report_source": "git" + rlo + "hub", "url": "https://x.example/" + rlo + "a"}},
	} {
		idx, err := b.log.Add(ctx, ev).Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.db.AuditEntry(ctx, idx)
		if err != nil {
			t.Fatal(err)
		}
		if err := (Indexer{Store: b.db}).Write(ctx, [][]byte{data}, idx); err != nil {
			t.Fatal(err)
		}
		last = idx
	}
	// A policy version whose text holds one in a comment.
	hostile := strings.Replace(testPolicy, "ttl: 5m", "ttl: 6m # "+rlo+"read only", 1)
	res, err := b.a.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(hostile)}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	b.auth.who.Name = "oidc:" + rlo + "moc.elpmaxe@ecila"

	outside := regexp.MustCompile(`(?s)<textarea[^>]*>.*?</textarea>|<input[^>]*>`)
	tests := []struct {
		name string
		page func(t *testing.T) (int, string)
		want []string // escaped, as the page must show them
	}{
		{"leases", get(b, "/ui/leases"), []string{`refs/heads/\u202eniam`, `job\u200b-1`, `acme/\u202eppa`}},
		{"audit", get(b, "/ui/audit"), []string{`refs/heads/\u202eniam`, `/v1/\u202eitems`}},
		{"refused", get(b, "/ui/refused"), []string{`refs/heads/\u202eniam`, `acme/\u202eppa`}},
		{"leaks", get(b, "/ui/leaks"), []string{`git\u202ehub`, `https://x.example/\u202ea`}},
		{"entry", get(b, "/ui/audit/"+itoa(last-2)), []string{`refs/heads/\u202eniam`}},
		{"policy diff", get(b, "/ui/policy?a="+itoa(res.Version-1)+"&b="+itoa(res.Version)), []string{`# \u202eread only`}},
		{"plan", func(t *testing.T) (int, string) {
			w := b.post(t, "/ui/policy/plan", url.Values{"policy": {strings.Replace(hostile, "ttl: 10m", "ttl: 11m", 1)}, CSRFField: {b.auth.csrf}})
			return w.Code, w.Body.String()
		}, []string{`# \u202eread only`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := tt.page(t)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			if i := strings.IndexFunc(outside.ReplaceAllString(body, ""), func(r rune) bool {
				return r != '\n' && r != '\t' && r != '\r' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r))
			}); i >= 0 {
				shown := outside.ReplaceAllString(body, "")
				t.Errorf("the page shows %U raw: …%s…", []rune(shown[i:])[0], shown[max(0, i-60):min(len(shown), i+60)])
			}
			for _, s := range append(tt.want, `oidc:\u202emoc`) {
				if !strings.Contains(body, s) {
					t.Errorf("the page does not show %q", s)
				}
			}
		})
	}
}

func get(b *bench, path string) func(*testing.T) (int, string) {
	return func(t *testing.T) (int, string) {
		w := b.get(t, path)
		return w.Code, w.Body.String()
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// The in-browser check shows the entry it verified (static/verify.js,
// shownText) as the server's pages show text (shown): hidden characters
// escaped alike, the rest as it is. Run by node, as TestVerifierJS is.
func TestShownTextJSMatchesGo(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is needed to test static/verify.js")
		}
		t.Skip("node not installed")
	}
	inputs := []string{
		"plain text, kept",
		`{"subject":"repo:acme/app:ref:refs/heads/` + "\u202e" + `niam","status":403}`,
		"zero\u200bwidth and\ufeffBOM",
		"isolates \u2066\u2067\u2068\u2069 marks \u200e\u200f",
		"controls \x00\x07\x08\x0b\x0c\x1b\x7f\u0085",
		"kept: line\nbreak\ttab\rCR",
		"tag \U000e0041 and emoji \U0001f600",
	}
	in, _ := json.Marshal(inputs)
	script := `import { shownText } from "./static/verify.js";
const inputs = JSON.parse(process.argv[1]);
console.log(JSON.stringify(inputs.map(shownText)));`
	out, err := exec.Command(node, "--input-type=module", "-e", script, string(in)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(inputs) {
		t.Fatalf("node printed %s (%v)", out, err)
	}
	for i, s := range inputs {
		if want := shown(s); got[i] != want {
			t.Errorf("%q: verify.js shows %q, the pages %q", s, got[i], want)
		}
	}
}
