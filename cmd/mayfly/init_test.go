package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// The export line init prints is pasted into another shell, which may be in
// another directory: its MAYFLY_CACERT names the CA file from anywhere, as
// one shell word even when the path has a space.
func TestInitPrintsAnExportLineThatWorksElsewhere(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the line is for sh")
	}
	work := filepath.Join(t.TempDir(), "my work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)
	out, stderr, code := runCLI(t, "", "init", "--data-dir", "./data")
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	line := regexp.MustCompile(`(?m)^\s*(export MAYFLY_ADDR=.*)$`).FindStringSubmatch(out)
	if line == nil {
		t.Fatalf("init printed no export line:\n%s", out)
	}
	sh := exec.Command("sh", "-c", line[1]+` && test -f "$MAYFLY_CACERT" && echo ok`)
	sh.Dir = t.TempDir() // another shell, elsewhere
	if got, err := sh.CombinedOutput(); err != nil || string(got) != "ok\n" {
		t.Errorf("%s, run in another directory: %v %s", line[1], err, got)
	}
}

// No help text shows a DSN from the environment: MAYFLY_POSTGRES holds a
// password, and `mayfly init --help` in a CI job would print it as the
// flag's default.
func TestHelpNeverShowsMAYFLY_POSTGRES(t *testing.T) {
	const pw = "PLANTEDdsnPassw0rd" // mayfly:allow
	t.Setenv("MAYFLY_POSTGRES", "postgres://mayfly:"+pw+"@db.internal/mayfly")
	walk(newRootCmd(), func(c *cobra.Command) {
		path := strings.Fields(c.CommandPath())[1:]
		out, errOut, _ := runCLI(t, "", append(path, "--help")...)
		if strings.Contains(out+errOut, pw) {
			t.Errorf("%s --help shows MAYFLY_POSTGRES's password", c.CommandPath())
		}
	})
}

// init on PostgreSQL — by --postgres or by a MAYFLY_POSTGRES left in the
// environment — says so: the store is then not the data dir's file, and
// the server must be started with the same DSN.
func TestInitSaysItUsedPostgreSQL(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	t.Setenv("MAYFLY_POSTGRES", dsn)
	out, errOut, code := runCLI(t, "", "init", "--data-dir", filepath.Join(t.TempDir(), "data"))
	if code != exitOK {
		t.Fatalf("init: exit %d %s", code, errOut)
	}
	if !strings.Contains(out, "PostgreSQL") || !strings.Contains(out, "MAYFLY_POSTGRES") {
		t.Errorf("init on PostgreSQL from MAYFLY_POSTGRES printed:\n%s\nwant it to say the store is PostgreSQL, from MAYFLY_POSTGRES", out)
	}
}

// The first admin token expires like any other (90 days): init says when,
// and what to do before then, where the user reads the token, not only in
// the README.
func TestInitSaysWhenTheFirstTokenExpires(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	day := func() string { return time.Now().Add(90 * 24 * time.Hour).UTC().Format("2006-01-02") }
	before := day()
	out, stderr, code := runCLI(t, "", "init", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	after := day() // init may run across midnight
	if !strings.Contains(out, "expires "+before) && !strings.Contains(out, "expires "+after) || !strings.Contains(out, "mayfly admin token create") {
		t.Fatalf("init does not say when the first token expires (%s) and what to do:\n%s", after, out)
	}
	out, _, code = runCLI(t, "", "init", "--data-dir", filepath.Join(t.TempDir(), "data"), "--json")
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || len(v) != 2 || v["admin_token"] == nil || v["ca_file"] == nil {
		t.Fatalf("init --json is no longer SPEC §1's two fields: %d %v %s", code, err, out)
	}
}
