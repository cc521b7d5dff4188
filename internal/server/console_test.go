package server

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/console"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// The console is mounted behind the SSO session: signed out it sends the
// browser to sign in; signed in it serves every page with the strict CSP;
// a form without the session's CSRF token is refused; roles are kept.
func TestConsoleBehindSSO(t *testing.T) {
	h := newSSOHarness(t, nil)
	anon := devissuertest.Browser(t)
	anon.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest("GET", h.url+"/ui/audit", nil)
	resp, err := anon.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}

	h.iss.SetUser(devissuertest.User("audit@example.com", devissuertest.GroupAuditors))
	b := devissuertest.Browser(t)
	csrf := devissuertest.SignIn(t, b, h.url)
	for _, p := range []string{"/ui/leases", "/ui/audit", "/ui/audit/0", "/ui/leaks", "/ui/refused", "/ui/policy", "/ui/secrets", "/ui/health"} {
		resp, err := b.Get(h.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != console.CSP {
			t.Errorf("%s: %d, CSP %q", p, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
	}
	post := func(form url.Values) (int, string) {
		req, _ := http.NewRequest("POST", h.url+"/ui/leases/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if st, body := post(url.Values{"grant": {"x"}}); st != 403 || !strings.Contains(body, "CSRF") {
		t.Fatalf("no CSRF: %d %s", st, body)
	}
	if st, body := post(url.Values{"grant": {"x"}, "csrf": {csrf}}); st != 403 || !strings.Contains(body, "operator role") {
		t.Fatalf("auditor revoking: %d %s", st, body)
	}
	// The session's CSRF token is in the page's forms, never its cookie.
	resp, err = b.Get(h.url + "/ui/leases")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(raw)
	u, _ := url.Parse(h.url)
	for _, c := range b.Jar.Cookies(u) {
		if len(c.Value) > 8 && strings.Contains(page, c.Value) {
			t.Fatalf("cookie %s rendered in the page", c.Name)
		}
	}
	if !strings.Contains(page, `name="csrf" value="`+csrf+`"`) {
		t.Fatal("sign-out form lacks the CSRF token")
	}
}

// Only a node that serves the console keeps its audit index: a node
// without admin_oidc neither indexes nor moves the indexer's cursor, and a
// node that turns the console on later indexes from where the index left
// off, entries written without the console included.
func TestConsoleIndexOnlyWithConsole(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Init(ctx, InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	iss := devissuertest.Start(t)
	var srv *Server
	start := func(withConsole bool) {
		t.Helper()
		cfg := Config{DataDir: dir, InsecureHTTP: true, Listen: "127.0.0.1:0"}
		if withConsole {
			cfg.AdminOIDC = devissuertest.AdminOIDC(iss, "http://127.0.0.1:1")
		}
		var err error
		if srv, err = New(ctx, cfg, NewLogger(io.Discard, "json", "info")); err != nil {
			t.Fatal(err)
		}
	}
	stop := func() {
		t.Helper()
		if err := srv.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// appendEntries adds n durable entries of type typ.
	appendEntries := func(typ string, n int) {
		t.Helper()
		for range n {
			if _, err := srv.audit.Add(ctx, audit.Event{Type: typ, Subject: "index-test"}).Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// indexing reports whether an indexer runs: its delivery counter is
	// registered then (and only then).
	indexing := func() bool {
		t.Helper()
		mfs, err := srv.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "mayfly_audit_sink_entries_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "sink" && l.GetValue() == console.IndexerName {
						return true
					}
				}
			}
		}
		return false
	}
	cursor := func() int64 {
		t.Helper()
		c, err := srv.store.AuditCursor(ctx, "sink:"+console.IndexerName)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// waitIndexed waits for the index to reach the log's size (the
	// indexer polls every second).
	waitIndexed := func() int64 {
		t.Helper()
		want := srv.audit.Size()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			n, err := srv.store.AuditIndexSize(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n >= want && cursor() >= want {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("index at %d, cursor %d, log at %d", n, cursor(), want)
			}
		}
	}

	start(true)
	if !indexing() {
		t.Fatal("no indexer with the console")
	}
	appendEntries("test.console-on", 3)
	first := waitIndexed()
	stop()

	start(false)
	if indexing() {
		t.Fatal("an indexer runs without the console")
	}
	appendEntries("test.console-off", 5)
	// The entries are durable (Wait): an indexer, had it run, would have
	// been free to index them; Close waits for background work.
	size := srv.audit.Size()
	stop()
	start(false)
	if n, err := srv.store.AuditIndexSize(ctx); err != nil || n != first || cursor() != first {
		t.Fatalf("without the console: index %d (%v), cursor %d; want both %d (log at %d)", n, err, cursor(), first, size)
	}
	stop()

	start(true)
	defer stop()
	waitIndexed()
	page, err := srv.store.FindAudit(ctx, store.AuditQuery{Type: "test.console-off"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Indexes) != 5 {
		t.Fatalf("entries written without the console: %d indexed, want 5", len(page.Indexes))
	}
}
