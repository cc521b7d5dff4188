package main

import (
	"crypto/sha256"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// oneLineErr checks that stderr is exactly one "mayfly: …" line.
func oneLineErr(t *testing.T, args []string, stderr string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "mayfly: ") || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("%v: stderr is not one line: %q", args, stderr)
	}
	if strings.HasPrefix(stderr, "mayfly: mayfly") {
		t.Errorf("%v: program name repeated: %q", args, stderr)
	}
}

func TestUsageErrorsAreOneLineExit2(t *testing.T) {
	notRepo := t.TempDir()
	badCfg := filepath.Join(t.TempDir(), "mayfly.yaml")
	if err := os.WriteFile(badCfg, []byte("data_dir: /nonexistent\nbogus_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scna"}, "scan"},                                       // cobra's suggestion spans lines
		{[]string{"--bogus"}, "unknown flag: --bogus"},                   // was "mayfly: mayfly: …"
		{[]string{"init", "--bogus"}, "init: unknown flag"},              // was "mayfly: mayfly init: …"
		{[]string{"policy", "chek", "x.yaml"}, `unknown command "chek"`}, // was help and exit 0
		{[]string{"admin", "token", "frob"}, "admin token: unknown command"},
		{[]string{"policy", "check"}, "policy check: requires at least 1 arg"},
		{[]string{"server", "--config", badCfg}, "bogus_key"}, // the YAML decoder's error spans lines
		// Named by the command, as its other errors are, and saying how
		// to scan a folder that is no repository.
		{[]string{"scan", "--git", notRepo}, "scan: " + notRepo + ": not a git repository (--git and --staged read"},
		{[]string{"scan", "--staged", notRepo}, "scan: " + notRepo + ": not a git repository (--git and --staged read"},
	} {
		stdout, stderr, code := runCLI(t, "", tc.args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stdout %q, stderr %q)", tc.args, code, exitUsage, stdout, stderr)
		}
		oneLineErr(t, tc.args, stderr)
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q does not mention %q", tc.args, stderr, tc.want)
		}
	}
	// A group command without arguments still shows its help.
	if stdout, _, code := runCLI(t, "", "policy"); code != exitOK || !strings.Contains(stdout, "Available Commands") {
		t.Errorf("mayfly policy: exit %d, stdout %q", code, stdout)
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("x", 2*maxErrorLine)
	for in, want := range map[string]string{
		"plain":                             "plain",
		"yaml: unmarshal errors:\n  line 5": "yaml: unmarshal errors: line 5",
		"a\n\nb\n":                          "a; b",
		"Did you mean this?\n\tscan\n":      "Did you mean this? scan",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
	if got := oneLine(long); len([]rune(got)) != maxErrorLine+1 {
		t.Errorf("oneLine(long) has %d runes", len([]rune(got)))
	}
}

// A data dir whose server uses PostgreSQL has no mayfly.db: verifying it
// without --postgres must not create an empty SQLite log and call it intact.
func TestAuditVerifyOfflineMissingDatabase(t *testing.T) {
	dir := offlineDataDir(t)
	if _, stderr, code := runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state"); code != exitOK {
		t.Fatalf("fresh data dir: exit %d, %s", code, stderr)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "mayfly.db*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, code := runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state")
	if code != exitUsage {
		t.Fatalf("missing database: exit %d, want %d (stdout %q, stderr %q)", code, exitUsage, stdout, stderr)
	}
	oneLineErr(t, []string{"audit", "verify"}, stderr)
	if !strings.Contains(stderr, "--postgres") {
		t.Errorf("stderr %q does not point at --postgres", stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "mayfly.db")); err == nil {
		t.Error("audit verify created mayfly.db in the data dir")
	}
}

// Offline verification reads the data dir and changes nothing in it: not
// the database's bytes, not its mode, not its schema (an older one is read
// as it is, never migrated); a schema newer than this mayfly is refused.
func TestAuditVerifyOfflineChangesNothing(t *testing.T) {
	dir := offlineDataDir(t)
	dbPath := filepath.Join(dir, "mayfly.db")
	// A mode the server would not set: the server sets 0600 on open.
	if err := os.Chmod(dbPath, 0o640); err != nil {
		t.Fatal(err)
	}
	fingerprint := func() string {
		b, err := os.ReadFile(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x %v", sha256.Sum256(b), fi.Mode())
	}
	// addSchema changes the schema version the database records by d.
	addSchema := func(d int) {
		db, err := sql.Open("sqlite", "file:"+dbPath)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v []byte
		if err := db.QueryRow(`SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(string(v))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`UPDATE meta SET value = ? WHERE key = 'schema_version'`, []byte(strconv.Itoa(n+d))); err != nil {
			t.Fatal(err)
		}
	}
	verify := func(name string) {
		t.Helper()
		before := fingerprint()
		stdout, stderr, code := runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state")
		if code != exitOK || !strings.Contains(stdout, "intact") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
		}
		if after := fingerprint(); after != before {
			t.Fatalf("%s: verify changed the database: %s, was %s", name, after, before)
		}
	}
	verify("current schema")
	// Recorded as one version older: a verifier that migrated would
	// apply the last step again (and fail on its existing objects).
	addSchema(-1)
	verify("older schema")

	addSchema(+2)
	before := fingerprint()
	_, stderr, code := runCLI(t, "", "audit", "verify", "--data-dir", dir, "--no-state")
	if code != exitUsage || !strings.Contains(stderr, "newer than this mayfly knows") {
		t.Fatalf("newer schema: exit %d, stderr %q", code, stderr)
	}
	oneLineErr(t, []string{"audit", "verify"}, stderr)
	if after := fingerprint(); after != before {
		t.Fatalf("verify changed a database of a newer schema: %s, was %s", after, before)
	}
}

func TestLeasesListStateAndJSON(t *testing.T) {
	now := time.Now().UTC()
	body := `{"leases":[
 {"lease_id":"lse_live","issuer":"dev","subject":"s","job":"1","grants":["g"],"issued_at":"` + now.Add(-time.Minute).Format(time.RFC3339Nano) + `","expires_at":"` + now.Add(time.Hour).Format(time.RFC3339Nano) + `","source":"127.0.0.1","uses":1,"claims":{"repository":"acme/app"},"bind_source_ip":true},
 {"lease_id":"lse_expired","issuer":"dev","subject":"s","job":"2","grants":["g"],"issued_at":"` + now.Add(-time.Hour).Format(time.RFC3339Nano) + `","expires_at":"` + now.Add(-time.Minute).Format(time.RFC3339Nano) + `","source":"127.0.0.1","uses":0},
 {"lease_id":"lse_revoked","issuer":"dev","subject":"s","job":"3","grants":["g"],"issued_at":"` + now.Add(-time.Minute).Format(time.RFC3339Nano) + `","expires_at":"` + now.Add(time.Hour).Format(time.RFC3339Nano) + `","source":"127.0.0.1","uses":0,"revoked_at":"` + now.Format(time.RFC3339Nano) + `"}
]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/leases" || r.Header.Get("Authorization") == "" {
			http.Error(w, `{"error":"not_found"}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	adminEnv(t, srv.URL)

	stdout, stderr, code := runCLI(t, "", "leases", "list")
	if code != exitOK {
		t.Fatalf("leases list: exit %d, %s", code, stderr)
	}
	for id, state := range map[string]string{"lse_live": "live", "lse_expired": "expired", "lse_revoked": "revoked"} {
		var line string
		for _, l := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(l, id+" ") {
				line = l
			}
		}
		if f := strings.Fields(line); len(f) == 0 || f[len(f)-1] != state {
			t.Errorf("%s: row %q, want state %s", id, line, state)
		}
	}

	stdout, stderr, code = runCLI(t, "", "leases", "list", "--json")
	if code != exitOK {
		t.Fatalf("leases list --json: exit %d, %s", code, stderr)
	}
	for _, want := range []string{`"claims"`, `"repository": "acme/app"`, `"bind_source_ip": true`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--json output lacks %s:\n%s", want, stdout)
		}
	}
}
