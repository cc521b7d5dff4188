// Package policy owns mayfly's policy as code (SPEC section 3): the YAML
// schema of issuers, upstreams and grants, its strict validation (every
// problem reported with file, line and reason), the compiled matchers
// (claims, methods, paths, source networks), the difference between two
// versions, and every decision made from it: who may have a grant (Admit,
// for the exchange; Readmit, for renewal), what a held token may do
// through the gateway (Authorize), with one table of reasons (Reason) that
// error descriptions and audit entries share, and the gateway's reading of
// a request path (CleanPath, EscapePath).
//
// It never touches the network or the store, and never records anything:
// secret names are checked through a function the caller gives, issuer
// keys are fetched by identity, and the caller audits the decisions.
//
// Decisions this package makes where SPEC section 3 is silent:
//
//   - methods: uppercase HTTP tokens ("GET", "POST", "PROPFIND"); "*" means
//     the ordinary methods (RFC 9110's but CONNECT and TRACE, PATCH, and
//     WebDAV's), and others only where listed, beside it or not. Lowercase
//     is refused, not folded.
//   - paths: start with "/"; segments are compared exactly (case-sensitive,
//     no percent-decoding: the gateway decodes first, so "%2F" in a pattern is
//     the three characters). "*" is exactly one non-empty segment, "**" any
//     number of segments including none, both only as a whole segment.
//     "." and ".." segments, empty segments ("//") and a trailing "/" are
//     refused in patterns. On a request, one trailing "/" is ignored, and a
//     path with ".", ".." or empty segments never matches.
//   - ttl is required, positive and at most 24h; max_ttl defaults to ttl and
//     is at most 168h; ttl may not exceed max_ttl. max_uses (extension) is a
//     whole number, 0 meaning unlimited.
//   - method_override (extension) is "check" (the default: the gateway
//     refuses a request that names, in a header, query or body, a method
//     the grant does not allow) or "ignore" (the upstream honours none).
//   - ranges (extension) is "strip" (the default: Range, If-Range and
//     Request-Range are not forwarded, and a partial response is refused,
//     so the masker always sees whole responses) or "forward".
//   - every upstream needs credential.secret; header defaults to
//     "Authorization" and may not be a hop-by-hop or framing header.
//   - SPEC section 9: an upstream's credential may instead be github_app
//     (an App's installation tokens, injected as "Authorization: token …";
//     header and prefix are then fixed), and an upstream may be postgres
//     (no url, no credential: a role per lease). A grant on a github_app
//     upstream must say github.permissions (deny by default: a token with
//     every permission of the installation is never minted); deliver is
//     gateway (default) or job; a grant on a postgres upstream has no
//     allow rules and is always delivered to the job. deliver: job without
//     bind_source_ip is a warning. Templates use only {{name}},
//     {{password}} and {{expires}}.
//   - issuers may say preset: github|gitlab (extension); the shared issuers
//     are recognised by url and get their preset automatically.
//   - the broad rule: a who entry for a shared issuer must pin a claim that
//     names a repository or project — GitHub: repository_id,
//     repository_owner_id, repository, repository_owner; GitLab: project_id,
//     namespace_id, project_path, namespace_path — or say broad: true. The
//     numeric *_id claims are preferred: a name can be deleted and
//     registered again by someone else, so pinning by name only is allowed
//     but reported as a warning. "sub" does not count: its format can be
//     customised to leave the repository out.
//   - claim values are compared as strings; YAML numbers and booleans are
//     taken as written ("123456789"); null and empty values are refused.
//   - source_cidrs entries are CIDRs in canonical form; a bare address means
//     that one host. IPv4-mapped IPv6 request addresses are compared as IPv4.
//   - one file may hold several YAML documents ("---"); each is read like a
//     separate file, which is how a stored Source of several files reads back.
//     Files are UTF-8; a leading byte-order mark is dropped (only a stream's
//     first is ignored by YAML, and Source joins the files as one stream).
//   - anchors and aliases are allowed, bounded by a budget of nodes visited;
//     merge keys ("<<") are not.
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Input limits.
const (
	MaxFileSize  = 1 << 20 // bytes per file
	MaxTotalSize = 8 << 20 // bytes over all files of one policy
	MaxFiles     = 256     // files per policy
	maxNodes     = 1 << 20 // YAML nodes visited per file, aliases counted each time they are followed
	maxErrors    = 200     // problems reported before the rest are only counted
)

// File is one policy file: its name (used in errors) and content.
type File struct {
	Name string
	Data []byte
}

// Policy is a parsed, validated policy. Treat it as read-only once Parse
// returns it; it is then safe for concurrent use.
type Policy struct {
	Issuers   map[string]*Issuer
	Upstreams map[string]*Upstream
	Grants    map[string]*Grant
	// Hash is the hex SHA-256 of a canonical form: two policies with the same
	// Hash mean the same thing (comments, order and layout do not count).
	Hash string
	// Source is the YAML as given: one file verbatim (without a byte-order
	// mark), or several joined as documents each led by a "# file: NAME"
	// comment. Parse reads it back to the same Hash, and refuses files
	// whose Source would not.
	Source []byte
	// Warnings are problems that do not make the policy invalid (an unused
	// upstream, a repository pinned by name only, …).
	Warnings Errors
}

// Issuer is an OIDC issuer CI jobs prove themselves with.
type Issuer struct {
	Name     string
	URL      string // exactly as the ID token's iss
	Audience string // the ID token's aud must contain it
	// AllowMultipleAudiences accepts ID tokens whose aud holds Audience
	// among others whatever their azp; by default such a token needs azp
	// equal to Audience (OIDC Core §3.1.3.7).
	AllowMultipleAudiences bool
	JWKSURL                string   // empty: OIDC discovery at URL
	Algorithms             []string // default ["RS256"]
	Shared                 bool     // a known shared issuer (GitHub Actions, GitLab.com): the broad rule applies
	Preset                 string   // "github", "gitlab" or ""

	at, jwksAt pos
}

// Upstream is an API the gateway forwards to, or (Postgres) a database
// whose roles are minted per lease.
type Upstream struct {
	Name       string
	URL        string // absolute http(s), no trailing "/"; empty for a postgres upstream
	Credential Credential
	Postgres   *Postgres     // a database upstream: no gateway path
	CAFile     string        // optional CA bundle to trust for URL
	Timeout    time.Duration // optional, 0 = the gateway's default
	// IgnoreMethodOverride (method_override: ignore) says the upstream is
	// known not to honour method overrides (X-HTTP-Method-Override,
	// _method, …): the gateway then does not look for them.
	IgnoreMethodOverride bool
	// ForwardRanges (ranges: forward) passes Range, If-Range and
	// Request-Range on, and partial responses back. By default they are
	// stripped and a partial response refused: a part of a response the
	// upstream reflects the credential in would carry a piece of it that
	// no masker can recognise, and a whole response is always a valid answer.
	ForwardRanges bool

	at         pos
	secretRefs []secretRef // stored secrets it names, for resolve
}

// secretRef is a stored secret's name where the policy wrote it.
type secretRef struct {
	name, path string
	at         pos
}

// Credential says which stored secret the gateway injects, and how, or
// (GitHubApp) which credential source mints it.
type Credential struct {
	Secret string // name of a stored secret
	Header string // canonical header name, default "Authorization"
	Prefix string // written before the secret's value, e.g. "Bearer "
	// GitHubApp, when set, mints installation tokens; Secret is then empty.
	GitHubApp *GitHubApp
}

// GitHubApp is a GitHub App whose installation tokens an upstream uses.
type GitHubApp struct {
	AppID            string // digits
	PrivateKeySecret string // a stored secret holding the App's PEM private key
	InstallationID   string // digits; or
	Owner            string // the account the App is installed on (looked up)
	APIURL           string // where the App endpoints are; the upstream's url when not given
}

// Postgres is a database upstream: a role per lease, made and dropped with
// the policy's statements.
type Postgres struct {
	AdminDSNSecret string // a stored secret: DSN of a role with CREATEROLE
	Creation       string // template with {{name}}, {{password}}, {{expires}}
	Revocation     string // template with {{name}}
}

// Credential kinds (Upstream.Kind).
const (
	KindSecret    = "secret"
	KindGitHubApp = "github_app"
	KindPostgres  = "postgres"
)

// Kind says where the upstream's credential comes from.
func (u *Upstream) Kind() string {
	switch {
	case u.Postgres != nil:
		return KindPostgres
	case u.Credential.GitHubApp != nil:
		return KindGitHubApp
	}
	return KindSecret
}

// Minted reports whether the upstream's credentials are minted (SPEC
// section 9) rather than a stored secret.
func (u *Upstream) Minted() bool { return u.Kind() != KindSecret }

// Delivery modes (Grant.Deliver).
const (
	DeliverGateway = "gateway"
	DeliverJob     = "job"
)

// GitHubScope is what a minted installation token may do.
type GitHubScope struct {
	Repositories []string          // repository names within the installation; empty: all it has
	Permissions  map[string]string // permission → read, write or admin
}

// Grant is a named set of permissions on one upstream.
type Grant struct {
	Name         string
	Upstream     string
	TTL          time.Duration
	MaxTTL       time.Duration
	Rules        []Rule // the YAML key "allow"
	BindSourceIP bool
	Who          []Who
	MaxUses      int // 0 = unlimited
	// GitHub scopes the installation tokens of a github_app upstream.
	GitHub *GitHubScope
	// Deliver is DeliverGateway or DeliverJob (always job for a postgres
	// upstream).
	Deliver string

	at, upstreamAt, deliverAt, githubAt pos
	hasAllow                            bool
}

// Who is one identity a grant may be given to: every line must match.
type Who struct {
	Issuer      string              // an issuer's name in the policy
	Claims      map[string][]string // claim → accepted values (any one)
	SourceCIDRs []netip.Prefix
	Broad       bool

	issuerURL    string // the issuer's url, which a held token's iss must still be
	at, issuerAt pos
}

// ReadPaths reads each path: a file, or a folder whose *.yaml and *.yml
// files (not hidden, not in sub-folders) are read in name order. Files are
// limited to MaxFileSize each, MaxTotalSize and MaxFiles in all.
func ReadPaths(paths ...string) ([]File, error) {
	if len(paths) == 0 {
		return nil, errors.New("reading policy: no file or folder given")
	}
	var files []File
	total := 0
	add := func(name string) error {
		if len(files) >= MaxFiles {
			return fmt.Errorf("reading policy: more than %d files", MaxFiles)
		}
		data, err := readLimited(name)
		if err != nil {
			return err
		}
		total += len(data)
		if total > MaxTotalSize {
			return fmt.Errorf("reading policy: more than %d bytes in all", MaxTotalSize)
		}
		files = append(files, File{Name: name, Data: data})
		return nil
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("reading policy: %w", err)
		}
		if !st.IsDir() {
			if err := add(p); err != nil {
				return nil, err
			}
			continue
		}
		entries, err := os.ReadDir(p) // sorted by name
		if err != nil {
			return nil, fmt.Errorf("reading policy folder: %w", err)
		}
		n := 0
		for _, e := range entries {
			name := e.Name()
			ext := strings.ToLower(filepath.Ext(name))
			if strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
				continue
			}
			full := filepath.Join(p, name)
			if st, err := os.Stat(full); err != nil || st.IsDir() {
				continue // a dangling link or a folder named *.yaml
			}
			if err := add(full); err != nil {
				return nil, err
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("reading policy folder %s: no *.yaml or *.yml files", p)
		}
	}
	return files, nil
}

func readLimited(name string) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading policy %s: not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading policy %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("reading policy %s: larger than %d bytes", name, MaxFileSize)
	}
	return data, nil
}

// Parse decodes and validates files as one policy. secretExists, when not
// nil, is asked whether each upstream's credential secret is stored. On any
// problem it returns a nil Policy and an Errors listing them all.
func Parse(files []File, secretExists func(name string) bool) (*Policy, error) {
	el := &errList{maxItems: maxErrors, order: map[string]int{}}
	for i, f := range files {
		if _, ok := el.order[f.Name]; !ok {
			el.order[f.Name] = i
		}
	}
	p := &Policy{
		Issuers:   map[string]*Issuer{},
		Upstreams: map[string]*Upstream{},
		Grants:    map[string]*Grant{},
	}
	if len(files) > MaxFiles {
		el.add(pos{file: files[MaxFiles].Name, line: 1}, "", "more than %d files", MaxFiles)
		return nil, finish(el)
	}
	total := 0
	files = slices.Clone(files)
	for i := range files {
		f := &files[i]
		total += len(f.Data)
		at := pos{file: f.Name, line: 1}
		// A byte-order mark is ignored only at the start of a YAML stream:
		// in the joined Source it would become part of the first key.
		f.Data = bytes.TrimPrefix(f.Data, []byte("\ufeff"))
		switch {
		case len(f.Data) > MaxFileSize:
			el.add(at, "", "file is larger than %d bytes", MaxFileSize)
		case total > MaxTotalSize:
			el.add(at, "", "policy is larger than %d bytes in all", MaxTotalSize)
		case bytes.HasPrefix(f.Data, []byte{0xff, 0xfe}) || bytes.HasPrefix(f.Data, []byte{0xfe, 0xff}):
			// The YAML parser reads UTF-16 too, but only as a whole stream.
			// Windows PowerShell 5's > and Out-File write it.
			el.add(at, "", "file is UTF-16 text, not UTF-8: save it as UTF-8")
		case !utf8.Valid(f.Data):
			el.add(at, "", "file is not UTF-8 text: save it as UTF-8")
		default:
			decodeFile(*f, p, el)
		}
	}
	resolve(p, secretExists, el) // also after other errors: report everything at once
	if err := finish(el); err != nil {
		return nil, err
	}
	p.Warnings = el.warns
	sortErrors(p.Warnings, el.order)
	p.Source = source(files)
	p.Hash = hashOf(p)
	if len(files) > 1 {
		// The server stores Source and every node parses it again: a
		// policy that would not read back must not become a version.
		back, err := Parse([]File{{Name: "source", Data: p.Source}}, nil)
		if err != nil || back.Hash != p.Hash {
			return nil, Errors{{File: files[0].Name, Line: 1, Msg: "the files joined as one policy (as it is stored) do not read back as the same policy; does a file end in a block scalar (|, >) without a final line break?"}}
		}
	}
	return p, nil
}

func finish(el *errList) error {
	if len(el.errs) == 0 {
		return nil
	}
	sortErrors(el.errs, el.order)
	if el.dropped > 0 {
		last := el.errs[len(el.errs)-1]
		el.errs = append(el.errs, &Error{File: last.File, Line: last.Line, Msg: fmt.Sprintf("and %d more problems", el.dropped)})
	}
	return el.errs
}

// sortErrors orders problems by file (in the order given) then line.
func sortErrors(es Errors, order map[string]int) {
	sort.SliceStable(es, func(i, j int) bool {
		if fi, fj := order[es[i].File], order[es[j].File]; fi != fj {
			return fi < fj
		}
		return es[i].Line < es[j].Line
	})
}

// source joins files so that Parse reads the result back as the same policy.
func source(files []File) []byte {
	if len(files) == 1 {
		return bytes.Clone(files[0].Data)
	}
	var b bytes.Buffer
	for i, f := range files {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString("# file: ")
		b.WriteString(strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, f.Name))
		b.WriteString("\n")
		b.Write(f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

func hashOf(p *Policy) string {
	sum := sha256.Sum256(canonical(p))
	return hex.EncodeToString(sum[:])
}
