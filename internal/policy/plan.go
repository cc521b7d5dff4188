package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Change is one difference between two policies.
type Change struct {
	Kind    string // "add", "remove" or "change"
	Section string // "issuers", "upstreams" or "grants"
	Name    string
	Detail  string // for a change: what differs ("ttl: 10m → 15m; …"); for an add: a summary
}

// String renders "+ grants.deploy (…)", "- issuers.old", "~ grants.deploy: ttl: 10m → 15m".
func (c Change) String() string {
	id := c.Section + "." + c.Name
	switch c.Kind {
	case "add":
		if c.Detail != "" {
			return "+ " + id + " (" + c.Detail + ")"
		}
		return "+ " + id
	case "remove":
		return "- " + id
	default:
		return "~ " + id + ": " + c.Detail
	}
}

// field is one setting of an entry, flattened: "ttl" = "10m",
// "who[0].claims.ref" = `["refs/heads/main"]`.
type field struct{ key, val string }

var sections = []string{"issuers", "upstreams", "grants"}

// entriesOf flattens a section of a policy (nil allowed).
func entriesOf(p *Policy, section string) map[string][]field {
	out := map[string][]field{}
	if p == nil {
		return out
	}
	switch section {
	case "issuers":
		for n, is := range p.Issuers {
			out[n] = []field{
				{"url", is.URL},
				{"audience", is.Audience},
				{"jwks_url", is.JWKSURL},
				{"algorithms", set(is.Algorithms)},
				{"preset", is.Preset},
			}
			if is.AllowMultipleAudiences {
				// Only when set, so that policies without it keep their hash.
				out[n] = append(out[n], field{"allow_multiple_audiences", "true"})
			}
		}
	case "upstreams":
		for n, up := range p.Upstreams {
			out[n] = []field{
				{"url", up.URL},
				{"credential.secret", up.Credential.Secret},
				{"credential.header", up.Credential.Header},
				{"credential.prefix", strconv.Quote(up.Credential.Prefix)},
				{"ca_file", up.CAFile},
				{"timeout", optDuration(up.Timeout)},
			}
			if up.IgnoreMethodOverride {
				// Only when set: policies that leave it out keep their hash.
				out[n] = append(out[n], field{"method_override", "ignore"})
			}
			if up.ForwardRanges {
				out[n] = append(out[n], field{"ranges", "forward"})
			}
			if a := up.Credential.GitHubApp; a != nil {
				out[n] = append(out[n], field{"credential.github_app.app_id", a.AppID},
					field{"credential.github_app.private_key_secret", a.PrivateKeySecret},
					field{"credential.github_app.installation_id", a.InstallationID},
					field{"credential.github_app.owner", a.Owner},
					field{"credential.github_app.api_url", a.APIURL})
			}
			if pg := up.Postgres; pg != nil {
				out[n] = append(out[n], field{"postgres.admin_dsn_secret", pg.AdminDSNSecret},
					field{"postgres.creation", strconv.Quote(pg.Creation)},
					field{"postgres.revocation", strconv.Quote(pg.Revocation)})
			}
		}
	case "grants":
		for n, g := range p.Grants {
			f := []field{
				{"upstream", g.Upstream},
				{"ttl", fmtDuration(g.TTL)},
				{"max_ttl", fmtDuration(g.MaxTTL)},
				{"bind_source_ip", strconv.FormatBool(g.BindSourceIP)},
				{"max_uses", strconv.Itoa(g.MaxUses)},
			}
			if g.Deliver == DeliverJob {
				// Only when not the default: older policies keep their hash.
				f = append(f, field{"deliver", g.Deliver})
			}
			if g.GitHub != nil {
				f = append(f, field{"github.repositories", set(g.GitHub.Repositories)})
				for _, k := range sortedKeys(g.GitHub.Permissions) {
					f = append(f, field{"github.permissions." + k, g.GitHub.Permissions[k]})
				}
			}
			for i, r := range g.Rules {
				p := fmt.Sprintf("allow[%d]", i)
				f = append(f, field{p + ".methods", set(r.Methods)}, field{p + ".paths", set(r.Paths)})
			}
			for i, w := range g.Who {
				p := fmt.Sprintf("who[%d]", i)
				f = append(f, field{p + ".issuer", w.Issuer})
				for _, k := range sortedKeys(w.Claims) {
					f = append(f, field{p + ".claims." + k, set(w.Claims[k])})
				}
				cidrs := make([]string, len(w.SourceCIDRs))
				for j, c := range w.SourceCIDRs {
					cidrs[j] = c.String()
				}
				f = append(f, field{p + ".source_cidrs", set(cidrs)}, field{p + ".broad", strconv.FormatBool(w.Broad)})
			}
			out[n] = f
		}
	}
	return out
}

// set renders a list whose order does not matter.
func set(vals []string) string {
	s := slices.Clone(vals)
	sort.Strings(s)
	s = slices.Compact(s)
	if s == nil {
		s = []string{}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func optDuration(v time.Duration) string {
	if v == 0 {
		return ""
	}
	return fmtDuration(v)
}

// canonical is the policy's meaning as bytes: every section, entry and
// field in order, JSON-encoded so no value can be mistaken for a separator.
func canonical(p *Policy) []byte {
	var all [][4]string
	for _, sec := range sections {
		ents := entriesOf(p, sec)
		for _, name := range sortedKeys(ents) {
			for _, f := range ents[name] {
				all = append(all, [4]string{sec, name, f.key, f.val})
			}
		}
	}
	b, _ := json.Marshal(all)
	return b
}

// Plan lists what applying new over old would change, by section (issuers,
// upstreams, grants) then name. old may be nil (everything is added).
func Plan(old, new *Policy) []Change {
	var out []Change
	for _, sec := range sections {
		o, n := entriesOf(old, sec), entriesOf(new, sec)
		names := sortedKeys(o)
		for k := range n {
			if _, ok := o[k]; !ok {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			of, inOld := o[name]
			nf, inNew := n[name]
			switch {
			case !inOld:
				out = append(out, Change{Kind: "add", Section: sec, Name: name, Detail: summary(sec, nf)})
			case !inNew:
				out = append(out, Change{Kind: "remove", Section: sec, Name: name})
			default:
				if d := diff(of, nf); d != "" {
					out = append(out, Change{Kind: "change", Section: sec, Name: name, Detail: d})
				}
			}
		}
	}
	return out
}

func summary(sec string, f []field) string {
	get := func(k string) string {
		for _, x := range f {
			if x.key == k {
				return x.val
			}
		}
		return ""
	}
	switch sec {
	case "issuers", "upstreams":
		return Shown(get("url"))
	}
	rules, who := 0, 0
	for _, x := range f {
		if strings.HasSuffix(x.key, ".methods") {
			rules++
		}
		if strings.HasSuffix(x.key, ".issuer") {
			who++
		}
	}
	return fmt.Sprintf("upstream %s, ttl %s, %d allow rules, %d who entries", Shown(get("upstream")), get("ttl"), rules, who)
}

func diff(old, new []field) string {
	om := map[string]string{}
	for _, f := range old {
		om[f.key] = f.val
	}
	nm := map[string]string{}
	for _, f := range new {
		nm[f.key] = f.val
	}
	var parts []string
	for _, f := range new {
		ov, ok := om[f.key]
		switch {
		case !ok:
			parts = append(parts, fmt.Sprintf("%s: + %s", Shown(f.key), showField(f.key, f.val)))
		case ov != f.val:
			parts = append(parts, fmt.Sprintf("%s: %s → %s", Shown(f.key), showField(f.key, ov), showField(f.key, f.val)))
		}
	}
	for _, f := range old {
		if _, ok := nm[f.key]; !ok {
			parts = append(parts, fmt.Sprintf("%s: - %s", Shown(f.key), showField(f.key, f.val)))
		}
	}
	return strings.Join(parts, "; ")
}

// showField is show, and a rule's methods that allow HEAD by listing GET
// (Rule.ImpliesHead) say so: the field keeps the methods as written, so
// that a policy's hash does not change with the release that reads it.
func showField(key, v string) string {
	var methods []string
	if strings.HasSuffix(key, ".methods") && json.Unmarshal([]byte(v), &methods) == nil && impliesHead(methods) {
		return show(v) + " (and HEAD)"
	}
	return show(v)
}

// show is a value as a plan line prints it (shown: the policy's text).
func show(v string) string {
	if v == "" {
		return "(none)"
	}
	return Shown(v)
}
