package policy

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	spec, err := os.ReadFile("testdata/spec.yaml")
	if err != nil {
		f.Fatal(err)
	}
	// a second file, when not empty, is read after the first
	f.Add(string(spec), "")
	f.Add(base, "")
	parts := strings.SplitAfter(base, "upstreams:\n")
	f.Add(strings.TrimSuffix(parts[0], "upstreams:\n"), "upstreams:\n"+parts[1])
	f.Add("\ufeff"+strings.TrimSuffix(parts[0], "upstreams:\n"), "\ufeffupstreams:\n"+parts[1])
	f.Add(strings.Replace(base, "ttl: 10m", "ttl: 10x\n    max_ttl: [a]", 1), "grants: {deploy: {}}")
	f.Add("a: &a [*a]\n", "")
	f.Add("grants: {g: {who: [&w {issuer: ci}, *w], allow: [{methods: \"*\", paths: /**}]}}\n", "")
	f.Add("issuers:\n  x: {url: \"http://[::1]:1\", audience: 1, algorithms: [none, HS256]}\n---\ngrants: 5\n", "---\n")
	f.Add("%YAML 1.2\n---\n!!map {? !!str issuers : !!null }\n", "")
	f.Add("\t- x\n", "a: |\n  x")
	f.Add(minted, "")
	f.Add(strings.Replace(minted, "contents: write", "contents: admin, bogus: read", 1), "")
	f.Fuzz(func(t *testing.T, a, b string) {
		files := []File{{Name: "f.yaml", Data: []byte(a)}}
		if b != "" {
			files = append(files, File{Name: "g.yaml", Data: []byte(b)})
		}
		p, err := Parse(files, func(s string) bool { return s != "missing" })
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
			}
			for _, e := range es {
				if (e.File != "f.yaml" && e.File != "g.yaml") || e.Line < 1 || e.Msg == "" {
					t.Fatalf("error without a position or reason: %#v", e)
				}
			}
			if p != nil {
				t.Fatal("policy and error")
			}
			return
		}
		if len(p.Hash) != 64 {
			t.Fatalf("hash %q", p.Hash)
		}
		// everything parsed is usable: matchers, plan, source read back
		for _, g := range p.Grants {
			up := p.Upstreams[g.Upstream]
			if up == nil || (len(g.Rules) == 0) != (up.Kind() == KindPostgres) || len(g.Who) == 0 || g.TTL <= 0 || g.TTL > g.MaxTTL {
				t.Fatalf("invalid grant accepted: %+v", g)
			}
			if (g.Deliver != DeliverGateway && g.Deliver != DeliverJob) || (up.Kind() == KindGitHubApp) != (g.GitHub != nil) {
				t.Fatalf("invalid grant accepted: %+v", g)
			}
			g.Allow("GET", "/x/y")
		}
		back, err := Parse([]File{{Name: "back", Data: p.Source}}, nil)
		if err != nil || back.Hash != p.Hash {
			t.Fatalf("source does not read back: %v\n%s", err, p.Source)
		}
		if len(Plan(p, back)) != 0 {
			t.Fatal("plan between equal policies")
		}
		Plan(nil, p)
	})
}

func FuzzAllow(f *testing.F) {
	for _, s := range [][2]string{
		{"/repos/acme/app/**", "/repos/acme/app"},
		{"/repos/*/app", "/repos/acme/app/"},
		{"/a/**/b/**/c", "/a/b/b/c/c"},
		{"/**/*", "/"},
		{"/", "/"},
		{"/a%2Fb", "/a%2Fb"},
		{"/a/**", "/a//b"},
		{"/a/*", "/a/../b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		r, err := CompileRule([]string{"GET"}, []string{pattern})
		if err != nil {
			return
		}
		got := r.Match("GET", path)
		if want := refMatch(pattern, path); got != want {
			t.Fatalf("%q on %q = %v, reference says %v", pattern, path, got, want)
		}
		if r.Match("POST", path) {
			t.Fatal("method not checked")
		}
		g := &Grant{Rules: []Rule{r}}
		if _, ok := g.Allow("GET", path); ok != got {
			t.Fatal("Grant.Allow differs from Rule.Match")
		}
	})
}
