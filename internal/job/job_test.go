package job

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/token"
)

const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// githubServer imitates ACTIONS_ID_TOKEN_REQUEST_URL on 127.0.0.1 and
// records the audience asked.
func githubServer(t *testing.T, reqTok string, status int) (*httptest.Server, *string) {
	t.Helper()
	var aud string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer "+reqTok || r.URL.Query().Get("api-version") != "2.0" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		aud = r.URL.Query().Get("audience")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"value": jwt})
	}))
	t.Cleanup(srv.Close)
	return srv, &aud
}

func TestFindIDToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tok")
	if err := os.WriteFile(file, []byte(jwt+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("not a jwt"), 0o600)
	gh, aud := githubServer(t, "req-secret", 200)
	ghDown, _ := githubServer(t, "req-secret", 403)
	ghEnv := map[string]string{
		EnvActionsRequestURL:   gh.URL + "/token?api-version=2.0",
		EnvActionsRequestToken: "req-secret",
		EnvAddr:                "https://mayfly.example:8443/",
		EnvIDToken:             "ignored.when.github",
	}

	tests := []struct {
		name    string
		opts    IDTokenOptions
		env     map[string]string
		src     Source
		aud     string
		wantErr string
	}{
		{name: "file", opts: IDTokenOptions{File: file}, src: SourceFile},
		{name: "file wins over github", opts: IDTokenOptions{File: file}, env: ghEnv, src: SourceFile},
		{name: "file missing", opts: IDTokenOptions{File: filepath.Join(dir, "nope")}, wantErr: "reading ID token"},
		{name: "file not a jwt", opts: IDTokenOptions{File: bad}, wantErr: "not a compact JWT"},
		{name: "env var", opts: IDTokenOptions{EnvVar: "CI_ID"}, env: map[string]string{"CI_ID": " " + jwt + "\n"}, src: SourceEnv},
		{name: "env var empty", opts: IDTokenOptions{EnvVar: "CI_ID"}, wantErr: "CI_ID is empty"},
		{name: "both", opts: IDTokenOptions{File: file, EnvVar: "X"}, wantErr: "only one"},
		{name: "gitlab default", env: map[string]string{EnvIDToken: jwt}, src: SourceGitLab},
		{name: "github audience defaults to addr", env: ghEnv, src: SourceGitHub, aud: "https://mayfly.example:8443"},
		{name: "github MAYFLY_AUDIENCE", env: with(ghEnv, EnvAudience, "aud-env"), src: SourceGitHub, aud: "aud-env"},
		{name: "github --audience", opts: IDTokenOptions{Audience: "aud-flag"}, env: with(ghEnv, EnvAudience, "aud-env"), src: SourceGitHub, aud: "aud-flag"},
		{name: "github no request token", env: with(ghEnv, EnvActionsRequestToken, ""), wantErr: "ACTIONS_ID_TOKEN_REQUEST_TOKEN"},
		{name: "github refuses", env: with(ghEnv, EnvActionsRequestURL, ghDown.URL+"/?api-version=2.0"), wantErr: "HTTP 403"},
		{name: "github wrong token", env: with(ghEnv, EnvActionsRequestToken, "wrong"), wantErr: "HTTP 401"},
		{name: "github plain http off loopback", env: with(ghEnv, EnvActionsRequestURL, "http://actions.example/x"), wantErr: "not an https URL"},
		{name: "nothing", wantErr: "no ID token found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			*aud = ""
			tc.opts.Getenv = envFrom(tc.env)
			tok, src, err := FindIDToken(context.Background(), tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "req-secret") {
					t.Fatal("error contains the request token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok != jwt || src != tc.src {
				t.Fatalf("got %q from %s, want %s", tok, src, tc.src)
			}
			if *aud != tc.aud {
				t.Fatalf("audience asked %q, want %q", *aud, tc.aud)
			}
		})
	}
	if !errors.Is(func() error {
		_, _, err := FindIDToken(context.Background(), IDTokenOptions{Getenv: envFrom(nil)})
		return err
	}(), ErrNoIDToken) {
		t.Error("want ErrNoIDToken")
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

func newJobToken(t *testing.T) string {
	t.Helper()
	tok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoadDPoPKeyMissing(t *testing.T) {
	k2, created, err := LoadDPoPKey(filepath.Join(t.TempDir(), "nope"), false)
	if err == nil || created || k2 != nil {
		t.Error("missing key without create accepted")
	}
}

func TestLoadDPoPKeyRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k.pem")
	k1, created, err := LoadDPoPKey(p, true)
	if err != nil || !created {
		t.Fatal(err)
	}
	k2, created, err := LoadDPoPKey(p, true)
	if err != nil || created {
		t.Fatal(err, created)
	}
	if !k1.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k2.Public()) {
		t.Fatal("reloaded key differs")
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	_ = os.WriteFile(p, []byte("garbage"), 0o600)
	if _, _, err := LoadDPoPKey(p, true); err == nil {
		t.Error("garbage accepted")
	}
}

func TestWrite(t *testing.T) {
	tok := newJobToken(t)
	tr := &apitype.TokenResponse{AccessToken: tok, LeaseID: "lse_1"}
	raw := []byte(`{"access_token":"` + tok + `","lease_id":"lse_1"}`)
	addr := "https://m.example:8443"
	ghEnv := filepath.Join(t.TempDir(), "github_env")
	_ = os.WriteFile(ghEnv, []byte("EXISTING=1\n"), 0o600)
	tests := []struct {
		format, want, wantErr, wantFile string
		ghEnv                           string
	}{
		{format: "token", want: tok + "\n"},
		{format: "", want: tok + "\n"},
		{format: "env", want: "MAYFLY_TOKEN=" + tok + "\nMAYFLY_GATEWAY=" + addr + "/gw\n"},
		{format: "json", want: string(raw) + "\n"},
		{format: "github-env", ghEnv: ghEnv, want: "::add-mask::" + tok + "\n",
			wantFile: "EXISTING=1\nMAYFLY_TOKEN=" + tok + "\nMAYFLY_GATEWAY=" + addr + "/gw\n"},
		{format: "github-env", wantErr: "GITHUB_ENV is not set"},
		{format: "yaml", wantErr: "unknown format"},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			var out bytes.Buffer
			err := Write(Output{Stdout: &out, GitHubEnv: tc.ghEnv}, tc.format, addr, tr, raw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("stdout %q, want %q", out.String(), tc.want)
			}
			if tc.wantFile != "" {
				b, _ := os.ReadFile(tc.ghEnv)
				if string(b) != tc.wantFile {
					t.Errorf("GITHUB_ENV %q, want %q", b, tc.wantFile)
				}
			}
		})
	}
	if err := Write(Output{Stdout: new(bytes.Buffer)}, "env", addr, &apitype.TokenResponse{AccessToken: "x\nY=1"}, nil); err == nil {
		t.Error("a non-token was written")
	}
}

// The GitHub request URL may be plain http on loopback (a local test):
// that never goes through a proxy, where its bearer would cross the network
// in the clear.
func TestDefaultHTTPClientNoProxyForPlainHTTP(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	tr := DefaultHTTPClient().Transport.(*http.Transport)
	req, _ := http.NewRequest(http.MethodGet, "http://LOCALHOST:8700/token", nil)
	if p, err := tr.Proxy(req); p != nil || err != nil {
		t.Errorf("proxy %v, %v", p, err)
	}
}

// A value of the env format reads back as itself when sourced by sh:
// unchanged when sh gives none of its characters a meaning, else quoted.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	tests := []struct{ in, want string }{
		{"mfy_abc123", "mfy_abc123"},
		{"https://m.example:8443/gw", "https://m.example:8443/gw"},
		{"", ""},
		{"postgres://u:p@h/db?sslmode=verify-full&sslrootcert=system", "'postgres://u:p@h/db?sslmode=verify-full&sslrootcert=system'"},
		{"a b", "'a b'"},
		{"$(id)`id`;x|y", "'$(id)`id`;x|y'"},
		{"it's", `'it'\''s'`},
		{"a:~/b", "'a:~/b'"},
		{`\"*`, `'\"*'`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := shellQuote(tc.in)
			if got != tc.want {
				t.Fatalf("shellQuote(%q) = %q, want %q", tc.in, got, tc.want)
			}
			out, err := exec.Command(sh, "-c", "V="+got+"\nprintf '%s' \"$V\"").Output()
			if err != nil || string(out) != tc.in {
				t.Errorf("sourced: %q (%v), want %q", out, err, tc.in)
			}
		})
	}
}

// A value masked through ::add-mask:: is escaped as the runner decodes a
// workflow command's data: a server-supplied line break must not end the
// command and start another, and a literal "%0A" must be masked as itself.
func TestWriteMaskEscapes(t *testing.T) {
	tok := newJobToken(t)
	pw := "pw-100%0A-" + "\n::warning::forged\r"
	tr := &apitype.TokenResponse{AccessToken: tok, UpstreamCredentials: map[string]apitype.UpstreamCredential{"db": {Password: pw}}}
	var out bytes.Buffer
	if err := Write(Output{Stdout: &out, GitHubEnv: filepath.Join(t.TempDir(), "github_env")}, "github-env", "https://m.example", tr, nil); err != nil {
		t.Fatal(err)
	}
	want := "::add-mask::" + tok + "\n::add-mask::pw-100%250A-%0A::warning::forged%0D\n"
	if out.String() != want {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
}

// The PG* variables must connect as safely as the DSN they come with:
// PGHOST &c. without PGSSLMODE fall back to libpq's "prefer", which sends
// the minted password over an unverified connection, or none at all. What
// psql and most drivers make of PG* alone is read here with pgx's parser.
func TestCredentialEnvTLS(t *testing.T) {
	pw := "mfyp" + "_planted0123456789abcdefghijklmnopq"
	tests := []struct {
		name, dsn string
		want      map[string]string // PGSSLMODE, PGSSLROOTCERT ("" = not set)
	}{
		{"verify-full system", "postgres://mayfly_x:" + pw + "@db.example:5432/app?sslmode=verify-full&sslrootcert=system",
			map[string]string{"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "system"}},
		{"require", "postgres://mayfly_x:" + pw + "@db.example:5432/app?sslmode=require",
			map[string]string{"PGSSLMODE": "require"}},
		{"disable", "postgres://mayfly_x:" + pw + "@db.example:5432/app?sslmode=disable",
			map[string]string{"PGSSLMODE": "disable"}},
		// No sslmode: nothing set, so DATABASE_URL and PG* both follow
		// libpq's default (or the job's own PGSSLMODE).
		{"none", "postgres://mayfly_x:" + pw + "@db.example:5432/app", map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := CredentialEnv(map[string]apitype.UpstreamCredential{"app-db": {DSN: tc.dsn, Username: "mayfly_x", Password: pw}})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"PGSSLMODE", "PGSSLROOTCERT"} {
				got := ""
				for _, kv := range env {
					if kv[0] == k {
						got = kv[1]
					}
				}
				if got != tc.want[k] {
					t.Errorf("%s = %q, want %q", k, got, tc.want[k])
				}
			}
			for _, k := range []string{"PGSSLMODE", "PGSSLROOTCERT", "PGSERVICE", "PGSERVICEFILE", "PGSSLCERT", "PGSSLKEY"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			want, err := pgconn.ParseConfig(tc.dsn)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range env {
				if kv[0] != "DATABASE_URL" {
					t.Setenv(kv[0], kv[1])
				}
			}
			got, err := pgconn.ParseConfig("")
			if err != nil {
				t.Fatal(err)
			}
			if tls := func(c *pgconn.Config) [3]bool {
				plain := c.TLSConfig == nil
				for _, fb := range c.Fallbacks {
					plain = plain || fb.TLSConfig == nil
				}
				return [3]bool{c.TLSConfig == nil, plain, c.TLSConfig != nil && c.TLSConfig.InsecureSkipVerify}
			}; tls(got) != tls(want) {
				t.Errorf("PG* connect with (no TLS, plaintext fallback, unverified) = %v; the DSN with %v", tls(got), tls(want))
			}
		})
	}
}

func TestWriteCredentials(t *testing.T) {
	tok := newJobToken(t)
	gh := "ghs" + "_planted0123456789abcdefghijklmnopq"
	pw := "mfyp" + "_planted0123456789abcdefghijklmnopq"
	dsn := "postgres://mayfly_x:" + pw + "@db.example:6543/app?sslmode=require"
	tr := &apitype.TokenResponse{AccessToken: tok, UpstreamCredentials: map[string]apitype.UpstreamCredential{
		"github": {Token: gh, ExpiresAt: "2026-01-01T00:00:00Z"},
		"app-db": {DSN: dsn, Username: "mayfly_x", Password: pw, ExpiresAt: "2026-01-01T00:00:00Z"},
	}}
	addr := "https://m.example:8443"
	var out bytes.Buffer
	if err := Write(Output{Stdout: &out}, "env", addr, tr, nil); err != nil {
		t.Fatal(err)
	}
	want := "MAYFLY_TOKEN=" + tok + "\nMAYFLY_GATEWAY=" + addr + "/gw\n" +
		"DATABASE_URL='" + dsn + "'\nGH_TOKEN=" + gh + "\nPGDATABASE=app\nPGHOST=db.example\nPGPASSWORD=" + pw + "\nPGPORT=6543\nPGSSLMODE=require\nPGUSER=mayfly_x\n"
	if out.String() != want {
		t.Errorf("env:\n%s\nwant:\n%s", out.String(), want)
	}
	ghEnv := filepath.Join(t.TempDir(), "github_env")
	out.Reset()
	if err := Write(Output{Stdout: &out, GitHubEnv: ghEnv}, "github-env", addr, tr, nil); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{tok, gh, pw, dsn} {
		if !strings.Contains(out.String(), "::add-mask::"+v+"\n") {
			t.Errorf("github-env does not mask %.8s…", v)
		}
	}
	if b, _ := os.ReadFile(ghEnv); !strings.Contains(string(b), "GH_TOKEN="+gh+"\n") || !strings.Contains(string(b), "PGPASSWORD="+pw+"\n") ||
		!strings.Contains(string(b), "DATABASE_URL="+dsn+"\n") {
		t.Errorf("GITHUB_ENV lacks the credentials:\n%s", b)
	}
	// A Unix-socket DSN (host in the query, as pgrole writes it for a
	// socket admin DSN) gives its directory as PGHOST.
	sock := "postgres://mayfly_x:" + pw + "@/app?host=%2Frun%2Fpostgresql&port=5433"
	env, err := CredentialEnv(map[string]apitype.UpstreamCredential{"db": {DSN: sock}})
	if err != nil || !slices.Contains(env, [2]string{"PGHOST", "/run/postgresql"}) || !slices.Contains(env, [2]string{"PGPORT", "5433"}) ||
		!slices.Contains(env, [2]string{"PGPASSWORD", pw}) || !slices.Contains(env, [2]string{"PGDATABASE", "app"}) {
		t.Errorf("socket DSN: %v %q", err, env)
	}
	if _, err := CredentialEnv(map[string]apitype.UpstreamCredential{"db": {DSN: "postgres:///app"}}); err == nil {
		t.Error("a DSN without a host was accepted")
	}
	// Two tokens would both be GH_TOKEN: refused, nothing written.
	two := &apitype.TokenResponse{AccessToken: tok, UpstreamCredentials: map[string]apitype.UpstreamCredential{"a": {Token: gh}, "b": {Token: gh + "x"}}}
	out.Reset()
	if err := Write(Output{Stdout: &out}, "env", addr, two, nil); err == nil || !strings.Contains(err.Error(), "GH_TOKEN") || out.Len() != 0 {
		t.Errorf("two tokens: %v %q", err, out.String())
	}
}
