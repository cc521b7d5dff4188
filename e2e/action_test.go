package e2e

// The CI integrations in the repository, run against a real server: the
// GitHub Action (action.yml, action/*.js) under node with a faked runner
// environment and the devissuer's GitHub-Actions request-URL flow, and the
// GitLab CI/CD component (templates/mayfly.yml) whose scripts run
// under sh the way a runner runs them. Both skip when node (resp. sh) is not
// on PATH; the action's own node tests are run from here too.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mayfly-sh/mayfly/internal/devissuer"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not on PATH", name)
	}
	return p
}

// TestActionNodeTests runs the action's node tests (node --test action/test/).
func TestActionNodeTests(t *testing.T) {
	node := needTool(t, "node")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "action/test/")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "NODE_OPTIONS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test action/test/: %v\n%s", err, out)
	}
}

// ciWorld is a server with a devissuer issuer, a recording upstream and a
// stored upstream credential.
type ciWorld struct {
	n        *node
	iss      *devissuer.Issuer
	caFile   string
	adminEnv []string
	mu       sync.Mutex
	upAuth   []string // Authorization headers the upstream saw
}

const upstreamSecret = "upstream-credential-0123456789"

func newCIWorld(t *testing.T) *ciWorld {
	t.Helper()
	w := &ciWorld{n: initDir(t)}
	w.n.start(t)
	w.caFile = filepath.Join(w.n.dir, "ca.pem")
	w.adminEnv = []string{"MAYFLY_ADDR=" + w.n.url, "MAYFLY_CACERT=" + w.caFile, "MAYFLY_TOKEN=" + w.n.admin}

	w.iss = devissuertest.Start(t)

	up := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.upAuth = append(w.upAuth, r.Header.Get("Authorization"))
		w.mu.Unlock()
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write([]byte(`{"id":4242,"path":"` + r.URL.Path + `"}`))
	}))
	t.Cleanup(up.Close)

	// The repository_id the devissuer gives acme/app, to pin it as a real
	// policy would.
	probe, err := w.iss.Mint(nil, "probe", 0)
	if err != nil {
		t.Fatal(err)
	}
	repoID := jwtClaims(t, probe)["repository_id"]
	if repoID == "" {
		t.Fatal("devissuer token has no repository_id")
	}

	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(`issuers:
  dev:
    url: `+w.iss.URL()+`
    audience: `+w.n.url+`
upstreams:
  github-api:
    url: `+up.URL+`
    credential:
      secret: upstream-token
      prefix: "Bearer "
  gitlab-api:
    url: `+up.URL+`
    credential:
      secret: upstream-token
      prefix: "Bearer "
grants:
  deploy:
    upstream: github-api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/repos/acme/app/**"]
    who:
      - issuer: dev
        claims:
          repository_id: "`+repoID+`"
          ref: refs/heads/main
  gitlab-read:
    upstream: gitlab-api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/projects/4242"]
    who:
      - issuer: dev
        claims:
          project_id: "4242"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, e, code := run(t, w.adminEnv, upstreamSecret+"\n", "secret", "put", "upstream-token"); code != 0 {
		t.Fatalf("secret put: %d %s", code, e)
	}
	if _, e, code := run(t, w.adminEnv, "", "policy", "apply", policy); code != 0 {
		t.Fatalf("policy apply: %d %s", code, e)
	}
	return w
}

func jwtClaims(t *testing.T, jwt string) map[string]string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for k, v := range raw {
		if s, ok := v.(string); ok {
			m[k] = s
		}
	}
	return m
}

// introspect asks the server (admin) whether tok is active.
func (w *ciWorld) introspect(t *testing.T, tok string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", w.n.url+"/v1/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+w.n.admin)
	resp, err := w.n.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Active bool `json:"active"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("introspect: HTTP %d", resp.StatusCode)
	}
	return v.Active
}

// activeLeases counts the live leases of a grant.
func (w *ciWorld) activeLeases(t *testing.T, grant string) int {
	t.Helper()
	code, body := w.n.req(t, w.n.client(t), "GET", "/v1/leases?active=true&grant="+grant, "")
	if code != 200 {
		t.Fatalf("leases: %d %s", code, body)
	}
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("leases: %v %s", err, body)
	}
	switch x := v.(type) {
	case []any:
		return len(x)
	case map[string]any:
		for _, k := range []string{"leases", "items"} {
			if l, ok := x[k].([]any); ok {
				return len(l)
			}
		}
	}
	t.Fatalf("leases: unexpected shape %s", body)
	return 0
}

// gateway calls the gateway with tok and returns the status and body.
func (w *ciWorld) gateway(t *testing.T, tok, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", w.n.url+"/gw"+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := w.n.client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// fileCommands parses a $GITHUB_ENV-style file (NAME=value and NAME<<DELIM).
func fileCommands(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" {
			continue
		}
		if k, delim, ok := strings.Cut(l, "<<"); ok {
			var val []string
			j := i + 1
			for ; j < len(lines) && lines[j] != delim; j++ {
				val = append(val, lines[j])
			}
			if j == len(lines) {
				t.Fatalf("%s: unterminated heredoc for %s", file, k)
			}
			m[k] = strings.Join(val, "\n")
			i = j
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", file, l)
		}
		m[k] = v
	}
	return m
}

func runTool(t *testing.T, dir string, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var so, se strings.Builder
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return so.String(), se.String(), code
}

// TestGitHubActionE2E runs action/index.js and action/post.js with the real
// binary against a real TLS server, the ID token coming from the devissuer's
// GitHub-Actions request URL.
func TestGitHubActionE2E(t *testing.T) {
	node := needTool(t, "node")
	w := newCIWorld(t)
	tmp := t.TempDir()
	files := map[string]string{}
	for _, k := range []string{"GITHUB_ENV", "GITHUB_STATE", "GITHUB_OUTPUT", "GITHUB_PATH"} {
		files[k] = filepath.Join(tmp, strings.ToLower(k))
		if err := os.WriteFile(files[k], nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pem, err := os.ReadFile(w.caFile)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + tmp, "RUNNER_TEMP=" + tmp, "XDG_STATE_HOME=" + filepath.Join(tmp, "state"),
		"GITHUB_ENV=" + files["GITHUB_ENV"], "GITHUB_STATE=" + files["GITHUB_STATE"],
		"GITHUB_OUTPUT=" + files["GITHUB_OUTPUT"], "GITHUB_PATH=" + files["GITHUB_PATH"],
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + w.iss.RequestURL(), "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + w.iss.RequestToken(),
		"INPUT_GRANTS=deploy", "INPUT_SERVER=" + w.n.url, "INPUT_CA-CERT=" + string(pem),
		"INPUT_MAYFLY-PATH=" + binary, "INPUT_EXPORT-ENV=true", "INPUT_TTL=5m",
	}
	so, se, code := runTool(t, "..", env, node, "action/index.js")
	if code != 0 {
		t.Fatalf("index.js: exit %d\n%s\n%s\nserver:\n%s", code, so, se, w.n.logs)
	}
	ghEnv := fileCommands(t, files["GITHUB_ENV"])
	tok := ghEnv["MAYFLY_TOKEN"]
	if !regexp.MustCompile(`^mfy_[0-9A-Za-z]{36}$`).MatchString(tok) {
		t.Fatalf("GITHUB_ENV has no job token: %q", ghEnv)
	}
	if first, _, _ := strings.Cut(so, "\n"); first != "::add-mask::"+tok {
		t.Errorf("first stdout line is not the mask: %q", first)
	}
	if strings.Count(so+se, tok) != 1 {
		t.Errorf("token printed outside ::add-mask::\n%s\n%s", so, se)
	}
	if ghEnv["MAYFLY_GATEWAY"] != w.n.url+"/gw" || ghEnv["MAYFLY_ADDR"] != w.n.url || ghEnv["MAYFLY_CACERT"] == "" {
		t.Errorf("GITHUB_ENV: %q", ghEnv)
	}
	outs := fileCommands(t, files["GITHUB_OUTPUT"])
	if !strings.HasPrefix(outs["lease-id"], "lse_") || outs["gateway"] != w.n.url+"/gw" || outs["expires-in"] == "" {
		t.Errorf("outputs: %q", outs)
	}
	if n, err := strconv.Atoi(outs["expires-in"]); err != nil || n <= 0 || n > 300 {
		t.Errorf("expires-in %q, asked ttl 5m", outs["expires-in"])
	}
	if !w.introspect(t, tok) {
		t.Fatal("token not active after the main step")
	}
	if w.activeLeases(t, "deploy") != 1 {
		t.Error("want one live lease of grant deploy")
	}

	// A later step: the exported variables work against the gateway, with
	// the exported CA file, and the upstream sees only its own credential.
	if code, body := w.gateway(t, tok, "/github-api/repos/acme/app/deployments"); code != 200 || !strings.Contains(body, `"id":4242`) {
		t.Fatalf("gateway: %d %s", code, body)
	}
	if code, _ := w.gateway(t, tok, "/github-api/repos/other/app"); code != 403 {
		t.Errorf("out of scope: %d, want 403", code)
	}
	w.mu.Lock()
	if len(w.upAuth) != 1 || w.upAuth[0] != "Bearer "+upstreamSecret {
		t.Errorf("upstream saw %q", w.upAuth)
	}
	w.mu.Unlock()
	if _, err := os.Stat(ghEnv["MAYFLY_CACERT"]); err != nil {
		t.Errorf("exported CA: %v", err)
	}

	// The post step, as the runner gives it: the inputs and STATE_*.
	postEnv := append([]string{}, env...)
	for k, v := range fileCommands(t, files["GITHUB_STATE"]) {
		postEnv = append(postEnv, "STATE_"+k+"="+v)
	}
	so, se, code = runTool(t, "..", postEnv, node, "action/post.js")
	if code != 0 || !strings.Contains(so, "revoked") || strings.Contains(so+se, tok) {
		t.Fatalf("post.js: exit %d\n%s\n%s", code, so, se)
	}
	if w.introspect(t, tok) {
		t.Fatal("token still active after the post step")
	}
	if code, _ := w.gateway(t, tok, "/github-api/repos/acme/app"); code != 401 {
		t.Errorf("gateway after revoke: %d, want 401", code)
	}
	if _, err := os.Stat(ghEnv["MAYFLY_CACERT"]); !os.IsNotExist(err) {
		t.Errorf("temporary CA file not removed: %v", err)
	}

	// A refused grant fails the step and leaves nothing to revoke.
	for _, k := range []string{"GITHUB_ENV", "GITHUB_STATE"} {
		_ = os.WriteFile(files[k], nil, 0o600)
	}
	refused := append(append([]string{}, env...), "INPUT_GRANTS=nope")
	so, se, code = runTool(t, "..", refused, node, "action/index.js")
	if code != 1 || !strings.Contains(se, "invalid_scope") || !strings.Contains(so, "::error::") {
		t.Errorf("refused: exit %d\n%s\n%s", code, so, se)
	}
	if b, _ := os.ReadFile(files["GITHUB_STATE"]); len(b) != 0 {
		t.Errorf("state written on refusal: %q", b)
	}
}

// gitlabJob is the part of a job of the GitLab component
// (templates/mayfly.yml) the test runs.
type gitlabJob struct {
	Extends      string                       `yaml:"extends"`
	IDTokens     map[string]map[string]string `yaml:"id_tokens"`
	Variables    map[string]string            `yaml:"variables"`
	BeforeScript []string                     `yaml:"before_script"`
	Script       []string                     `yaml:"script"`
	AfterScript  []string                     `yaml:"after_script"`
}

func loadGitLabTemplate(t *testing.T) map[string]gitlabJob {
	t.Helper()
	return loadGitLabComponent(t, nil)
}

// gitlabSpec is the component's header document.
type gitlabSpec struct {
	Spec struct {
		Inputs map[string]struct {
			Description string   `yaml:"description"`
			Default     *string  `yaml:"default"`
			Regex       string   `yaml:"regex"`
			Options     []string `yaml:"options"`
		} `yaml:"inputs"`
	} `yaml:"spec"`
}

// loadGitLabComponent reads templates/mayfly.yml as GitLab does for an
// include with inputs: the spec document first, then the jobs with every
// $[[ inputs.NAME ]] replaced by the given input or its default, each
// checked against the input's regex or options.
func loadGitLabComponent(t *testing.T, inputs map[string]string) map[string]gitlabJob {
	t.Helper()
	b, err := os.ReadFile("../templates/mayfly.yml")
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(b), "\n---\n")
	if !ok {
		t.Fatal("the component has no spec document")
	}
	var spec gitlabSpec
	dec := yaml.NewDecoder(strings.NewReader(head))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil {
		t.Fatalf("component spec: %v", err)
	}
	for name := range inputs {
		if _, ok := spec.Spec.Inputs[name]; !ok {
			t.Fatalf("the component has no input %q", name)
		}
	}
	var bad []string
	ref := regexp.MustCompile(`\$\[\[\s*inputs\.([a-z_]+)\s*\]\]`)
	body = ref.ReplaceAllStringFunc(body, func(m string) string {
		name := ref.FindStringSubmatch(m)[1]
		in, ok := spec.Spec.Inputs[name]
		if !ok {
			bad = append(bad, "unknown input "+name)
			return m
		}
		v, given := inputs[name]
		if !given {
			if in.Default == nil {
				bad = append(bad, "input "+name+" has no default")
				return m
			}
			v = *in.Default
		}
		if in.Regex != "" && !regexp.MustCompile(in.Regex).MatchString(v) {
			bad = append(bad, fmt.Sprintf("input %s=%q does not match %s", name, v, in.Regex))
		}
		if len(in.Options) > 0 && !slices.Contains(in.Options, v) {
			bad = append(bad, fmt.Sprintf("input %s=%q is not one of %v", name, v, in.Options))
		}
		return v
	})
	if len(bad) > 0 {
		t.Fatalf("component inputs: %v", bad)
	}
	dec = yaml.NewDecoder(strings.NewReader(body))
	dec.KnownFields(true)
	var jobs map[string]gitlabJob
	if err := dec.Decode(&jobs); err != nil {
		t.Fatalf("template is not the expected YAML: %v", err)
	}
	for name, j := range jobs {
		if !strings.HasPrefix(name, ".") {
			t.Errorf("job %s is not hidden: it would run in every pipeline that includes the template", name)
		}
		if j.Extends != "" {
			if _, ok := jobs[j.Extends]; !ok {
				t.Errorf("%s extends unknown %s", name, j.Extends)
			}
		}
	}
	return jobs
}

// resolve applies extends the way GitLab does for these keys (a child's
// list replaces the parent's; variables and id_tokens merge).
func resolve(jobs map[string]gitlabJob, name string) gitlabJob {
	j := jobs[name]
	if j.Extends == "" {
		return j
	}
	p := resolve(jobs, j.Extends)
	if j.IDTokens == nil {
		j.IDTokens = p.IDTokens
	}
	vars := map[string]string{}
	for k, v := range p.Variables {
		vars[k] = v
	}
	for k, v := range j.Variables {
		vars[k] = v
	}
	j.Variables = vars
	if j.BeforeScript == nil {
		j.BeforeScript = p.BeforeScript
	}
	if j.Script == nil {
		j.Script = p.Script
	}
	if j.AfterScript == nil {
		j.AfterScript = p.AfterScript
	}
	return j
}

// TestGitLabTemplateE2E runs the template's scripts under sh like a runner:
// before_script and script in one shell, after_script in another.
func TestGitLabTemplateE2E(t *testing.T) {
	sh := needTool(t, "sh")
	jobs := loadGitLabTemplate(t)
	for _, name := range []string{".mayfly-id-token", ".mayfly", ".mayfly-example-curl", ".mayfly-example-exec"} {
		if _, ok := jobs[name]; !ok {
			t.Fatalf("template has no %s", name)
		}
	}
	if aud := resolve(jobs, ".mayfly").IDTokens["MAYFLY_ID_TOKEN"]["aud"]; aud != "$MAYFLY_AUDIENCE" {
		t.Errorf(".mayfly id_tokens aud %q", aud)
	}
	for _, name := range []string{".mayfly", ".mayfly-example-curl"} {
		if len(resolve(jobs, name).AfterScript) == 0 {
			t.Errorf("%s has no after_script", name)
		}
	}
	w := newCIWorld(t)
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "mayfly")); err != nil {
		t.Fatal(err)
	}
	builds := t.TempDir()
	project := filepath.Join(builds, "acme", "app")
	if err := os.MkdirAll(project, 0o755); err != nil {
		t.Fatal(err)
	}
	idToken := func() string {
		tok, err := w.iss.Mint(map[string]any{"project_id": "4242", "project_path": "acme/app", "job_id": "77"}, w.n.url, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	jobEnv := func(j gitlabJob, path string, extra ...string) []string {
		env := []string{"PATH=" + path, "HOME=" + builds, "CI=true", "GITLAB_CI=true",
			"CI_PROJECT_DIR=" + project, "CI_PROJECT_ID=4242", "CI_BUILDS_DIR=" + builds,
			"MAYFLY_ADDR=" + w.n.url, "MAYFLY_AUDIENCE=" + w.n.url, "MAYFLY_CACERT=" + w.caFile,
			"XDG_STATE_HOME=" + filepath.Join(builds, "state")}
		for k, v := range j.Variables {
			env = append(env, k+"="+v)
		}
		return append(env, extra...)
	}
	script := func(parts ...[]string) string {
		var all []string
		for _, p := range parts {
			all = append(all, p...)
		}
		return strings.Join(all, "\n")
	}
	stateDir := project + ".tmp/mayfly"
	path := bin + string(os.PathListSeparator) + os.Getenv("PATH")

	// .mayfly-example-curl: login, curl through the gateway, masked output;
	// then after_script in a new shell revokes.
	t.Run("curl", func(t *testing.T) {
		j := resolve(jobs, ".mayfly-example-curl")
		tokFile := filepath.Join(builds, "seen-token")
		body := script(j.BeforeScript, []string{`printf '%s' "$MAYFLY_TOKEN" > "$SEEN"`, `[ -z "${MAYFLY_ID_TOKEN:-}" ] || { echo "ID token left in the environment" >&2; exit 9; }`},
			j.Script, []string{`echo "token: $MAYFLY_TOKEN" | mayfly mask --env MAYFLY_TOKEN`})
		env := jobEnv(j, path, "MAYFLY_ID_TOKEN="+idToken(), "SEEN="+tokFile)
		so, se, code := runTool(t, project, env, sh, "-c", body)
		if code != 0 {
			t.Fatalf("before_script+script: exit %d\n%s\n%s\nserver:\n%s", code, so, se, w.n.logs)
		}
		b, _ := os.ReadFile(tokFile)
		tok := string(b)
		if !strings.HasPrefix(tok, "mfy_") || strings.Contains(so+se, tok) {
			t.Fatalf("token %q, output\n%s\n%s", tok, so, se)
		}
		if !strings.Contains(so, `"id":4242`) || !strings.Contains(so, "token: ***") {
			t.Errorf("script output: %s", so)
		}
		fi, err := os.Stat(filepath.Join(stateDir, "env"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file: %v %v", fi, err)
		}
		if !w.introspect(t, tok) {
			t.Fatal("token not active during the script")
		}
		so, se, code = runTool(t, project, jobEnv(j, path), sh, "-c", script(j.AfterScript))
		if code != 0 || !strings.Contains(so, "revoked") || strings.Contains(so+se, tok) {
			t.Fatalf("after_script: exit %d\n%s\n%s", code, so, se)
		}
		if w.introspect(t, tok) {
			t.Fatal("token active after after_script")
		}
		if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
			t.Errorf("state dir left: %v", err)
		}
	})

	// The after_script without curl revokes through POST /v1/leaks.
	t.Run("no-curl", func(t *testing.T) {
		j := resolve(jobs, ".mayfly")
		tools := t.TempDir()
		for _, name := range []string{"sh", "sed", "rm", "mkdir", "cat"} {
			p, err := exec.LookPath(name)
			if err != nil {
				t.Skipf("%s: %v", name, err)
			}
			if err := os.Symlink(p, filepath.Join(tools, name)); err != nil {
				t.Fatal(err)
			}
		}
		_ = os.Symlink(binary, filepath.Join(tools, "mayfly"))
		tokFile := filepath.Join(builds, "seen-token-2")
		env := jobEnv(j, tools, "MAYFLY_GRANTS=gitlab-read", "MAYFLY_ID_TOKEN="+idToken(), "SEEN="+tokFile)
		so, se, code := runTool(t, project, env, sh, "-c", script(j.BeforeScript, []string{`printf '%s' "$MAYFLY_TOKEN" > "$SEEN"`}))
		if code != 0 {
			t.Fatalf("before_script: exit %d\n%s\n%s", code, so, se)
		}
		b, _ := os.ReadFile(tokFile)
		tok := string(b)
		if !w.introspect(t, tok) {
			t.Fatal("not active")
		}
		so, se, code = runTool(t, project, jobEnv(j, tools), sh, "-c", script(j.AfterScript))
		if code != 0 || !strings.Contains(so, "revoked") || strings.Contains(so+se, tok) {
			t.Fatalf("after_script: exit %d\n%s\n%s", code, so, se)
		}
		if w.introspect(t, tok) {
			t.Fatal("token active after after_script (no curl)")
		}
	})

	// A refused login fails before_script and leaves no state.
	t.Run("refused", func(t *testing.T) {
		j := resolve(jobs, ".mayfly")
		env := jobEnv(j, path, "MAYFLY_GRANTS=nope", "MAYFLY_ID_TOKEN="+idToken())
		_, se, code := runTool(t, project, env, sh, "-c", script(j.BeforeScript, []string{"echo script-ran"}))
		if code != 1 || !strings.Contains(se, "invalid_scope") {
			t.Fatalf("refused: exit %d %s", code, se)
		}
		if _, err := os.Stat(filepath.Join(stateDir, "env")); !os.IsNotExist(err) {
			t.Errorf("state left after a refused login: %v", err)
		}
		_, _, code = runTool(t, project, jobEnv(j, path), sh, "-c", script(j.AfterScript))
		if code != 0 {
			t.Errorf("after_script with nothing to revoke: exit %d", code)
		}
	})

	// .mayfly-example-exec: mayfly exec exchanges, masks and revokes.
	t.Run("exec", func(t *testing.T) {
		j := resolve(jobs, ".mayfly-example-exec")
		env := jobEnv(j, path, "MAYFLY_ID_TOKEN="+idToken())
		so, se, code := runTool(t, project, env, sh, "-c", script(j.BeforeScript, j.Script))
		if code != 0 || !strings.Contains(so, `"id":4242`) {
			t.Fatalf("exec job: exit %d\n%s\n%s", code, so, se)
		}
		if n := w.activeLeases(t, "gitlab-read"); n != 0 {
			t.Errorf("%d live gitlab-read leases after the exec job", n)
		}
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.upAuth {
		if a != "Bearer "+upstreamSecret {
			t.Errorf("upstream saw %q", a)
		}
	}
}

// TestCIDocsExamples checks the YAML examples of docs/ci-*.md: every yaml
// block parses, and every policy (a block with issuers:) passes
// `mayfly policy check`.
func TestCIDocsExamples(t *testing.T) {
	fence := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	for _, doc := range []string{"ci-github.md", "ci-gitlab.md", "ci-generic-oidc.md"} {
		b, err := os.ReadFile(filepath.Join("..", "docs", doc))
		if err != nil {
			t.Fatal(err)
		}
		blocks := fence.FindAllStringSubmatch(string(b), -1)
		if len(blocks) == 0 {
			t.Errorf("%s: no yaml examples", doc)
		}
		policies := 0
		for i, m := range blocks {
			var v any
			if err := yaml.Unmarshal([]byte(m[1]), &v); err != nil {
				t.Errorf("%s: yaml block %d: %v\n%s", doc, i+1, err, m[1])
				continue
			}
			if top, ok := v.(map[string]any); ok {
				if _, ok := top["issuers"]; ok {
					policies++
					f := filepath.Join(t.TempDir(), "policy.yaml")
					if err := os.WriteFile(f, []byte(m[1]), 0o600); err != nil {
						t.Fatal(err)
					}
					if so, se, code := run(t, nil, "", "policy", "check", f); code != 0 {
						t.Errorf("%s: policy block %d: exit %d %s %s", doc, i+1, code, so, se)
					}
				}
			}
		}
		if policies == 0 {
			t.Errorf("%s: no policy example", doc)
		}
	}
}
