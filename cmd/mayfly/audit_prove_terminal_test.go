package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// TestAuditProveShowsNoTerminalControls: `audit prove` prints the entry
// the server sent before it checks it, and the server is what the command
// does not trust: an "entry" holding ESC sequences could conceal the
// refusal that follows (ESC[8m) or draw a "verified:" line of its own. A
// genuine entry can hold C1 controls too (a request path is the caller's):
// they are shown as JSON escapes, the same JSON value.
func TestAuditProveShowsNoTerminalControls(t *testing.T) {
	_, l, as := servedLog(t, 4)
	ctx := context.Background()
	// A genuine entry whose path carries a C1 CSI (U+009B) and a DEL.
	if _, err := l.Add(ctx, audit.Event{Type: audit.TypeGateway, Method: "GET", Path: "/x/\u009b8m\u007f", Status: 200}).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	forged := []byte("{\"index\":2,\x1b[8m\x1b[1A\x1b[2Kverified: entry 2 is in the signed tree}")
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/audit/entries" && r.URL.Query().Get("start") == "2" {
			w.Write(append(forged, '\n'))
			return
		}
		as.Config.Handler.ServeHTTP(w, r)
	}))
	defer hostile.Close()
	tests := []struct {
		name  string
		addr  string
		index string
		code  int
	}{
		{"hostile server's entry", hostile.URL, "2", 1},
		{"genuine entry with C1 controls", as.URL, "4", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("MAYFLY_ADDR", tt.addr)
			out, errOut, code := runCLI(t, "", "audit", "prove", "--index", tt.index)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nout %q\nerr %q", code, tt.code, out, errOut)
			}
			for _, r := range out {
				if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 {
					t.Fatalf("output holds control %U: %q", r, out)
				}
			}
			if bytes.Contains([]byte(out), []byte("\x1b")) {
				t.Fatalf("output holds ESC: %q", out)
			}
			if tt.code == 0 && !strings.Contains(out, `"path":"/x/\u009b8m\u007f"`) {
				t.Fatalf("genuine entry not shown as its JSON: %q", out)
			}
		})
	}
}

// TestAuditTailShowsNoTerminalControls: `audit tail` prints what the
// server sends to a terminal, usually: ESC sequences in a hostile
// server's "entries" are quoted, and a genuine entry's C1 characters are
// \u escapes, the same JSON.
func TestAuditTailShowsNoTerminalControls(t *testing.T) {
	_, l, as := servedLog(t, 2)
	ctx := context.Background()
	if _, err := l.Add(ctx, audit.Event{Type: audit.TypeGateway, Method: "GET", Path: "/x/\u009b8m\u007f", Status: 200}).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/audit/entries" {
			rec := httptest.NewRecorder()
			as.Config.Handler.ServeHTTP(rec, r)
			w.Write(rec.Body.Bytes())
			w.Write([]byte("{\"index\":3,\x1b]0;pwned\x07\x1b[2J}\n"))
			return
		}
		as.Config.Handler.ServeHTTP(w, r)
	}))
	defer hostile.Close()
	t.Setenv("MAYFLY_ADDR", hostile.URL)
	out, errOut, code := runCLI(t, "", "audit", "tail", "-n", "10")
	if code != 0 {
		t.Fatalf("exit %d\nout %q\nerr %q", code, out, errOut)
	}
	for _, r := range out {
		if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 {
			t.Fatalf("output holds control %U: %q", r, out)
		}
	}
	if !strings.Contains(out, `"path":"/x/\u009b8m\u007f"`) || strings.Count(out, "\n") != 4 {
		t.Fatalf("entries not shown one a line as their JSON: %q", out)
	}
}
