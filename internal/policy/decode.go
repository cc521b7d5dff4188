package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/idna"

	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/yamlerr"
)

// Bounds on values (see the package comment).
const (
	maxTTL       = 24 * time.Hour
	maxMaxTTL    = 7 * 24 * time.Hour
	maxTimeout   = time.Hour
	maxMaxUses   = 1_000_000_000
	maxNameLen   = 64
	maxMethodLen = 32
	maxListLen   = 10_000 // items in one list of strings
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

	errBudget = errors.New("node budget exhausted")

	allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

	// pinClaims name a repository or project, per preset; ids first (preferred).
	pinClaims = map[string][]string{
		"github": {"repository_id", "repository_owner_id", "repository", "repository_owner"},
		"gitlab": {"project_id", "namespace_id", "project_path", "namespace_path"},
	}
	idPinClaims = map[string][]string{
		"github": {"repository_id", "repository_owner_id"},
		"gitlab": {"project_id", "namespace_id"},
	}

	// credential headers the gateway must never set from policy
	forbiddenHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
		"Upgrade", "Te", "Trailer", "Proxy-Connection", "Proxy-Authorization", "Content-Type", "Forwarded", "X-Forwarded-For"}
)

type decoder struct {
	file   string
	el     *errList
	budget int
	last   *yaml.Node // the node last visited, where a spent budget is reported
	p      *Policy
}

// kv is one key and its (unresolved) value in a mapping.
type kv struct{ key, val *yaml.Node }

func decodeFile(f File, p *Policy, el *errList) {
	d := &decoder{file: f.Name, el: el, budget: maxNodes, p: p}
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	for {
		var doc yaml.Node
		err := safeDecode(dec, &doc)
		if err == io.EOF {
			return
		}
		if err != nil {
			line, msg := yamlerr.Syntax(err, f.Data)
			if strings.Contains(msg, "tab character") {
				line = tabLine(f.Data, line)
			}
			el.add(pos{file: f.Name, line: line}, "", "bad YAML: %s", msg)
			return
		}
		if !d.document(&doc) {
			return
		}
	}
}

// tabLine finds the first line from line on that is indented with a tab:
// the YAML parser reports the line where the enclosing block started.
func tabLine(data []byte, line int) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		if i+1 >= line && len(bytes.TrimLeft(l, " ")) > 0 && bytes.TrimLeft(l, " ")[0] == '\t' {
			return i + 1
		}
	}
	return line
}

// safeDecode turns a panic of the YAML parser into an error: the input is
// from outside.
func safeDecode(dec *yaml.Decoder, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parser failed: %v", r)
		}
	}()
	return dec.Decode(doc)
}

func (d *decoder) document(doc *yaml.Node) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if r != errBudget {
				panic(r)
			}
			d.el.add(d.at(d.last), "", "too many YAML nodes: more than %d, counting each use of an alias", maxNodes)
			ok = false
		}
	}()
	root := doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return true
		}
		root = doc.Content[0]
	}
	root = d.node(root)
	if isNull(root) {
		return true
	}
	f := d.fields(root, "", "issuers", "upstreams", "grants")
	if f == nil {
		return true
	}
	if s, ok := f["issuers"]; ok {
		for _, e := range d.entries(s.val, "issuers") {
			d.issuer(e)
		}
	}
	if s, ok := f["upstreams"]; ok {
		for _, e := range d.entries(s.val, "upstreams") {
			d.upstream(e)
		}
	}
	if s, ok := f["grants"]; ok {
		for _, e := range d.entries(s.val, "grants") {
			d.grant(e)
		}
	}
	return true
}

// ---- generic helpers ----

func (d *decoder) at(n *yaml.Node) pos {
	if n == nil {
		return pos{file: d.file, line: 1}
	}
	return pos{file: d.file, line: n.Line, col: n.Column}
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) {
	d.el.add(d.at(n), path, format, args...)
}

func (d *decoder) warnf(n *yaml.Node, path, format string, args ...any) {
	d.el.warn(d.at(n), path, format, args...)
}

// node follows aliases and spends the node budget.
func (d *decoder) node(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		d.spend()
		n = n.Alias
	}
	d.spend()
	d.last = n
	return n
}

func (d *decoder) spend() {
	d.budget--
	if d.budget < 0 {
		panic(errBudget)
	}
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch {
	case n == nil || isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// mapKeys reads a mapping's keys, refusing non-string keys, merge keys and
// duplicates.
func (d *decoder) mapKeys(n *yaml.Node, path string) []kv {
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "expected a mapping, got %s", kindName(n))
		return nil
	}
	seen := map[string]bool{}
	var out []kv
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := d.node(n.Content[i])
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.errf(k, path, "keys must be strings")
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errf(k, path, "merge keys (<<) are not supported")
			continue
		}
		if seen[k.Value] {
			d.errf(k, join(path, k.Value), "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		out = append(out, kv{k, n.Content[i+1]})
	}
	return out
}

// fields reads a mapping with a fixed set of keys. It returns nil when n is
// not a mapping (the error is reported).
func (d *decoder) fields(n *yaml.Node, path string, known ...string) map[string]kv {
	keys := d.mapKeys(n, path)
	if keys == nil && n.Kind != yaml.MappingNode {
		return nil
	}
	out := make(map[string]kv, len(keys))
	for _, e := range keys {
		if !slices.Contains(known, e.key.Value) {
			msg := fmt.Sprintf("unknown key %q", e.key.Value)
			if s := closest(e.key.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			d.errf(e.key, join(path, e.key.Value), "%s", msg)
			continue
		}
		out[e.key.Value] = e
	}
	return out
}

// entries reads a section of named entries (issuers, upstreams, grants).
func (d *decoder) entries(n *yaml.Node, path string) []kv {
	n = d.node(n)
	if isNull(n) {
		return nil
	}
	var out []kv
	for _, e := range d.mapKeys(n, path) {
		name := e.key.Value
		if !nameRE.MatchString(name) || len(name) > maxNameLen {
			d.errf(e.key, join(path, name), "bad name %q: letters, digits, '.', '_' and '-', starting with a letter or digit, at most %d", name, maxNameLen)
			continue
		}
		out = append(out, e)
	}
	return out
}

// body resolves an entry's value, which must be a mapping of known keys.
func (d *decoder) body(e kv, path string, known ...string) map[string]kv {
	v := d.node(e.val)
	if isNull(v) {
		d.errf(e.key, path, "empty: expected a mapping with %s", strings.Join(known, ", "))
		return nil
	}
	return d.fields(v, path, known...)
}

func (d *decoder) missing(n *yaml.Node, path, key string) {
	d.errf(n, join(path, key), "missing")
}

// scalarText returns a scalar's text (strings, numbers, booleans and
// timestamps as written), or why it is not one. n is resolved.
func scalarText(n *yaml.Node) (string, string) {
	if n.Kind != yaml.ScalarNode {
		return "", "expected a string, got " + kindName(n)
	}
	switch t := n.ShortTag(); t {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return n.Value, ""
	case "!!null":
		return "", "missing value"
	default:
		return "", "unsupported tag " + t
	}
}

// scalar reports what scalarText finds wrong.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	n = d.node(n)
	s, bad := scalarText(n)
	if bad != "" {
		d.errf(n, path, "%s", bad)
		return "", false
	}
	return s, true
}

// str is a non-empty scalar.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	s, ok := d.scalar(n, path)
	if ok && s == "" {
		d.errf(n, path, "empty")
		return "", false
	}
	return s, ok
}

// oneOf is a string that must be one of two choices: "ranges must be
// strip or forward, not ...", the field named by path's last part.
func (d *decoder) oneOf(n *yaml.Node, path, a, b string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if s != a && s != b {
		d.errf(n, path, "%s must be %s or %s, not %q", path[strings.LastIndexByte(path, '.')+1:], a, b, s)
		return "", false
	}
	return s, true
}

// item is one element of a list of strings, with where it was written.
type item struct {
	val  string
	node *yaml.Node
	list string // the list's path
	i    int    // index, -1 when the list was written as one scalar
}

// path is "x.y[2]", or "x.y" for a list written as one scalar.
func (it item) path() string {
	if it.i < 0 {
		return it.list
	}
	return index(it.list, it.i)
}

// list reads a list of non-empty scalars; one scalar is a list of one.
func (d *decoder) list(n *yaml.Node, path string) (items []item, ok bool) {
	n = d.node(n)
	switch {
	case isNull(n):
		d.errf(n, path, "missing value")
		return nil, false
	case n.Kind == yaml.ScalarNode:
		s, ok := d.str(n, path)
		if !ok {
			return nil, false
		}
		return []item{{s, n, path, -1}}, true
	case n.Kind != yaml.SequenceNode:
		d.errf(n, path, "expected a string or a list of strings, got %s", kindName(n))
		return nil, false
	case len(n.Content) == 0:
		d.errf(n, path, "empty list")
		return nil, false
	}
	if len(n.Content) > maxListLen {
		d.errf(n, path, "more than %d items", maxListLen)
		return nil, false
	}
	ok = true
	seen := make(map[string]bool, len(n.Content))
	for i, c := range n.Content {
		c = d.node(c)
		s, bad := scalarText(c)
		if bad == "" && s == "" {
			bad = "empty"
		}
		if bad != "" {
			d.errf(c, index(path, i), "%s", bad)
			ok = false
			continue
		}
		if !seen[s] { // a repeated value means nothing more
			seen[s] = true
			items = append(items, item{s, c, path, i})
		}
	}
	return items, ok
}

func values(items []item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.val
	}
	return out
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	n = d.node(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	d.errf(n, path, "expected true or false, got %s", kindName(n))
	return false, false
}

func (d *decoder) duration(n *yaml.Node, path string, max time.Duration) (time.Duration, bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		d.errf(n, path, "bad duration %q (write e.g. 90s, 10m, 1h30m)", s)
	case v <= 0:
		d.errf(n, path, "duration %q must be positive", s)
	case v > max:
		d.errf(n, path, "duration %q is more than %s", s, fmtDuration(max))
	default:
		return v, true
	}
	return 0, false
}

// ---- issuers ----

func (d *decoder) issuer(e kv) {
	name := e.key.Value
	path := join("issuers", name)
	prev, dup := d.p.Issuers[name]
	if dup {
		d.errf(e.key, path, "issuer %q is already defined at %s", name, prev.at)
	}
	f := d.body(e, path, "url", "audience", "jwks_url", "algorithms", "preset", "allow_multiple_audiences")
	if f == nil {
		return
	}
	is := &Issuer{Name: name, Algorithms: []string{"RS256"}, at: d.at(e.key)}
	if v, ok := f["url"]; !ok {
		d.missing(e.key, path, "url")
	} else if s, ok := d.str(v.val, path+".url"); ok {
		if err := checkIssuerURL(s, false); err != nil {
			d.errf(v.val, path+".url", "%v", err)
		} else {
			d.lookalike(v.val, path+".url", s)
			is.URL = s
			is.Preset, is.Shared = classifyIssuer(s)
		}
	}
	if v, ok := f["audience"]; !ok {
		d.missing(e.key, path, "audience")
	} else if s, ok := d.str(v.val, path+".audience"); ok {
		is.Audience = s
	}
	if v, ok := f["allow_multiple_audiences"]; ok {
		is.AllowMultipleAudiences, _ = d.boolean(v.val, path+".allow_multiple_audiences")
	}
	if v, ok := f["jwks_url"]; ok {
		if s, ok := d.str(v.val, path+".jwks_url"); ok {
			if err := checkIssuerURL(s, true); err != nil {
				d.errf(v.val, path+".jwks_url", "%v", err)
			} else {
				d.lookalike(v.val, path+".jwks_url", s)
				is.JWKSURL = s
				is.jwksAt = d.at(d.node(v.val))
			}
		}
	}
	// Keys over plain http are whatever listens on that loopback port:
	// once mayfly dev-issuer is stopped, any local user may.
	if is.JWKSURL != "" && strings.HasPrefix(is.JWKSURL, "http://") {
		d.warnf(f["jwks_url"].val, path+".jwks_url", httpKeysWarning)
	} else if is.JWKSURL == "" && strings.HasPrefix(is.URL, "http://") {
		d.warnf(f["url"].val, path+".url", httpKeysWarning)
	}
	if v, ok := f["algorithms"]; ok {
		p := path + ".algorithms"
		items, _ := d.list(v.val, p)
		is.Algorithms = nil
		for _, it := range items {
			a := it.val
			switch {
			case slices.Contains(allowedAlgorithms, a):
				if !slices.Contains(is.Algorithms, a) {
					is.Algorithms = append(is.Algorithms, a)
				}
			case strings.EqualFold(a, "none"):
				d.errf(it.node, it.path(), "algorithm %q is never accepted", a)
			case strings.HasPrefix(strings.ToUpper(a), "HS"):
				d.errf(it.node, it.path(), "symmetric algorithm %q is never accepted", a)
			default:
				d.errf(it.node, it.path(), "unknown algorithm %q (allowed: %s)", a, strings.Join(allowedAlgorithms, ", "))
			}
		}
	}
	if v, ok := f["preset"]; ok {
		p := path + ".preset"
		if s, ok := d.str(v.val, p); ok {
			switch {
			case s != "github" && s != "gitlab":
				d.errf(v.val, p, "unknown preset %q (github or gitlab)", s)
			case is.Preset != "" && is.Preset != s:
				d.errf(v.val, p, "preset %q contradicts the url, which is %s's", s, is.Preset)
			default:
				is.Preset = s
			}
		}
	}
	if !dup {
		d.p.Issuers[name] = is
	}
}

// httpKeysWarning is said of an issuer whose keys come over plain http.
const httpKeysWarning = "the issuer's keys come over plain http: whoever listens on that port of the server's host " +
	"(any local user, once mayfly dev-issuer is stopped) can sign ID tokens this policy trusts; for trying pipelines only, never in production"

// checkIssuerURL: https, or http on a loopback host; no user info or
// fragment; a query only for a JWKS url.
func checkIssuerURL(s string, queryOK bool) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("not an absolute URL: %q", shownURL(s))
	}
	switch {
	case strings.HasPrefix(s, "https://"):
	case strings.HasPrefix(s, "http://"):
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%q: http is allowed only on a loopback host (127.0.0.0/8, ::1, localhost); use https", shownURL(s))
		}
	default:
		return fmt.Errorf("%q must start with https://", shownURL(s))
	}
	if u.User != nil {
		return fmt.Errorf("%q must not contain user info", shownURL(s))
	}
	if u.Fragment != "" || strings.Contains(s, "#") || (!queryOK && (u.RawQuery != "" || u.ForceQuery)) {
		return fmt.Errorf("%q must not have a query or fragment", shownURL(s))
	}
	return nil
}

// lookalike warns of a url (already checked) whose host is not ASCII: it
// may be a look-alike of a known host ("tоken.actions.githubusercontent.com"
// with a Cyrillic "о"), which in a policy under review reads as that host
// while it trusts, or sends a credential to, whoever runs this one. The
// warning shows the ASCII (punycode) form the host resolves to.
func (d *decoder) lookalike(n *yaml.Node, path, s string) {
	u, err := url.Parse(s)
	if err != nil {
		return
	}
	h := u.Hostname()
	if !strings.ContainsFunc(h, func(r rune) bool { return r > 0x7f }) {
		return
	}
	form := "and has no valid ASCII form"
	if a, err := idna.Lookup.ToASCII(h); err == nil {
		form = "its ASCII form is " + a
	}
	d.warnf(n, path, "host %q is not ASCII (%s): it may be a look-alike of another host; write the ASCII form if this host is the one meant", h, form)
}

// shownURL is s as an error may quote it, with no user info: whichever
// check refuses s may come before the user-info check, policy check prints
// its error into a CI log and a reload logs it, and a token is often the
// user name alone ("https://TOKEN@host"). When s does not parse as having
// user info (unparsable, opaque as "user:pw@host", or a raw "/", "?" or
// "#" in the password), all up to its last "@" is hidden.
func shownURL(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	if u, err := url.Parse(s); err == nil && u.User != nil {
		u.User = url.User("xxxxx")
		return u.String()
	}
	start := 0
	if i := strings.Index(s[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	return s[:start] + "xxxxx" + s[at:]
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Zone() == "" && a.Unmap().IsLoopback()
}

// classifyIssuer recognises the shared issuers by url.
func classifyIssuer(s string) (preset string, shared bool) {
	u, err := url.Parse(s)
	if err != nil {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	root := u.Path == "" || u.Path == "/"
	switch host {
	case "token.actions.githubusercontent.com":
		return "github", root // with a path: a GitHub Enterprise's own issuer
	case "gitlab.com":
		return "gitlab", root
	}
	return "", false
}

// ---- upstreams ----

func (d *decoder) upstream(e kv) {
	name := e.key.Value
	path := join("upstreams", name)
	prev, dup := d.p.Upstreams[name]
	if dup {
		d.errf(e.key, path, "upstream %q is already defined at %s", name, prev.at)
	}
	f := d.body(e, path, "url", "credential", "postgres", "ca_file", "timeout", "method_override", "ranges")
	if f == nil {
		return
	}
	up := &Upstream{Name: name, at: d.at(e.key)}
	if v, ok := f["postgres"]; ok {
		d.postgres(v, path+".postgres", up)
		for _, k := range []string{"url", "credential", "ca_file", "timeout", "method_override", "ranges"} {
			if o, has := f[k]; has {
				d.errf(o.key, join(path, k), "a postgres upstream has no %s: jobs connect to the database with the role they get", k)
			}
		}
		if !dup {
			d.p.Upstreams[name] = up
		}
		return
	}
	if v, ok := f["url"]; !ok {
		d.missing(e.key, path, "url")
	} else if s, ok := d.str(v.val, path+".url"); ok {
		norm, plain, err := checkUpstreamURL(s)
		if err != nil {
			d.errf(v.val, path+".url", "%v", err)
		} else {
			d.lookalike(v.val, path+".url", s)
			up.URL = norm
			if plain {
				d.warnf(v.val, path+".url", "plain http to a non-loopback host: the credential crosses the network unencrypted")
			}
		}
	}
	if v, ok := f["credential"]; !ok {
		d.missing(e.key, path, "credential")
	} else {
		d.credential(v, path+".credential", up)
	}
	if v, ok := f["ca_file"]; ok {
		if s, ok := d.str(v.val, path+".ca_file"); ok {
			up.CAFile = s
		}
	}
	if v, ok := f["timeout"]; ok {
		up.Timeout, _ = d.duration(v.val, path+".timeout", maxTimeout)
	}
	if v, ok := f["method_override"]; ok {
		s, _ := d.oneOf(v.val, path+".method_override", "check", "ignore")
		up.IgnoreMethodOverride = s == "ignore"
	}
	if v, ok := f["ranges"]; ok {
		s, _ := d.oneOf(v.val, path+".ranges", "strip", "forward")
		up.ForwardRanges = s == "forward"
	}
	if !dup {
		d.p.Upstreams[name] = up
	}
}

// secretName reads the name of a stored secret and notes where it was
// written, for resolve to check that it exists.
func (d *decoder) secretName(n *yaml.Node, path string, up *Upstream) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !nameRE.MatchString(s) || len(s) > 128 {
		d.errf(n, path, "bad secret name %q", s)
		return "", false
	}
	up.secretRefs = append(up.secretRefs, secretRef{name: s, path: path, at: d.at(d.node(n))})
	return s, true
}

func (d *decoder) credential(e kv, path string, up *Upstream) {
	f := d.body(e, path, "secret", "header", "prefix", "github_app")
	if f == nil {
		return
	}
	up.Credential.Header = "Authorization"
	if v, ok := f["github_app"]; ok {
		for _, k := range []string{"secret", "header", "prefix"} {
			if o, has := f[k]; has {
				d.errf(o.key, join(path, k), "not with github_app: the gateway sends the installation token as \"Authorization: token …\"")
			}
		}
		d.githubApp(v, path+".github_app", up)
		up.Credential.Prefix = "token "
		return
	}
	if v, ok := f["secret"]; !ok {
		d.errf(e.key, join(path, "secret"), "missing: a stored secret's name, or github_app")
	} else if s, ok := d.secretName(v.val, path+".secret", up); ok {
		up.Credential.Secret = s
	}
	if v, ok := f["header"]; ok {
		if s, ok := d.str(v.val, path+".header"); ok {
			c := textproto.CanonicalMIMEHeaderKey(s)
			switch {
			case !isToken(s):
				d.errf(v.val, path+".header", "bad header name %q", s)
			case slices.Contains(forbiddenHeaders, c):
				d.errf(v.val, path+".header", "header %q cannot carry a credential", s)
			default:
				up.Credential.Header = c
			}
		}
	}
	if v, ok := f["prefix"]; ok {
		if s, ok := d.scalar(v.val, path+".prefix"); ok {
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
				d.errf(v.val, path+".prefix", "control characters are not allowed")
			} else {
				up.Credential.Prefix = s
			}
		}
	}
}

var (
	digitsRE      = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
	githubLoginRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	githubRepoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	placeholderRE = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)
)

// maxTemplate bounds a postgres creation or revocation template.
const maxTemplate = 16 << 10

func (d *decoder) githubApp(e kv, path string, up *Upstream) {
	f := d.body(e, path, "app_id", "private_key_secret", "installation_id", "owner", "api_url")
	if f == nil {
		return
	}
	app := &GitHubApp{}
	up.Credential.GitHubApp = app
	if v, ok := f["app_id"]; !ok {
		d.missing(e.key, path, "app_id")
	} else if s, ok := d.str(v.val, path+".app_id"); ok {
		if !digitsRE.MatchString(s) {
			d.errf(v.val, path+".app_id", "app_id %q is not a GitHub App id (digits)", s)
		} else {
			app.AppID = s
		}
	}
	if v, ok := f["private_key_secret"]; !ok {
		d.missing(e.key, path, "private_key_secret")
	} else if s, ok := d.secretName(v.val, path+".private_key_secret", up); ok {
		app.PrivateKeySecret = s
	}
	inst, hasInst := f["installation_id"]
	owner, hasOwner := f["owner"]
	switch {
	case hasInst && hasOwner:
		d.errf(owner.key, path+".owner", "give installation_id or owner, not both")
	case !hasInst && !hasOwner:
		d.errf(e.key, path+".installation_id", "missing: installation_id, or owner to look it up")
	case hasInst:
		if s, ok := d.str(inst.val, path+".installation_id"); ok {
			if !digitsRE.MatchString(s) {
				d.errf(inst.val, path+".installation_id", "installation_id %q is not an installation id (digits)", s)
			} else {
				app.InstallationID = s
			}
		}
	default:
		if s, ok := d.str(owner.val, path+".owner"); ok {
			if !githubLoginRE.MatchString(s) {
				d.errf(owner.val, path+".owner", "owner %q is not a GitHub account name", s)
			} else {
				app.Owner = s
			}
		}
	}
	if v, ok := f["api_url"]; ok {
		if s, ok := d.str(v.val, path+".api_url"); ok {
			norm, plain, err := checkUpstreamURL(s)
			switch {
			case err != nil:
				d.errf(v.val, path+".api_url", "%v", err)
			case plain:
				d.errf(v.val, path+".api_url", "plain http to a non-loopback host would send the App's tokens unencrypted")
			default:
				d.lookalike(v.val, path+".api_url", s)
				app.APIURL = norm
			}
		}
	}
}

func (d *decoder) postgres(e kv, path string, up *Upstream) {
	f := d.body(e, path, "admin_dsn_secret", "creation", "revocation")
	if f == nil {
		return
	}
	pg := &Postgres{}
	up.Postgres = pg
	if v, ok := f["admin_dsn_secret"]; !ok {
		d.missing(e.key, path, "admin_dsn_secret")
	} else if s, ok := d.secretName(v.val, path+".admin_dsn_secret", up); ok {
		pg.AdminDSNSecret = s
	}
	tmpl := func(key string, need ...string) string {
		v, ok := f[key]
		if !ok {
			d.missing(e.key, path, key)
			return ""
		}
		p := join(path, key)
		s, ok := d.str(v.val, p)
		if !ok {
			return ""
		}
		if len(s) > maxTemplate {
			d.errf(v.val, p, "longer than %d bytes", maxTemplate)
			return ""
		}
		used := map[string]bool{}
		for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
			switch m[1] {
			case "name", "password", "expires":
				used[m[1]] = true
			default:
				d.errf(v.val, p, "unknown placeholder {{%s}} (known: {{name}}, {{password}}, {{expires}})", m[1])
				return ""
			}
		}
		for _, n := range need {
			if !used[n] {
				d.errf(v.val, p, "must use {{%s}}", n)
				return ""
			}
		}
		// What the exchange would refuse to render (a placeholder in a
		// comment, an unterminated quote, {{password}} in revocation) is
		// refused now, before any role is made.
		if err := pgsql.CheckTemplate(s, key == "creation"); err != nil {
			d.errf(v.val, p, "%s", strings.TrimPrefix(err.Error(), pgsql.ErrTemplate.Error()+": "))
			return ""
		}
		return s
	}
	pg.Creation = tmpl("creation", "name", "password")
	pg.Revocation = tmpl("revocation", "name")
}

// checkUpstreamURL returns the url without a trailing "/" and whether it is
// plain http to a host that is not loopback.
func checkUpstreamURL(s string) (string, bool, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false, fmt.Errorf("%q is not an absolute http(s) URL", shownURL(s))
	}
	if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") {
		return "", false, fmt.Errorf("%q must start with https:// or http://", shownURL(s))
	}
	if u.User != nil {
		return "", false, fmt.Errorf("%q must not contain user info: put credentials in a secret", shownURL(s))
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return "", false, fmt.Errorf("%q must not have a query or fragment", shownURL(s))
	}
	if _, _, err := net.SplitHostPort(u.Host); err == nil && u.Port() == "" {
		return "", false, fmt.Errorf("%q has an empty port", shownURL(s))
	}
	return strings.TrimRight(s, "/"), u.Scheme == "http" && !isLoopback(u.Hostname()), nil
}

// isToken: an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// ---- grants ----

func (d *decoder) grant(e kv) {
	name := e.key.Value
	path := join("grants", name)
	prev, dup := d.p.Grants[name]
	if dup {
		d.errf(e.key, path, "grant %q is already defined at %s", name, prev.at)
	}
	f := d.body(e, path, "upstream", "ttl", "max_ttl", "allow", "bind_source_ip", "who", "max_uses", "github", "deliver")
	if f == nil {
		return
	}
	g := &Grant{Name: name, at: d.at(e.key)}
	if v, ok := f["upstream"]; !ok {
		d.missing(e.key, path, "upstream")
	} else if s, ok := d.str(v.val, path+".upstream"); ok {
		g.Upstream = s
		g.upstreamAt = d.at(d.node(v.val))
	}
	ttlOK, maxOK := false, false
	if v, ok := f["ttl"]; !ok {
		d.missing(e.key, path, "ttl")
	} else {
		g.TTL, ttlOK = d.duration(v.val, path+".ttl", maxTTL)
	}
	if v, ok := f["max_ttl"]; ok {
		g.MaxTTL, maxOK = d.duration(v.val, path+".max_ttl", maxMaxTTL)
		if ttlOK && maxOK && g.TTL > g.MaxTTL {
			d.errf(v.val, path+".max_ttl", "max_ttl %s is less than ttl %s", fmtDuration(g.MaxTTL), fmtDuration(g.TTL))
		}
	} else {
		g.MaxTTL = g.TTL
	}
	// A missing allow is judged in resolve: a grant on a postgres upstream
	// has none.
	if v, ok := f["allow"]; ok {
		g.hasAllow = true
		d.rules(v.val, path+".allow", g)
	}
	if v, ok := f["github"]; ok {
		g.githubAt = d.at(v.key)
		g.GitHub = d.githubScope(v, path+".github")
	}
	if v, ok := f["deliver"]; ok {
		g.deliverAt = d.at(v.key)
		if s, ok := d.oneOf(v.val, path+".deliver", DeliverGateway, DeliverJob); ok {
			g.Deliver = s
		}
	}
	if v, ok := f["bind_source_ip"]; ok {
		g.BindSourceIP, _ = d.boolean(v.val, path+".bind_source_ip")
	}
	if v, ok := f["who"]; !ok {
		d.errf(e.key, path+".who", "missing: a grant with no who entries can be given to nobody")
	} else {
		d.whos(v.val, path+".who", g)
	}
	if v, ok := f["max_uses"]; ok {
		p := path + ".max_uses"
		n := d.node(v.val)
		i, err := int64(0), error(nil)
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
			i, err = strconv.ParseInt(n.Value, 0, 64)
		} else {
			err = errors.New("not a whole number")
		}
		switch {
		case err != nil:
			d.errf(n, p, "expected a whole number, got %s", kindName(n))
		case i < 0 || i > maxMaxUses:
			d.errf(n, p, "%d is out of range (0 = unlimited, at most %d)", i, maxMaxUses)
		default:
			g.MaxUses = int(i)
		}
	}
	if !dup {
		d.p.Grants[name] = g
	}
}

// githubPermissions are the permissions an installation token may ask for
// and the levels each takes, as GitHub documents them for
// POST /app/installations/{id}/access_tokens.
var githubPermissions = map[string][]string{
	"actions": {"read", "write"}, "administration": {"read", "write"}, "checks": {"read", "write"},
	"codespaces": {"read", "write"}, "contents": {"read", "write"}, "dependabot_secrets": {"read", "write"},
	"deployments": {"read", "write"}, "environments": {"read", "write"}, "issues": {"read", "write"},
	"metadata": {"read", "write"}, "packages": {"read", "write"}, "pages": {"read", "write"},
	"pull_requests": {"read", "write"}, "repository_custom_properties": {"read", "write"},
	"repository_hooks": {"read", "write"}, "repository_projects": {"read", "write", "admin"},
	"secret_scanning_alerts": {"read", "write"}, "secrets": {"read", "write"}, "security_events": {"read", "write"},
	"single_file": {"read", "write"}, "statuses": {"read", "write"}, "vulnerability_alerts": {"read", "write"},
	"workflows": {"write"}, "members": {"read", "write"}, "organization_administration": {"read", "write"},
	"organization_custom_roles": {"read", "write"}, "organization_custom_org_roles": {"read", "write"},
	"organization_custom_properties": {"read", "write", "admin"}, "organization_copilot_seat_management": {"write"},
	"organization_announcement_banners": {"read", "write"}, "organization_events": {"read"},
	"organization_hooks": {"read", "write"}, "organization_personal_access_tokens": {"read", "write"},
	"organization_personal_access_token_requests": {"read", "write"}, "organization_plan": {"read"},
	"organization_projects": {"read", "write", "admin"}, "organization_packages": {"read", "write"},
	"organization_secrets": {"read", "write"}, "organization_self_hosted_runners": {"read", "write"},
	"organization_user_blocking": {"read", "write"}, "team_discussions": {"read", "write"},
	"email_addresses": {"read", "write"}, "followers": {"read", "write"}, "git_ssh_keys": {"read", "write"},
	"gpg_keys": {"read", "write"}, "interaction_limits": {"read", "write"}, "profile": {"write"},
	"starring": {"read", "write"},
}

// GitHubPermissionLevels returns the levels GitHub accepts for a
// permission (nil: not a permission GitHub knows).
func GitHubPermissionLevels(name string) []string { return slices.Clone(githubPermissions[name]) }

// maxGitHubRepositories is GitHub's own limit on one token's repositories.
const maxGitHubRepositories = 500

func (d *decoder) githubScope(e kv, path string) *GitHubScope {
	f := d.body(e, path, "repositories", "permissions")
	if f == nil {
		return nil
	}
	sc := &GitHubScope{Permissions: map[string]string{}}
	if v, ok := f["repositories"]; ok {
		items, _ := d.list(v.val, path+".repositories")
		if len(items) > maxGitHubRepositories {
			d.errf(v.val, path+".repositories", "more than %d repositories (GitHub's limit for one token)", maxGitHubRepositories)
		}
		for _, it := range items {
			switch {
			case strings.Contains(it.val, "/"):
				d.errf(it.node, it.path(), "%q: name the repository alone, without its owner (the installation is the owner's)", it.val)
			case !githubRepoRE.MatchString(it.val) || it.val == "." || it.val == "..":
				d.errf(it.node, it.path(), "%q is not a repository name", it.val)
			default:
				sc.Repositories = append(sc.Repositories, it.val)
			}
		}
	}
	v, ok := f["permissions"]
	if !ok {
		d.errf(e.key, path+".permissions", "missing: the permissions the installation token gets (e.g. {contents: read})")
		return sc
	}
	pn := d.node(v.val)
	if isNull(pn) || (pn.Kind == yaml.MappingNode && len(pn.Content) == 0) {
		d.errf(pn, path+".permissions", "empty: name at least one permission")
		return sc
	}
	for _, kvp := range d.mapKeys(pn, path+".permissions") {
		name := kvp.key.Value
		p := join(path+".permissions", name)
		levels, known := githubPermissions[name]
		if !known {
			msg := fmt.Sprintf("unknown GitHub permission %q", name)
			if s := closest(name, sortedKeys(githubPermissions)); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errf(kvp.key, p, "%s", msg)
			continue
		}
		lv, ok := d.str(kvp.val, p)
		if !ok {
			continue
		}
		if !slices.Contains(levels, lv) {
			d.errf(kvp.val, p, "level %q is not one GitHub accepts for %s (%s)", lv, name, strings.Join(levels, ", "))
			continue
		}
		sc.Permissions[name] = lv
	}
	return sc
}

func (d *decoder) seq(n *yaml.Node, path, what string) []*yaml.Node {
	n = d.node(n)
	if isNull(n) || (n.Kind == yaml.SequenceNode && len(n.Content) == 0) {
		d.errf(n, path, "empty: %s", what)
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "expected a list, got %s", kindName(n))
		return nil
	}
	return n.Content
}

func (d *decoder) rules(n *yaml.Node, path string, g *Grant) {
	for i, c := range d.seq(n, path, "a grant with no allow rules permits nothing") {
		p := index(path, i)
		c = d.node(c)
		if isNull(c) {
			d.errf(c, p, "empty rule")
			continue
		}
		f := d.fields(c, p, "methods", "paths")
		if f == nil {
			continue
		}
		var methods, paths []string
		ok := true
		if v, has := f["methods"]; !has {
			d.missing(c, p, "methods")
			ok = false
		} else {
			items, good := d.list(v.val, p+".methods")
			ok = ok && good
			star := slices.ContainsFunc(items, func(it item) bool { return it.val == "*" })
			for _, it := range items {
				if err := checkMethod(it.val, star); err != nil {
					d.errf(it.node, it.path(), "%v", err)
					ok = false
				}
			}
			methods = values(items)
		}
		if v, has := f["paths"]; !has {
			d.missing(c, p, "paths")
			ok = false
		} else {
			items, good := d.list(v.val, p+".paths")
			ok = ok && good
			for _, it := range items {
				if _, err := compilePath(it.val); err != nil {
					d.errf(it.node, it.path(), "%v", err)
					ok = false
				}
			}
			paths = values(items)
		}
		if ok {
			r, err := CompileRule(methods, paths)
			if err != nil { // cannot happen: checked above
				d.errf(c, p, "%v", err)
				continue
			}
			g.Rules = append(g.Rules, r)
		}
	}
}

func (d *decoder) whos(n *yaml.Node, path string, g *Grant) {
	for i, c := range d.seq(n, path, "a grant with no who entries can be given to nobody") {
		p := index(path, i)
		c = d.node(c)
		if isNull(c) {
			d.errf(c, p, "empty who entry")
			continue
		}
		f := d.fields(c, p, "issuer", "claims", "source_cidrs", "broad")
		if f == nil {
			continue
		}
		w := Who{at: d.at(c)}
		if v, ok := f["issuer"]; !ok {
			d.missing(c, p, "issuer")
		} else if s, ok := d.str(v.val, p+".issuer"); ok {
			w.Issuer = s
			w.issuerAt = d.at(d.node(v.val))
		}
		if v, ok := f["claims"]; ok {
			w.Claims = d.claims(v.val, p+".claims")
		}
		if v, ok := f["source_cidrs"]; ok {
			w.SourceCIDRs = d.cidrs(v.val, p+".source_cidrs")
		}
		if v, ok := f["broad"]; ok {
			w.Broad, _ = d.boolean(v.val, p+".broad")
		}
		g.Who = append(g.Who, w)
	}
}

func (d *decoder) claims(n *yaml.Node, path string) map[string][]string {
	n = d.node(n)
	if isNull(n) {
		d.errf(n, path, "empty: leave claims out to match any token of the issuer")
		return nil
	}
	out := map[string][]string{}
	for _, e := range d.mapKeys(n, path) {
		k := e.key.Value
		p := join(path, k)
		if k == "" {
			d.errf(e.key, path, "empty claim name")
			continue
		}
		items, ok := d.list(e.val, p)
		if !ok {
			continue
		}
		out[k] = values(items)
	}
	return out
}

func (d *decoder) cidrs(n *yaml.Node, path string) []netip.Prefix {
	items, _ := d.list(n, path)
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, it := range items {
		p, err := parseCIDR(it.val)
		if err != nil {
			d.errf(it.node, it.path(), "%v", err)
			continue
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func parseCIDR(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("bad CIDR %q", s)
		}
		if p != p.Masked() {
			return p, fmt.Errorf("CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, fmt.Errorf("bad CIDR %q", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return p, fmt.Errorf("CIDR %q is IPv4-mapped IPv6: write it as IPv4", s)
	}
	return p, nil
}

// checkMethod checks one method of a rule; star says whether the rule
// lists "*" too, beside which only the methods it leaves out may stand.
func checkMethod(m string, star bool) error {
	if m == "*" {
		return nil
	}
	if star && starMethod(m) {
		return fmt.Errorf(`"*" already allows %s: beside it list only methods it leaves out (CONNECT, TRACE, others not in RFC 9110 or WebDAV)`, m)
	}
	if !isToken(m) || len(m) > maxMethodLen {
		return fmt.Errorf("bad method %q", m)
	}
	if u := strings.ToUpper(m); u != m {
		return fmt.Errorf("method %q must be uppercase (%q)", m, u)
	}
	return nil
}

// ---- references, the broad rule, warnings ----

func resolve(p *Policy, secretExists func(string) bool, el *errList) {
	usedIssuers := map[string]bool{}
	usedUpstreams := map[string]bool{}
	for _, name := range sortedKeys(p.Grants) {
		g := p.Grants[name]
		path := join("grants", name)
		up := p.Upstreams[g.Upstream]
		if g.Upstream != "" {
			if up == nil {
				el.add(g.upstreamAt, path+".upstream", "unknown upstream %q", g.Upstream)
			}
			usedUpstreams[g.Upstream] = true
		}
		checkMinting(g, up, path, el)
		for i := range g.Who {
			w := &g.Who[i]
			wp := index(path+".who", i)
			if w.Issuer == "" {
				continue
			}
			usedIssuers[w.Issuer] = true
			is, ok := p.Issuers[w.Issuer]
			if !ok {
				el.add(w.issuerAt, wp+".issuer", "unknown issuer %q", w.Issuer)
				continue
			}
			w.issuerURL = is.URL
			checkBroad(is, w, wp, el)
		}
	}
	for _, name := range sortedKeys(p.Upstreams) {
		up := p.Upstreams[name]
		for _, r := range up.secretRefs {
			if secretExists != nil && !secretExists(r.name) {
				el.add(r.at, r.path, "unknown secret %q (store it first: mayfly secret put %s, or PUT /v1/secrets/%s)", r.name, r.name, r.name)
			}
		}
		if !usedUpstreams[name] {
			el.warn(up.at, join("upstreams", name), "not used by any grant")
		}
	}
	for _, name := range sortedKeys(p.Issuers) {
		if !usedIssuers[name] {
			el.warn(p.Issuers[name].at, join("issuers", name), "not used by any grant")
		}
	}
	checkSharedURLs(p, el)
	checkSharedKeys(p, el)
}

// checkSharedKeys warns of a shared issuer (GitHub Actions, GitLab.com)
// whose jwks_url is not on its own host: whoever holds those keys signs
// that issuer's ID tokens with any repository or project in them, so the
// pins the broad rule asks for hold nothing, and a policy under review
// that does so reads as a well-pinned trust. A warning, not an error: a
// stored version holding one must still load.
func checkSharedKeys(p *Policy, el *errList) {
	for _, name := range sortedKeys(p.Issuers) {
		is := p.Issuers[name]
		if !is.Shared || is.JWKSURL == "" {
			continue
		}
		iu, err := url.Parse(is.URL)
		if err != nil {
			continue // already an error
		}
		ku, err := url.Parse(is.JWKSURL)
		if err == nil && ku.Scheme == "https" && strings.EqualFold(ku.Hostname(), iu.Hostname()) && httpsPort(ku) == httpsPort(iu) {
			continue
		}
		host := is.JWKSURL
		if err == nil {
			host = ku.Host
		}
		el.warn(is.jwksAt, join("issuers", name)+".jwks_url", "keys of a shared issuer taken from %s, not from %s: whoever holds them can sign ID tokens of %s for any repository or project, and no pin of its who entries holds; leave jwks_url out (OIDC discovery) or point it at %s",
			host, iu.Host, is.URL, iu.Host)
	}
}

// httpsPort is u's port, 443 when it names none.
func httpsPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return "443"
}

// checkSharedURLs warns of issuers that share a url but not a jwks_url: the
// verifier keeps one key source per url and drops all but the first (by
// name), so every token of the others is refused (as policy test says). A
// warning, not an error: a stored version holding such issuers must still
// load at start, or the server could not start to apply a fixed one.
func checkSharedURLs(p *Policy, el *errList) {
	first := map[string]*Issuer{}
	for _, name := range sortedKeys(p.Issuers) {
		is := p.Issuers[name]
		if is.URL == "" {
			continue // already an error
		}
		f, ok := first[is.URL]
		if !ok {
			first[is.URL] = is
			continue
		}
		if f.JWKSURL != is.JWKSURL {
			el.warn(is.at, join("issuers", name)+".jwks_url", "url is also issuer %q's, which has %s: issuers sharing a url share one key source, so this issuer is ignored and its tokens refused; give both the same jwks_url",
				f.Name, jwksShown(f.JWKSURL))
		}
	}
}

func jwksShown(s string) string {
	if s == "" {
		return "no jwks_url (OIDC discovery)"
	}
	return fmt.Sprintf("jwks_url %q", shownURL(s))
}

// checkMinting judges what depends on the grant's upstream: allow rules,
// github scopes and delivery (SPEC section 9). up is nil when unknown.
func checkMinting(g *Grant, up *Upstream, path string, el *errList) {
	kind := ""
	if up != nil {
		kind = up.Kind()
	}
	if kind == KindPostgres {
		if g.hasAllow {
			el.add(g.at, path+".allow", "a grant on a postgres upstream has no allow rules: there is no gateway path, the job gets a database role")
		}
		if g.Deliver == DeliverGateway {
			el.add(g.deliverAt, path+".deliver", "a postgres upstream's role is always delivered to the job")
		}
		g.Deliver = DeliverJob
	} else if !g.hasAllow {
		el.add(g.at, path+".allow", "missing: a grant with no allow rules permits nothing")
	}
	if g.GitHub != nil && up != nil && kind != KindGitHubApp {
		el.add(g.githubAt, path+".github", "only for a grant on an upstream whose credential is github_app")
	}
	if kind == KindGitHubApp && g.GitHub == nil {
		el.add(g.at, path+".github", "missing: the permissions the installation token gets (github: {permissions: {contents: read}})")
	}
	if g.Deliver == DeliverJob && kind == KindSecret && up != nil {
		el.add(g.deliverAt, path+".deliver", "a stored secret is never delivered to the job: deliver: job needs a minted credential (github_app or postgres)")
	}
	if g.Deliver == "" {
		g.Deliver = DeliverGateway
	}
	if g.Deliver == DeliverJob && !g.BindSourceIP && (kind == KindGitHubApp || kind == KindPostgres) {
		el.warn(g.at, path, "deliver: job without bind_source_ip: the minted credential goes to the job, and its mayfly token works from any address")
	}
}

func checkBroad(is *Issuer, w *Who, path string, el *errList) {
	if !is.Shared {
		if w.Broad {
			el.warn(w.at, path+".broad", "has no effect: issuer %q is not a shared issuer", is.Name)
		}
		if len(w.Claims) == 0 {
			el.warn(w.at, path, "no claims: any token of issuer %q matches", is.Name)
		}
		return
	}
	pinned, byID := false, false
	for _, c := range pinClaims[is.Preset] {
		if _, ok := w.Claims[c]; ok {
			pinned = true
			byID = byID || slices.Contains(idPinClaims[is.Preset], c)
		}
	}
	switch {
	case !pinned && !w.Broad:
		el.add(w.at, path, "issuer %q (%s) is shared by everyone on the platform and this entry pins no %s: add one of %s, or say broad: true",
			is.Name, is.URL, map[string]string{"github": "repository", "gitlab": "project"}[is.Preset], strings.Join(pinClaims[is.Preset], ", "))
	case pinned && !byID:
		el.warn(w.at, path, "pins by name only: prefer %s, which cannot be re-registered by someone else", strings.Join(idPinClaims[is.Preset], " or "))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// closest returns the known key nearest to s, when near enough to be a typo.
func closest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if dist := yamlerr.Distance(strings.ToLower(s), k); dist < bestD {
			best, bestD = k, dist
		}
	}
	return best
}

// fmtDuration writes 10m, 1h, 1h30m rather than 10m0s, 1h0m0s.
func fmtDuration(v time.Duration) string {
	s := v.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
