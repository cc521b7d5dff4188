package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPathMatch(t *testing.T) {
	long := "/repos" + strings.Repeat("/x", 5000)
	tests := []struct {
		pattern, path string
		want          bool
	}{
		// literals
		{"/repos/acme/app", "/repos/acme/app", true},
		{"/repos/acme/app", "/repos/acme/app/", true}, // a trailing / is ignored
		{"/repos/acme/app", "/repos/acme/ap", false},
		{"/repos/acme/app", "/repos/acme/apps", false},
		{"/repos/acme/app", "/repos/acme/app/x", false},
		{"/repos/acme/app", "/repos/acme", false},
		{"/repos/acme/app", "/Repos/acme/app", false}, // case-sensitive
		{"/repos/acme/app", "repos/acme/app", false},
		{"/repos/acme/app", "", false},
		// root
		{"/", "/", true},
		{"/", "/x", false},
		{"/x", "/", false},
		{"/**", "/", true},
		{"/**", "/a/b/c", true},
		{"/*", "/", false},
		{"/*", "/a", true},
		{"/*", "/a/b", false},
		// one segment
		{"/repos/*/app", "/repos/acme/app", true},
		{"/repos/*/app", "/repos/app", false},
		{"/repos/*/app", "/repos/a/b/app", false},
		{"/repos/*", "/repos/", false},
		{"/repos/*/*", "/repos/a/b", true},
		// any depth, zero included
		{"/repos/acme/app/**", "/repos/acme/app", true},
		{"/repos/acme/app/**", "/repos/acme/app/", true},
		{"/repos/acme/app/**", "/repos/acme/app/x/y", true},
		{"/repos/acme/app/**", "/repos/acme/application", false},
		{"/repos/acme/app/**", "/repos/acme", false},
		{"/a/**/b", "/a/b", true},
		{"/a/**/b", "/a/x/y/b", true},
		{"/a/**/b", "/a/x/y/b/c", false},
		{"/a/**/b/**/c", "/a/b/b/c/c", true},
		{"/a/**/b/*", "/a/b/b/c/c", false},
		{"/a/**/b/*", "/a/x/b/c", true},
		{"/**/deployments", "/repos/acme/app/deployments", true},
		{"/**/deployments", "/deployments", true},
		{"/**/*", "/", false},
		{"/**/*", "/x", true},
		// unclean request paths never match
		{"/repos/**", "/repos/../admin", false},
		{"/repos/**", "/repos/./x", false},
		{"/repos/**", "/repos//x", false},
		{"/repos/**", "/repos/x/..", false},
		{"/**", "//", false},
		{"/repos/..x", "/repos/..x", true}, // only whole "." and ".." segments are special
		// percent signs are literal: the gateway decoded the path already
		{"/a%2Fb", "/a%2Fb", true},
		{"/a%2Fb", "/a/b", false},
		{"/a/b", "/a%2Fb", false},
		{"/files/*", "/files/a%2Fb", true},
		{"/files/*", "/files/%2e%2e", true}, // literal text, not a dot segment
		// very long paths
		{"/repos/**", long, true},
		{"/repos/**/y", long, false},
		{"/repos/**/x", long, true},
		{"/**/x/**/x/**/y", long, false},
	}
	for _, tt := range tests {
		r, err := CompileRule([]string{"GET"}, []string{tt.pattern})
		if err != nil {
			t.Fatalf("%q: %v", tt.pattern, err)
		}
		if got := r.Match("GET", tt.path); got != tt.want {
			p := tt.path
			if len(p) > 40 {
				p = p[:40] + "…"
			}
			t.Errorf("%q on %q = %v, want %v", tt.pattern, p, got, tt.want)
		}
		if got := refMatch(tt.pattern, tt.path); got != tt.want {
			t.Errorf("reference: %q on %q = %v, want %v", tt.pattern, tt.path[:min(len(tt.path), 40)], got, tt.want)
		}
	}
}

func TestAllow(t *testing.T) {
	r1, _ := CompileRule([]string{"GET", "HEAD"}, []string{"/repos/acme/app/**"})
	r2, _ := CompileRule([]string{"POST"}, []string{"/repos/acme/app/deployments", "/repos/acme/app/statuses/*"})
	r3, _ := CompileRule([]string{"*"}, []string{"/scratch/**"})
	r4, err := CompileRule([]string{"*", "TRACE"}, []string{"/echo"})
	if err != nil {
		t.Fatalf(`CompileRule(["*", "TRACE"]): %v`, err)
	}
	r5, _ := CompileRule([]string{"GET"}, []string{"/v2/org/app/**"})
	r6, _ := CompileRule([]string{"HEAD", "PUT"}, []string{"/heads/**"})
	g := &Grant{Rules: []Rule{r1, r2, r3, r4, r5, r6}}
	tests := []struct {
		method, path string
		rule         int
		ok           bool
	}{
		{"GET", "/repos/acme/app/pulls", 0, true},
		{"HEAD", "/repos/acme/app", 0, true},
		{"get", "/repos/acme/app", -1, false}, // methods are exact
		{"POST", "/repos/acme/app/pulls", -1, false},
		{"POST", "/repos/acme/app/deployments", 1, true},
		{"POST", "/repos/acme/app/statuses/abc", 1, true},
		{"POST", "/repos/acme/app/statuses/abc/x", -1, false},
		{"DELETE", "/repos/acme/app/deployments", -1, false},
		{"DELETE", "/scratch/x", 2, true},
		{"GET", "/other", -1, false},
		// "*" is the ordinary methods and WebDAV's; the rest only by name:
		// TRACE echoes the request, injected credential and all, and
		// CONNECT asks for a tunnel.
		{"HEAD", "/scratch", 2, true},
		{"OPTIONS", "/scratch", 2, true},
		{"PATCH", "/scratch/x", 2, true},
		{"PUT", "/scratch/x", 2, true},
		{"PROPFIND", "/scratch", 2, true},
		{"MKCOL", "/scratch/x", 2, true},
		{"UNLOCK", "/scratch/x", 2, true},
		{"TRACE", "/scratch", -1, false},
		{"CONNECT", "/scratch", -1, false},
		{"TRACK", "/scratch", -1, false},
		{"BREW", "/scratch", -1, false},
		{"", "/scratch", -1, false},
		{"TRACE", "/echo", 3, true},
		{"GET", "/echo", 3, true},
		{"CONNECT", "/echo", -1, false},
		// GET allows HEAD (RFC 9110 9.3.2: GET without the content), not
		// the other way round; no other method does.
		{"HEAD", "/v2/org/app/manifests/v1", 4, true},
		{"GET", "/v2/org/app/manifests/v1", 4, true},
		{"head", "/v2/org/app/manifests/v1", -1, false},
		{"HEAD", "/v2/org/other/manifests/v1", -1, false},
		{"HEAD", "/repos/acme/app/deployments", 0, true},
		{"HEAD", "/repos/acme/app/statuses/abc", 0, true},
		{"HEAD", "/heads/x", 5, true},
		{"GET", "/heads/x", -1, false},
	}
	for _, tt := range tests {
		rule, ok := g.Allow(tt.method, tt.path)
		if rule != tt.rule || ok != tt.ok {
			t.Errorf("Allow(%q, %q) = %d, %v; want %d, %v", tt.method, tt.path, rule, ok, tt.rule, tt.ok)
		}
	}
	// a Rule not built by CompileRule allows nothing
	lit := &Grant{Rules: []Rule{{Methods: []string{"GET"}, Paths: []string{"/**"}}}}
	if _, ok := lit.Allow("GET", "/x"); ok {
		t.Error("uncompiled rule allowed a call")
	}
	if _, ok := (&Grant{}).Allow("GET", "/"); ok {
		t.Error("a grant with no rules allowed a call")
	}
	for _, bad := range [][2][]string{{nil, {"/x"}}, {{"GET"}, nil}, {{"get"}, {"/x"}}, {{"GET"}, {"x"}}, {{"*", "GET"}, {"/x"}}, {{"TRACE", "*", "HEAD"}, {"/x"}}} {
		if _, err := CompileRule(bad[0], bad[1]); err == nil {
			t.Errorf("CompileRule(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestWhoMatch(t *testing.T) {
	w := Who{Issuer: "github", Claims: map[string][]string{
		"repository_id": {"123456789"},
		"ref":           {"refs/heads/main", "refs/heads/release"},
	}}
	tests := []struct {
		name   string
		issuer string
		claims map[string]string
		want   bool
	}{
		{"exact", "github", map[string]string{"repository_id": "123456789", "ref": "refs/heads/main", "extra": "x"}, true},
		{"second of list", "github", map[string]string{"repository_id": "123456789", "ref": "refs/heads/release"}, true},
		{"other issuer", "gitlab", map[string]string{"repository_id": "123456789", "ref": "refs/heads/main"}, false},
		{"missing claim", "github", map[string]string{"ref": "refs/heads/main"}, false},
		{"near value: prefix", "github", map[string]string{"repository_id": "12345678", "ref": "refs/heads/main"}, false},
		{"near value: suffix", "github", map[string]string{"repository_id": "1234567890", "ref": "refs/heads/main"}, false},
		{"near value: case", "github", map[string]string{"repository_id": "123456789", "ref": "refs/heads/Main"}, false},
		{"near value: space", "github", map[string]string{"repository_id": "123456789 ", "ref": "refs/heads/main"}, false},
		{"near value: branch prefix", "github", map[string]string{"repository_id": "123456789", "ref": "refs/heads/main-evil"}, false},
		{"empty value", "github", map[string]string{"repository_id": "", "ref": "refs/heads/main"}, false},
		{"nil claims", "github", nil, false},
	}
	for _, tt := range tests {
		if got := w.Match(tt.issuer, tt.claims); got != tt.want {
			t.Errorf("%s: Match = %v, want %v", tt.name, got, tt.want)
		}
	}
	any := Who{Issuer: "ci"}
	if !any.Match("ci", nil) || any.Match("", nil) {
		t.Error("an entry without claims matches any token of its issuer only")
	}
}

func TestSourceAllowed(t *testing.T) {
	w := Who{SourceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}
	tests := []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true},
		{"11.0.0.1", false},
		{"::ffff:10.1.2.3", true}, // IPv4-mapped counts as IPv4
		{"2001:db8::1", true},
		{"2001:db8::1%eth0", true},
		{"2001:db9::1", false},
		{"", false}, // the zero Addr
	}
	for _, tt := range tests {
		var a netip.Addr
		if tt.addr != "" {
			a = netip.MustParseAddr(tt.addr)
		}
		if got := w.SourceAllowed(a); got != tt.want {
			t.Errorf("SourceAllowed(%q) = %v", tt.addr, got)
		}
	}
	if !(&Who{}).SourceAllowed(netip.Addr{}) {
		t.Error("no source_cidrs must allow any address")
	}
}

func TestAdmit(t *testing.T) {
	src := strings.Replace(base, "          project: app\n", "          project: app\n        source_cidrs: [10.0.0.0/8]\n      - issuer: ci\n        claims: {project: web}\n", 1)
	p := mustParse(t, one("p.yaml", src))
	in := netip.MustParseAddr("10.0.0.1")
	out := netip.MustParseAddr("192.0.2.1")
	tests := []struct {
		name   string
		issuer string
		claims map[string]string
		addr   netip.Addr
		grant  string
		reason Reason // Allowed: admitted
	}{
		{"match", "ci", map[string]string{"project": "app"}, in, "deploy", Allowed},
		{"second entry, any address", "ci", map[string]string{"project": "web"}, out, "deploy", Allowed},
		{"source", "ci", map[string]string{"project": "app"}, out, "deploy", SourceNotAllowed},
		{"claims", "ci", map[string]string{"project": "other"}, in, "deploy", NoWhoMatches},
		{"claim missing", "ci", map[string]string{}, in, "deploy", NoWhoMatches},
		{"issuer", "other", map[string]string{"project": "app"}, in, "deploy", NoWhoMatches},
		{"grant", "ci", map[string]string{"project": "app"}, in, "nope", UnknownGrant},
	}
	for _, tt := range tests {
		no := p.Admit(Identity{Issuer: tt.issuer, Claims: tt.claims, Source: tt.addr}, tt.grant)
		got := Allowed
		if no != nil {
			got = no.Reason
		}
		if got != tt.reason {
			t.Errorf("%s: Admit = %v; want %v", tt.name, no, tt.reason)
		}
	}
	if is := p.IssuersByURL("https://ci.example.com"); len(is) != 1 || is[0].Name != "ci" {
		t.Errorf("IssuersByURL = %v", is)
	}
}

// refMatch is a plain reference for path matching: split both, match with
// a table over (pattern position, path position).
func refMatch(pattern, path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	path = strings.TrimSuffix(path, "/")
	var ps []string
	if path != "" {
		ps = strings.Split(path[1:], "/")
	}
	for _, s := range ps {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	var pt []string
	if pattern != "/" {
		pt = strings.Split(pattern[1:], "/")
	}
	// m[i][j]: pt[i:] matches ps[j:]
	m := make([][]bool, len(pt)+1)
	for i := range m {
		m[i] = make([]bool, len(ps)+1)
	}
	m[len(pt)][len(ps)] = true
	for i := len(pt) - 1; i >= 0; i-- {
		for j := len(ps); j >= 0; j-- {
			switch pt[i] {
			case "**":
				m[i][j] = m[i+1][j] || (j < len(ps) && m[i][j+1])
			case "*":
				m[i][j] = j < len(ps) && ps[j] != "" && m[i+1][j+1]
			default:
				m[i][j] = j < len(ps) && ps[j] == pt[i] && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}

func BenchmarkAllow(b *testing.B) {
	files, err := ReadPaths("testdata/spec.yaml")
	if err != nil {
		b.Fatal(err)
	}
	p, err := Parse(files, nil)
	if err != nil {
		b.Fatal(err)
	}
	g := p.Grants["deploy-prod"]
	many := &Grant{}
	for i := 0; i < 20; i++ {
		r, _ := CompileRule([]string{"GET", "POST"}, []string{"/orgs/acme/teams/t" + string(rune('a'+i)) + "/**", "/repos/*/app" + string(rune('a'+i)) + "/**/hooks/*"})
		many.Rules = append(many.Rules, r)
	}
	cases := []struct {
		name, method, path string
		g                  *Grant
	}{
		{"spec/literal-hit", "POST", "/repos/acme/app/deployments", g},
		{"spec/doublestar-hit", "GET", "/repos/acme/app/pulls/17/comments", g},
		{"spec/miss", "DELETE", "/repos/acme/app/deployments", g},
		{"spec/prefix-miss", "GET", "/repos/other/app/pulls", g},
		{"20rules/last-hit", "GET", "/repos/acme/appt/a/b/c/hooks/9", many},
		{"20rules/miss", "GET", "/repos/acme/zzz/a/b/c/d/e/f", many},
		{"long-path", "GET", "/repos/acme/app" + strings.Repeat("/seg", 200), g},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.g.Allow(c.method, c.path)
			}
		})
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	p := mustParse(t, one("p.yaml", base))
	g := p.Grants["deploy"]
	n := testing.AllocsPerRun(100, func() {
		g.Allow("GET", "/repos/acme/app/pulls/1")
		g.Allow("POST", "/nope")
	})
	if n != 0 {
		t.Errorf("Allow allocates %v times per call", n)
	}
}
