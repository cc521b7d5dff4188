package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/server"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// testLog is a real audit log on SQLite in a temporary folder.
func testLog(t *testing.T, signer string, n int) *auditlog.Log {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "a.db")})
	if err != nil {
		t.Fatal(err)
	}
	l, err := auditlog.Open(ctx, db, signer, auditlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(ctx); _ = db.Close() })
	grow(t, l, n)
	return l
}

func grow(t *testing.T, l *auditlog.Log, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := l.Add(ctx, audit.Event{Type: audit.TypeGateway, Method: "GET", Path: "/x/" + strconv.Itoa(i), Status: 200}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// auditServer serves a log's audit endpoints; the log can be swapped and
// one entry tampered with.
type auditServer struct {
	*httptest.Server
	mu     sync.Mutex
	log    *auditlog.Log
	tamper int64 // index of an entry served altered, -1 none
}

func newAuditServer(t *testing.T, l *auditlog.Log) *auditServer {
	as := &auditServer{log: l, tamper: -1}
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(401)
			return
		}
		as.mu.Lock()
		l, tamper := as.log, as.tamper
		as.mu.Unlock()
		ctx := r.Context()
		q := r.URL.Query()
		num := func(k string) int64 { n, _ := strconv.ParseInt(q.Get(k), 10, 64); return n }
		switch r.URL.Path {
		case "/v1/audit/key":
			w.Write([]byte(l.VerifierKey() + "\n"))
		case "/v1/audit/checkpoint":
			cp, _ := l.Checkpoint(ctx)
			w.Write(cp)
		case "/v1/audit/entries":
			start := num("start")
			es, _ := l.Entries(ctx, start, int(num("limit")))
			for i, e := range es {
				if start+int64(i) == tamper {
					e = bytes.Replace(e, []byte(`"status":200`), []byte(`"status":201`), 1)
				}
				w.Write(append(e, '\n'))
			}
		case "/v1/audit/proof/inclusion":
			p, err := l.InclusionProof(ctx, num("index"), num("size"))
			if err != nil {
				w.WriteHeader(400)
				return
			}
			w.Write(audit.MarshalProof(p))
		case "/v1/audit/proof/consistency":
			p, err := l.ConsistencyProof(ctx, num("old"), num("new"))
			if err != nil {
				w.WriteHeader(400)
				return
			}
			w.Write(audit.MarshalProof(p))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(as.Close)
	return as
}

func (as *auditServer) set(l *auditlog.Log, tamper int64) {
	as.mu.Lock()
	as.log, as.tamper = l, tamper
	as.mu.Unlock()
}

// servedLog is a real audit log of n entries under a new signing key,
// served by an auditServer that the CLI's environment names.
func servedLog(t *testing.T, n int) (signer string, l *auditlog.Log, as *auditServer) {
	t.Helper()
	signer, _, err := audit.GenerateKey(audit.DefaultOrigin)
	if err != nil {
		t.Fatal(err)
	}
	l = testLog(t, signer, n)
	as = newAuditServer(t, l)
	adminEnv(t, as.URL)
	return signer, l, as
}

// readState reads the state file audit verify keeps at path.
func readState(t *testing.T, path string) verifyState {
	t.Helper()
	var st verifyState
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state %s: %v", b, err)
	}
	return st
}

// offlineDataDir is an initialised data dir on embedded SQLite, for the
// offline commands (--data-dir).
func offlineDataDir(t *testing.T) string {
	t.Helper()
	t.Setenv("MAYFLY_POSTGRES", "")
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := server.Init(context.Background(), server.InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func adminEnv(t *testing.T, addr string) {
	tok, _ := token.New(token.Admin)
	t.Setenv("MAYFLY_ADDR", addr)
	t.Setenv("MAYFLY_TOKEN", tok)
	t.Setenv("MAYFLY_CACERT", "")
	t.Setenv("XDG_STATE_HOME", t.TempDir())
}

func TestAuditVerifyRemoteState(t *testing.T) {
	signer, logA, as := servedLog(t, 10)
	state := filepath.Join(t.TempDir(), "v.state")

	// First run: intact, state written with the pinned key.
	out, errOut, code := runCLI(t, "", "audit", "verify", "--state", state)
	if code != 0 || !strings.Contains(out, "10 entries") {
		t.Fatalf("exit %d out %q err %q", code, out, errOut)
	}
	if st := readState(t, state); st.Size != 10 || st.Key != logA.VerifierKey() {
		t.Fatalf("state %+v", st)
	}

	// The log grows: still intact (and the consistency proof checks out).
	grow(t, logA, 5)
	if out, errOut, code := runCLI(t, "", "audit", "verify", "--state", state, "--json"); code != 0 || !strings.Contains(out, `"size": 15`) {
		t.Fatalf("exit %d out %q err %q", code, out, errOut)
	}

	// A tampered entry: exit 1 naming its index; the state is not advanced.
	as.set(logA, 7)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 1 || !strings.Contains(errOut, "index 7") {
		t.Fatalf("tampered: exit %d err %q", code, errOut)
	}

	// A rollback: a log with the same key but fewer entries than seen.
	logB := testLog(t, signer, 12)
	as.set(logB, -1)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 1 || !strings.Contains(errOut, "verification failed") {
		t.Fatalf("rollback: exit %d err %q", code, errOut)
	}
	// Without the state the shorter log alone looks fine: the state is what catches it.
	if _, _, code := runCLI(t, "", "audit", "verify", "--no-state"); code != 0 {
		t.Fatalf("no-state: exit %d", code)
	}

	// A different history of the same length as seen: caught too.
	logC := testLog(t, signer, 20)
	as.set(logC, -1)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 1 || !strings.Contains(errOut, "index 0") {
		t.Fatalf("forked: exit %d err %q", code, errOut)
	}

	// A new signing key: refused against the pinned one.
	other, _, _ := audit.GenerateKey(audit.DefaultOrigin)
	as.set(testLog(t, other, 16), -1)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 1 || !strings.Contains(errOut, "key changed") {
		t.Fatalf("new key: exit %d err %q", code, errOut)
	}

	// Back to the honest log: intact again.
	as.set(logA, -1)
	if _, errOut, code := runCLI(t, "", "audit", "verify", "--state", state); code != 0 {
		t.Fatalf("honest: exit %d err %q", code, errOut)
	}
}

func TestAuditExportTailProve(t *testing.T) {
	_, l, as := servedLog(t, 2500)
	ctx := context.Background()

	out, _, code := runCLI(t, "", "audit", "export", "--since", "990")
	want, _ := l.Entries(ctx, 990, 2000)
	if code != 0 || out != string(bytes.Join(want, []byte("\n")))+"\n" {
		t.Fatalf("export: exit %d, %d bytes", code, len(out))
	}
	out, _, code = runCLI(t, "", "audit", "tail", "-n", "3")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.HasPrefix(out, `{"index":2497,`) {
		t.Fatalf("tail: exit %d out %q", code, out)
	}
	out, errOut, code := runCLI(t, "", "audit", "prove", "--index", "1234")
	if code != 0 || !strings.Contains(out, "verified: entry 1234 is in the signed tree of size 2500") {
		t.Fatalf("prove: exit %d out %q err %q", code, out, errOut)
	}
	as.set(l, 1234)
	if _, errOut, code := runCLI(t, "", "audit", "prove", "--index", "1234"); code != 1 || !strings.Contains(errOut, "NOT proven") {
		t.Fatalf("prove tampered: exit %d err %q", code, errOut)
	}
	if _, _, code := runCLI(t, "", "audit", "prove", "--index", "5000"); code != 1 {
		t.Fatalf("prove beyond: exit %d", code)
	}
	if _, _, code := runCLI(t, "", "audit", "prove", "--index", "1", "--size", "10"); code != 2 {
		t.Fatalf("prove other size: exit %d", code)
	}
}

// A server answers a page with fewer entries than asked for though more
// follow once they pass auditlog.MaxPageBytes: export, tail and verify
// read on from the last entry they got. Before, any short page was taken
// for the log's end: export and tail stopped early, and verify, short of
// the checkpoint's size, failed. A short page under auditPageCutBytes is
// still the end (a server cannot keep them reading with one more line).
func TestAuditLargePagesFollowed(t *testing.T) {
	_, l, _ := servedLog(t, 0)
	ctx := context.Background()
	big := strings.Repeat("p", audit.MaxEntrySize-1024)
	n := auditlog.MaxPageBytes/len(big) + 20
	for i := 0; i < n; i++ {
		// Waited for: Sync signs what is durable, and verify checks up
		// to the signed checkpoint.
		if _, err := l.Add(ctx, audit.Event{Type: audit.TypeGateway, Method: "GET", Path: "/" + strconv.Itoa(i) + big, Status: 200}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.Entries(ctx, 0, auditPageSize); len(first) >= n {
		t.Fatalf("precondition: the first page holds all %d entries", n)
	}
	want, _ := l.Entries(ctx, 0, n)
	for len(want) < n {
		more, _ := l.Entries(ctx, int64(len(want)), n)
		want = append(want, more...)
	}

	out, errOut, code := runCLI(t, "", "audit", "export")
	if code != 0 || out != string(bytes.Join(want, []byte("\n")))+"\n" {
		t.Fatalf("export: exit %d, %d of %d lines, err %q", code, strings.Count(out, "\n"), n, errOut)
	}
	out, errOut, code = runCLI(t, "", "audit", "tail", "-n", strconv.Itoa(n))
	if code != 0 || strings.Count(out, "\n") != n {
		t.Fatalf("tail: exit %d, %d of %d lines, err %q", code, strings.Count(out, "\n"), n, errOut)
	}
	out, errOut, code = runCLI(t, "", "audit", "verify", "--no-state")
	if code != 0 || !strings.Contains(out, strconv.Itoa(n)+" entries") {
		t.Fatalf("verify: exit %d out %q err %q", code, out, errOut)
	}
}

func TestAdminClientErrors(t *testing.T) {
	var gotBody map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/secrets/gh-token" && r.Method == "PUT":
			_ = json.NewDecoder(r.Body).Decode(&gotBody)
			w.Write([]byte(`{"name":"gh-token","version":3}`))
		case r.URL.Path == "/v1/secrets/forbidden":
			w.WriteHeader(403)
			w.Write([]byte(`{"error":"forbidden","error_description":"role operator\n is too weak"}`))
		case r.URL.Path == "/v1/secrets/broken":
			w.WriteHeader(503)
			w.Write([]byte(`<html>down</html>`))
		}
	}))
	t.Cleanup(srv.Close)
	adminEnv(t, srv.URL)
	vf := filepath.Join(t.TempDir(), "v")
	_ = os.WriteFile(vf, []byte("from-file-value\r\n"), 0o600)

	tests := []struct {
		name, stdin string
		args        []string
		code        int
		out, err    string
		value       string
	}{
		{name: "stdin", stdin: "s3cret-value\n", args: []string{"secret", "put", "gh-token"}, out: `stored secret "gh-token" version 3`, value: "s3cret-value"},
		{name: "file", args: []string{"secret", "put", "gh-token", "--value-file", vf}, value: "from-file-value"},
		{name: "keep newline", stdin: "v\n", args: []string{"secret", "put", "gh-token", "--keep-newline"}, value: "v\n"},
		{name: "--value refused", args: []string{"secret", "put", "gh-token", "--value", "oops"}, code: 2, err: "refusing --value"},
		{name: "empty", stdin: "\n", args: []string{"secret", "put", "gh-token"}, code: 2, err: "empty"},
		{name: "403", args: []string{"secret", "show", "forbidden"}, code: 1, err: "forbidden: role operator is too weak (HTTP 403)"},
		{name: "503", args: []string{"secret", "show", "broken"}, code: 2, err: "HTTP 503"},
		{name: "no admin token", args: []string{"secret", "list"}, code: 2, err: "MAYFLY_TOKEN"},
		{name: "bad role", args: []string{"admin", "token", "create", "x", "--role", "root"}, code: 2, err: "unknown role"},
		{name: "revoke both", args: []string{"leases", "revoke", "--lease-id", "lse_1", "--grant", "g"}, code: 2, err: "cannot be combined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gotBody = nil
			if tc.name == "no admin token" {
				t.Setenv("MAYFLY_TOKEN", "")
			}
			out, errOut, code := runCLI(t, tc.stdin, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
				t.Fatalf("exit %d out %q err %q", code, out, errOut)
			}
			if tc.value != "" && gotBody["value"] != tc.value {
				t.Errorf("value sent %q, want %q", gotBody["value"], tc.value)
			}
			if strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
				t.Errorf("more than one error line: %q", errOut)
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	_ = os.WriteFile(good, []byte(`issuers:
  dev:
    url: http://127.0.0.1:8700
    audience: https://mayfly.test
upstreams:
  api:
    url: https://api.example.com
    credential:
      secret: api-token
grants:
  deploy:
    upstream: api
    ttl: 10m
    allow:
      - methods: [GET]
        paths: ["/repos/**"]
    who:
      - issuer: dev
        claims:
          repository_id: "1"
`), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("grants:\n  x:\n    upstream: nope\n    ttl: 10q\n"), 0o600)
	if out, _, code := runCLI(t, "", "policy", "check", good); code != 0 || !strings.Contains(out, "policy ok: 1 issuers") {
		t.Fatalf("good: exit %d out %q", code, out)
	}
	out, errOut, code := runCLI(t, "", "policy", "check", bad)
	if code != 1 || !strings.Contains(out, "bad.yaml:") || !strings.Contains(errOut, "policy is invalid") {
		t.Fatalf("bad: exit %d out %q err %q", code, out, errOut)
	}
	if _, _, code := runCLI(t, "", "policy", "check", filepath.Join(dir, "missing.yaml")); code != 2 {
		t.Fatalf("missing: exit %d", code)
	}
}
