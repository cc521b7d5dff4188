package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// Every page answers for a signed-in caller, with the strict CSP, and
// shows what it lists.
func TestPages(t *testing.T) {
	b := newTestBench(t)
	tests := []struct {
		path string
		want []string
	}{
		{"/ui/leases", []string{"live leases", "lse_00000119", "Revoke all…"}},
		{"/ui/leases?grant=deploy", []string{"lse_00000110", "deploy"}},
		{"/ui/leases?repository=acme%2Fapp7", []string{"lse_00000107", "acme/app7"}},
		{"/ui/leases?subject=repo%3Aacme%2Fapp3%3Aref%3Arefs%2Fheads%2Fmain", []string{"lse_00000103"}},
		{"/ui/leases?job=job-5", []string{"lse_00000005"}},
		{"/ui/audit", []string{`href="/ui/audit/299"`, "gateway.request"}},
		{"/ui/audit?type=leak.report", []string{`href="/ui/audit/999"`[:0] + "No entry matches."}},
		{"/ui/audit?type=token.exchange&status=403", []string{`href="/ui/audit/250"`, "claims.ref"}},
		{"/ui/audit?lease=lse_00000003", []string{`href="/ui/audit/79"`, `href="/ui/audit/60"`}},
		{"/ui/audit?upstream=api1&status=2xx", []string{`href="/ui/audit/298"`}},
		{"/ui/audit/5", []string{`id="proof-data"`, "/ui/static/audit.js", "gateway.request"}},
		{"/ui/leaks", []string{"No leak report yet."}},
		{"/ui/refused", []string{`href="/ui/audit/250"`, "claim_mismatch", "claims.ref"}},
		{"/ui/policy", []string{"version <strong id=\"policy-version\">1</strong>", "grants:"}},
		{"/ui/policy?a=1&b=1", []string{"The two versions are the same."}},
		{"/ui/secrets", []string{"<code>gh</code>", "Metadata only"}},
		{"/ui/health", []string{"Ready", "store", "Audit index", "node-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := b.get(t, tt.path)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := w.Header().Get("Content-Security-Policy"); got != CSP {
				t.Errorf("CSP = %q", got)
			}
			body := html.UnescapeString(w.Body.String())
			for _, s := range tt.want {
				if !strings.Contains(body, html.UnescapeString(s)) {
					t.Errorf("page lacks %q", s)
				}
			}
			// Nothing inline runs: every script is a file of this origin
			// or JSON data.
			for _, m := range regexp.MustCompile(`<script[^>]*>`).FindAllString(w.Body.String(), -1) {
				if !strings.Contains(m, `src="/ui/static/`) && !strings.Contains(m, `type="application/json"`) {
					t.Errorf("inline script %s", m)
				}
			}
			if strings.Contains(w.Body.String(), " style=") || strings.Contains(w.Body.String(), " onclick=") {
				t.Error("inline style or handler")
			}
		})
	}
}

func TestStaticAndUnknown(t *testing.T) {
	b := newTestBench(t)
	if w := b.get(t, "/ui/static/verify.js"); w.Code != 200 || !strings.Contains(w.Body.String(), "verifyInclusion") {
		t.Fatalf("verify.js: %d", w.Code)
	}
	if w := b.get(t, "/ui/nope"); w.Code != 404 {
		t.Fatalf("unknown page: %d", w.Code)
	}
	if w := b.get(t, "/ui/audit/999999"); w.Code != 404 {
		t.Fatalf("unknown entry: %d", w.Code)
	}
	for _, bad := range []string{"/ui/leases?cursor=AAAA", "/ui/audit?before=-1", "/ui/audit?status=abc", "/ui/policy?a=x&b=1", "/ui/policy?a=7&b=1"} {
		if w := b.get(t, bad); w.Code == 200 || w.Code >= 500 {
			t.Errorf("%s: %d", bad, w.Code)
		}
	}
}

// Signed out: a page sends the browser to sign in; a form is refused.
func TestSignedOut(t *testing.T) {
	b := newTestBench(t)
	b.auth.who = Caller{}
	w := b.get(t, "/ui/leases")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/ui/login" {
		t.Fatalf("GET: %d %s", w.Code, w.Header().Get("Location"))
	}
	w = b.post(t, "/ui/leases/revoke", url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}, CSRFField: {b.auth.csrf}})
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("POST: %d", w.Code)
	}
	if _, ok := b.m.Get("lse_00000001"); !ok {
		t.Fatal("lease gone")
	}
}

func live(b *bench, id string) bool {
	l, ok := b.m.Get(id)
	return ok && !l.Revoked()
}

// Revoking asks first, with the count; it needs the CSRF token, the
// operator role and a same-origin form.
func TestRevoke(t *testing.T) {
	b := newTestBench(t)
	csrf := b.auth.csrf
	tests := []struct {
		name   string
		role   string
		form   url.Values
		site   string
		status int
		want   string
	}{
		{"no csrf", authority.RoleAdmin, url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}}, "", 403, "CSRF"},
		{"wrong csrf", authority.RoleAdmin, url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}, CSRFField: {csrf + "x"}}, "", 403, "CSRF"},
		{"cross site", authority.RoleAdmin, url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}, CSRFField: {csrf}}, "cross-site", 403, "cross-site"},
		{"auditor", authority.RoleAuditor, url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}, CSRFField: {csrf}}, "", 403, "operator role"},
		{"neither", authority.RoleOperator, url.Values{CSRFField: {csrf}}, "", 400, "Name one"},
		{"ask one", authority.RoleOperator, url.Values{"lease_id": {"lse_00000001"}, CSRFField: {csrf}}, "same-origin", 200, "Revoke lease"},
		{"ask grant", authority.RoleOperator, url.Values{"grant": {"deploy"}, CSRFField: {csrf}}, "", 200, `Revoke all <strong id="confirm-count">12</strong>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.auth.who.Role = tt.role
			w := httptestPost(b, tt.form, tt.site)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
			if !live(b, "lse_00000001") || !live(b, "lse_00000010") {
				t.Fatal("revoked without confirmation")
			}
		})
	}
	b.auth.who.Role = authority.RoleOperator
	w := httptestPost(b, url.Values{"lease_id": {"lse_00000001"}, "confirm": {"yes"}, CSRFField: {csrf}}, "same-origin")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "Revoked 1 lease") || live(b, "lse_00000001") {
		t.Fatalf("revoke one: %d %s", w.Code, w.Body)
	}
	w = httptestPost(b, url.Values{"grant": {"deploy"}, "confirm": {"yes"}, CSRFField: {csrf}}, "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), "Revoked 12 lease") || live(b, "lse_00000010") || !live(b, "lse_00000011") {
		t.Fatalf("revoke grant: %d %s", w.Code, w.Body)
	}
	// Revocations are audited by the authority, under the caller's name.
	ctx := context.Background()
	if err := b.log.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	es, err := b.log.Entries(ctx, 300, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		if strings.Contains(string(e), `"token.revoke"`) && strings.Contains(string(e), "oidc:alice@example.com") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no audited revocation among %d entries", len(es))
	}
}

func httptestPost(b *bench, form url.Values, site string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/ui/leases/revoke", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if site != "" {
		r.Header.Set("Sec-Fetch-Site", site)
	}
	b.c.ServeHTTP(w, r)
	return w
}

// The entry page embeds what the browser needs to check the entry, and
// Go's verifier agrees with it.
func TestEntryProofData(t *testing.T) {
	b := newTestBench(t)
	for _, idx := range []string{"0", "5", "299"} {
		w := b.get(t, "/ui/audit/"+idx)
		m := regexp.MustCompile(`(?s)<script type="application/json" id="proof-data">(.*?)</script>`).FindStringSubmatch(w.Body.String())
		if m == nil {
			t.Fatalf("entry %s: no proof data", idx)
		}
		var pd proofData
		if err := json.Unmarshal([]byte(m[1]), &pd); err != nil {
			t.Fatal(err)
		}
		size, root, err := audit.ParseCheckpoint([]byte(pd.Checkpoint), pd.Key)
		if err != nil {
			t.Fatal(err)
		}
		entry, _ := base64.StdEncoding.DecodeString(pd.Entry)
		var proof [][32]byte
		for _, h := range pd.Proof {
			raw, _ := base64.StdEncoding.DecodeString(h)
			proof = append(proof, [32]byte(raw))
		}
		if err := audit.VerifyInclusion(pd.Index, size, entry, root, proof); err != nil {
			t.Fatalf("entry %s: %v", idx, err)
		}
	}
}

func TestPolicyPlanAndApply(t *testing.T) {
	b := newTestBench(t)
	csrf := b.auth.csrf
	src := string(b.a.Policy().Source)
	removed := strings.Replace(src, "  deploy:\n    upstream: api\n    ttl: 10m\n    allow: [{methods: [POST], paths: [\"/deploy\"]}]\n    who: [{issuer: ci, claims: {repository: acme/app}}]\n", "", 1)
	if removed == src {
		t.Fatal("test policy not as expected")
	}
	w := b.post(t, "/ui/policy/plan", url.Values{"policy": {removed}, CSRFField: {csrf}})
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, "revoking <strong>12</strong>") || !strings.Contains(body, "- grants.deploy") {
		t.Fatalf("plan: %d %s", w.Code, body)
	}
	if b.a.PolicyVersion() != 1 {
		t.Fatal("plan applied something")
	}
	if w := b.post(t, "/ui/policy/plan", url.Values{"policy": {"grants: ["}, CSRFField: {csrf}}); w.Code != 400 || !strings.Contains(w.Body.String(), "Not valid") {
		t.Fatalf("invalid plan: %d", w.Code)
	}
	// Apply: refused without the revocation's confirmation or against a
	// stale base, done with both.
	if w := b.post(t, "/ui/policy/apply", url.Values{"policy": {removed}, "base": {"1"}, CSRFField: {csrf}}); w.Code != 409 {
		t.Fatalf("apply unconfirmed: %d", w.Code)
	}
	if w := b.post(t, "/ui/policy/apply", url.Values{"policy": {removed}, "base": {"0"}, "allow_revoke": {"yes"}, CSRFField: {csrf}}); w.Code != 409 {
		t.Fatalf("apply stale: %d", w.Code)
	}
	b.auth.who.Role = authority.RoleOperator
	if w := b.post(t, "/ui/policy/apply", url.Values{"policy": {removed}, "base": {"1"}, "allow_revoke": {"yes"}, CSRFField: {csrf}}); w.Code != 403 {
		t.Fatalf("apply as operator: %d", w.Code)
	}
	b.auth.who.Role = authority.RoleAdmin
	w = b.post(t, "/ui/policy/apply", url.Values{"policy": {removed}, "base": {"1"}, "allow_revoke": {"yes"}, CSRFField: {csrf}})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "Applied as version <strong>2</strong>") || b.a.PolicyVersion() != 2 {
		t.Fatalf("apply: %d %s", w.Code, w.Body)
	}
	w = b.get(t, "/ui/policy?a=1&b=2")
	if !strings.Contains(w.Body.String(), `<span class="ddel">-   deploy:`) {
		t.Fatalf("diff: %s", w.Body)
	}
	if live(b, "lse_00000010") {
		t.Fatal("removed grant's lease still live")
	}
	_ = lease.Filter{}
}

// A node that has not yet followed (every 2 s) the version another node
// applied plans against the latest stored version: the plan's base is that
// version and its changes are relative to it, so a plan of the version in
// force changes nothing and its apply is not refused as stale.
func TestPolicyPlanOnANodeBehind(t *testing.T) {
	b := newTestBench(t)
	ctx := context.Background()
	src := string(b.a.Policy().Source)
	removed := strings.Replace(src, "  deploy:\n    upstream: api\n    ttl: 10m\n    allow: [{methods: [POST], paths: [\"/deploy\"]}]\n    who: [{issuer: ci, claims: {repository: acme/app}}]\n", "", 1)
	if removed == src {
		t.Fatal("test policy not as expected")
	}
	// Another node, over the same store, applies version 2.
	other := authority.New(authority.Config{Leases: b.m, Verifier: identity.NewVerifier(identity.Options{}), Policies: b.db, Audit: b.log, PolicyKey: testPolicyKey})
	if err := other.LoadPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ApplyPolicy(ctx, []policy.File{{Name: "p.yaml", Data: []byte(removed)}}, "test"); err != nil {
		t.Fatal(err)
	}
	if b.a.PolicyVersion() != 1 {
		t.Fatalf("the console's node is at version %d, want 1", b.a.PolicyVersion())
	}
	w := b.post(t, "/ui/policy/plan", url.Values{"policy": {removed}, CSRFField: {b.auth.csrf}})
	if body := w.Body.String(); w.Code != 200 || !strings.Contains(body, "Planned against version 2: 0 change(s).") {
		t.Fatalf("plan on a node behind: %d %s", w.Code, body)
	}
}

func TestLineDiff(t *testing.T) {
	tests := []struct {
		a, b string
		want string
	}{
		{"", "", ""},
		{"a\nb\n", "a\nb\n", " a  b"},
		{"a\nb\nc\n", "a\nc\n", " a -b  c"},
		{"a\nc\n", "a\nb\nc\n", " a +b  c"},
		{"x\n", "y\n", "-x +y"},
		{"a\nb\nc\nd\n", "a\nx\nc\ny\n", " a -b +x  c -d +y"},
	}
	for _, tt := range tests {
		var parts []string
		for _, l := range lineDiff(tt.a, tt.b) {
			parts = append(parts, l.Op+l.Text)
		}
		if got := strings.Join(parts, " "); got != tt.want {
			t.Errorf("lineDiff(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

// A filter that matches little returns a short page and where to go on
// from, so that no page reads more than MaxScan index rows; following Next
// finds every match exactly once.
func TestFindAuditWindow(t *testing.T) {
	for _, be := range storetest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) { testFindAuditWindow(t, newBench(t, be.DB, 120, 300)) })
	}
}

func testFindAuditWindow(t *testing.T, b *bench) {
	ctx := context.Background()
	// The lease listing's repository filter (an index on the claim) on
	// this backend too.
	ls, err := b.m.List(ctx, lease.Filter{Repository: "acme/app7", LiveAt: b.c.cfg.Now(), Limit: 10})
	if err != nil || len(ls) != 2 || ls[0].ID != "lse_00000107" || ls[1].ID != "lse_00000007" {
		t.Fatalf("by repository: %v %v", ls, err)
	}
	if ls, err := b.m.List(ctx, lease.Filter{Repository: "nobody/x", Limit: 10}); err != nil || len(ls) != 0 {
		t.Fatalf("by unknown repository: %v %v", ls, err)
	}
	q := store.AuditQuery{Type: "token.exchange", StatusMin: 400, Limit: 2, MaxScan: 7}
	var got []int64
	for pages := 0; pages < 100; pages++ {
		p, err := b.db.FindAudit(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Indexes...)
		if len(p.Indexes) < q.Limit && p.Next != 0 && p.Scanned != q.MaxScan {
			t.Fatalf("short page said to go on after %d rows", p.Scanned)
		}
		if p.Next == 0 {
			break
		}
		q.Before = p.Next
	}
	if want := []int64{250, 150, 50}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Unfiltered pages walk the log itself.
	p, err := b.db.FindAudit(ctx, store.AuditQuery{Before: 3, Limit: 5})
	if err != nil || !slices.Equal(p.Indexes, []int64{2, 1, 0}) || p.Next != 0 {
		t.Fatalf("unfiltered: %v %d %v", p.Indexes, p.Next, err)
	}
}

// A filter holding a NUL or bytes that are not UTF-8 is refused as a bad
// request on both backends: PostgreSQL refuses such text with an error
// rather than matching nothing, which answered 500 there and 200 on SQLite.
func TestFilterTextNotPlain(t *testing.T) {
	for _, be := range storetest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			b := newBench(t, be.DB, 3, 3)
			for _, path := range []string{
				"/ui/leases?grant=a%00b",
				"/ui/leases?subject=%ff%fe",
				"/ui/audit?lease=lse_%00",
				"/ui/audit?type=a%c3",
				"/ui/policy?a=1%00",
			} {
				w := b.get(t, path)
				if w.Code != http.StatusBadRequest {
					t.Errorf("GET %s: status %d, want 400", path, w.Code)
				}
			}
			w := b.post(t, "/ui/leases/revoke", url.Values{CSRFField: {b.auth.csrf}, "grant": {"deploy\x00"}, "confirm": {"yes"}})
			if w.Code != http.StatusBadRequest {
				t.Errorf("POST /ui/leases/revoke grant with NUL: status %d, want 400", w.Code)
			}
		})
	}
}
