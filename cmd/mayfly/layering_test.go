package main

// TestLayering checks that imports run downward (DEVELOPERS.md):
// cmd → server → api → authority → capabilities → store, token.

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/mayfly-sh/mayfly/"

// layers places every package of the module. A package may import only
// packages of a lower layer, the same-layer imports listed in along, and
// never those listed in never.
var layers = map[string]int{
	// leaves: formats and names, no I/O of their own
	"internal/token":      0,
	"internal/datadir":    0,
	"internal/clientip":   0,
	"internal/ratelimit":  0, // per-key token buckets, bounded table (api and gateway per-address limits); per-key caps (connections, leak reports)
	"internal/apitype":    0, // the /v1 wire types: imports no mayfly package
	"internal/yamlerr":    0, // YAML errors in words, for policy and server config
	"internal/jwa":        0, // which public key verifies which JWS algorithm (identity, dpop)
	"internal/version":    0, // which build this is (runtime/debug build info)
	"internal/pgsql":      0, // minted roles' names, template quoting, SCRAM verifiers (policy validates with it, rotate sends verifiers)
	"internal/failclosed": 0, // the one ErrUnavailable every layer wraps (503, nothing done)
	"internal/netfail":    0, // a failed HTTP exchange's kind, never its text (githubapp, sso, alert)
	"internal/audit":      0, // the audit log's formats, proofs and verification (x/mod tlog, note)
	"internal/proccpu":    0, // the process's CPU time, for benchmarks (getrusage, GetProcessTimes)
	"internal/keyfile":    0, // private files read owner-only (master key, server keys, session file)
	// the benches' pooled Go reverse proxy, their anchor: imports no mayfly package
	"bench/internal/goproxy": 0,
	// what the benches read off the machine (/proc) and their medians
	"bench/internal/measure": 0,
	// storage
	"internal/store":           1,
	"internal/store/storetest": 1,
	// capabilities
	"internal/auditlog":                2,
	"internal/lease":                   2,
	"internal/secret":                  2,
	"internal/policy":                  2,
	"internal/identity":                2,
	"internal/dpop":                    2,
	"internal/scan":                    2,
	"internal/mask":                    2,
	"internal/devissuer":               2,
	"internal/devissuer/devissuertest": 2,
	"internal/job":                     2,
	"internal/client":                  2,
	"internal/gateway":                 2,
	"internal/pgrole":                  2,
	"internal/pgrole/pgroletest":       2,
	"internal/mint":                    2, // minted upstream credentials: records, revocation worker (SPEC section 9)
	"internal/githubapp":               2, // the github_app credential source (installation tokens)
	"internal/githubtest":              2, // a GitHub API double for tests and the demo
	"internal/rotate":                  2,
	"internal/alert":                   2, // alert rules over audit entries, webhook delivery (issue 16 item 4)
	"internal/sso":                     2, // OIDC relying party for human sign-in (admin_oidc), the signed-in caller
	// decisions, HTTP, wiring
	"internal/authority": 3,
	"internal/api":       4,
	"internal/console":   4, // the web console at /ui/ (reads the store; acts through the authority)
	"internal/server":    5,
	"internal/demo":      6,
	// commands and harnesses
	"cmd/mayfly":     7,
	"bench/exchange": 7,
	"bench/gateway":  7,
	"bench/scan/gen": 7,
	"e2e":            7,
}

// along lists the imports between capabilities, each along a flow of
// ARCHITECTURE.md.
var along = map[string][]string{
	"internal/pgsql":                   {"internal/token"},                                                                                           // the minted passwords' format
	"internal/audit":                   {"internal/token"},                                                                                           // entries hold a token's hint, never the token
	"internal/gateway":                 {"internal/auditlog", "internal/dpop", "internal/lease", "internal/policy", "internal/mask", "internal/sso"}, // gateway flow; sso: the console's cookie names, never forwarded
	"internal/job":                     {"internal/client"},                                                                                          // the job side exchanges through the one client
	"internal/client":                  {"internal/dpop"},                                                                                            // DPoP proofs for bound tokens
	"internal/devissuer/devissuertest": {"internal/devissuer", "internal/sso"},
	"internal/store/storetest":         {"internal/store"},                       // fresh stores for tests
	"internal/pgrole":                  {"internal/mint", "internal/policy"},     // the postgres credential source of the minting flow
	"internal/mint":                    {"internal/auditlog", "internal/policy"}, // minting flow: a grant's upstream, revocations audited
	"internal/githubapp":               {"internal/mint", "internal/policy"},     // the github_app credential source of the minting flow
	"internal/githubtest":              {"internal/policy"},                      // GitHub's permission names, as the double checks them
	"internal/rotate":                  {"internal/auditlog", "internal/secret"}, // rotation writes secret versions
}

// never lists imports a package's comment (or DEVELOPERS.md) forbids
// although the layers would allow them.
var never = map[string][]string{
	// api maps HTTP to calls; storage is reached through authority and the capabilities
	"internal/api": {"internal/store"},
	// the CLI talks to the server over HTTP, or to packages that own an
	// offline task; never to the storage or the proxy's internals
	"cmd/mayfly": {"internal/store", "internal/gateway", "internal/lease", "internal/secret", "internal/api"},
	// the gateway never reads the store itself
	"internal/gateway": {"internal/store"},
	// policy never touches the network or the store
	"internal/policy": {"internal/store"},
	// identity never decides what a caller may do
	"internal/identity": {"internal/policy", "internal/store"},
	// the scanner never revokes by itself
	"internal/scan": {"internal/lease", "internal/store"},
	// the audit core is portable: no storage, no I/O of its own
	"internal/audit": {"internal/store"},
	// token knows nothing of storage or HTTP
	"internal/token": {"internal/store"},
	// alerts deliver; they never decide policy, revoke, or read secrets (their HMAC key comes as bytes)
	"internal/alert": {"internal/store", "internal/secret", "internal/policy", "internal/lease", "internal/authority"},
	// the demo runs the real server over HTTP
	"internal/demo": {"internal/store", "internal/api", "internal/authority", "internal/lease"},
}

func TestLayering(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the layering check runs go list: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			continue // the standard library and other modules
		}
		for _, imp := range fields[1:] {
			if dep, ok := strings.CutPrefix(imp, module); ok {
				graph[pkg] = append(graph[pkg], dep)
			}
		}
		if graph[pkg] == nil {
			graph[pkg] = []string{}
		}
	}
	if len(graph) < 20 {
		t.Fatalf("go list found %d packages of the module: the check saw nothing", len(graph))
	}
	for _, v := range layeringViolations(graph) {
		t.Error(v)
	}
}

// layerOf places pkg: from the table, and the benchmark harnesses
// (bench/…) it does not name, which build parts directly, at the top.
func layerOf(pkg string) (int, bool) {
	if l, ok := layers[pkg]; ok {
		return l, true
	}
	return 7, strings.HasPrefix(pkg, "bench/")
}

// layeringViolations checks an import graph (package → the module's
// packages it imports) against the table.
func layeringViolations(graph map[string][]string) []string {
	var out []string
	pkgs := make([]string, 0, len(graph))
	for p := range graph {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, pkg := range pkgs {
		lp, known := layerOf(pkg)
		if !known {
			out = append(out, pkg+" is not in the layering table (cmd/mayfly/layering_test.go): place it")
			continue
		}
		for _, dep := range graph[pkg] {
			ld, known := layerOf(dep)
			switch {
			case !known:
				// reported as a package of its own
			case slices.Contains(never[pkg], dep):
				out = append(out, pkg+" imports "+dep+", which its rules forbid")
			case ld < lp:
			case ld == lp && slices.Contains(along[pkg], dep):
			case ld == lp:
				out = append(out, pkg+" imports "+dep+" of its own layer outside a flow: add it to along, or route it through a layer above")
			default:
				out = append(out, pkg+" imports "+dep+", above it")
			}
		}
	}
	return out
}

// The checker finds each kind of break, and passes a graph that keeps
// the rules.
func TestLayeringViolations(t *testing.T) {
	tests := []struct {
		name  string
		graph map[string][]string
		want  string // "" = no violation
	}{
		{"downward", map[string][]string{"internal/api": {"internal/authority", "internal/lease"}}, ""},
		{"along a flow", map[string][]string{"internal/gateway": {"internal/policy"}}, ""},
		{"api reaches the store", map[string][]string{"internal/api": {"internal/store"}}, "internal/api imports internal/store, which its rules forbid"},
		{"cli reaches the proxy", map[string][]string{"cmd/mayfly": {"internal/gateway"}}, "cmd/mayfly imports internal/gateway, which its rules forbid"},
		{"upward", map[string][]string{"internal/policy": {"internal/authority"}}, "internal/policy imports internal/authority, above it"},
		{"sideways", map[string][]string{"internal/scan": {"internal/mask"}}, "internal/scan imports internal/mask of its own layer outside a flow"},
		{"unplaced", map[string][]string{"internal/newthing": nil}, "internal/newthing is not in the layering table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layeringViolations(tt.graph)
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("violations %q, want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.want)):
				t.Errorf("violations %q, want one starting %q", got, tt.want)
			}
		})
	}
}

// The table itself: every forbidden or along entry names a placed package,
// so a rename cannot silently drop a rule.
func TestLayeringTable(t *testing.T) {
	for pkg, deps := range never {
		for _, d := range append([]string{pkg}, deps...) {
			if _, ok := layers[d]; !ok {
				t.Errorf("never: %s is not in layers", d)
			}
		}
	}
	for pkg, deps := range along {
		for _, d := range deps {
			if layers[d] != layers[pkg] {
				t.Errorf("along: %s → %s is not within one layer", pkg, d)
			}
		}
	}
}
