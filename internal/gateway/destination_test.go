package gateway

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// A WebDAV Destination is a second path the policy must allow; the
// upstream gets it as its own URL, and any other is refused unforwarded.
func TestDestination(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"dav"}})
	gw := h.srv.URL
	host := strings.TrimPrefix(gw, "http://")
	tests := []struct {
		name   string
		method string
		path   string
		dest   []string
		hdr    map[string]string
		status int
		want   string // the Destination the upstream gets
	}{
		{"absolute URL of the gateway", "MOVE", "/dav/in/a", []string{gw + "/gw/api/dav/in/b"}, nil, 200, h.up.srv.URL + "/base/dav/in/b"},
		{"the gateway by another name", "COPY", "/dav/in/a", []string{"http://" + "LOCALHOST" + host[strings.IndexByte(host, ':'):] + "/gw/api/dav/in/b"}, nil, 403, ""},
		{"absolute path", "COPY", "/dav/in/a", []string{"/gw/api/dav/in/sub/c%20d"}, nil, 200, h.up.srv.URL + "/base/dav/in/sub/c%20d"},
		{"no Destination", "MOVE", "/dav/in/a", nil, nil, 200, ""},
		{"outside the grant", "MOVE", "/dav/in/a", []string{gw + "/gw/api/dav/out/b"}, nil, 403, ""},
		{"dot segments out", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in/../out/b"}, nil, 400, ""},
		{"encoded dot segments out", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in/%2e%2e/out/b"}, nil, 400, ""},
		{"encoded slash", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in%2f..%2fout/b"}, nil, 400, ""},
		{"another host", "MOVE", "/dav/in/a", []string{"http://evil.example/gw/api/dav/in/b"}, nil, 403, ""},
		{"the upstream's own URL", "MOVE", "/dav/in/a", []string{h.up.srv.URL + "/base/dav/out/b"}, nil, 403, ""},
		{"another upstream", "MOVE", "/dav/in/a", []string{"/gw/slow/dav/in/b"}, nil, 403, ""},
		{"a prefix of the route", "MOVE", "/dav/in/a", []string{"/gw/apiother/dav/in/b"}, nil, 403, ""},
		{"not under the gateway", "MOVE", "/dav/in/a", []string{"/dav/in/b"}, nil, 403, ""},
		{"two headers", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in/b", "/gw/api/dav/out/b"}, nil, 400, ""},
		{"a query", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in/b?x=1"}, nil, 400, ""},
		{"a fragment", "MOVE", "/dav/in/a", []string{"/gw/api/dav/in/b#x"}, nil, 400, ""},
		{"user info", "MOVE", "/dav/in/a", []string{"http://u:p@" + host + "/gw/api/dav/in/b"}, nil, 400, ""},
		{"another scheme", "MOVE", "/dav/in/a", []string{"ftp://" + host + "/gw/api/dav/in/b"}, nil, 403, ""},
		{"opaque", "MOVE", "/dav/in/a", []string{"mailto:x@y"}, nil, 400, ""},
		{"method override names MOVE", "POST", "/dav/in/a", []string{"/gw/api/dav/in/b"}, map[string]string{"X-HTTP-Method-Override": "MOVE"}, 200, h.up.srv.URL + "/base/dav/in/b"},
		{"method override, destination out", "POST", "/dav/in/a", []string{"/gw/api/dav/out/b"}, map[string]string{"X-HTTP-Method-Override": "MOVE"}, 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.up.count()
			req, _ := http.NewRequest(tt.method, gw+"/gw/api"+tt.path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			for _, d := range tt.dest {
				req.Header.Add("Destination", d)
			}
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status != 200 {
				if h.up.count() != before {
					t.Fatal("a refused request reached the upstream")
				}
				return
			}
			got := h.up.last().Header.Values("Destination")
			if tt.want == "" && len(got) != 0 || tt.want != "" && (len(got) != 1 || got[0] != tt.want) {
				t.Fatalf("upstream got Destination %q, want %q", got, tt.want)
			}
		})
	}
}

// Whatever a Destination says, an accepted one is a clean path under the
// route it was read against, and cleaning it again changes nothing.
func FuzzDestinationPath(f *testing.F) {
	for _, s := range []string{"/gw/api/a/b", "http://gw.test/gw/api/x%2fy", "/gw/api/../x", "/gw/api", "//gw.test/gw/api/a", "/gw/api/a?b#c", "mailto:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		clean, de := destinationPath(http.Header{"Destination": {d}}, "gw.test", "/gw/api")
		if de != nil {
			if de.status != http.StatusBadRequest && de.status != http.StatusForbidden || de.reason == "" {
				t.Fatalf("%q: refused with %d %q", d, de.status, de.reason)
			}
			return
		}
		if !strings.HasPrefix(clean, "/") {
			t.Fatalf("%q: accepted as %q", d, clean)
		}
		if again, err := policy.CleanPath(policy.EscapePath(clean)); err != nil || again != clean {
			t.Fatalf("%q: %q cleans again to %q, %v", d, clean, again, err)
		}
	})
}

// The request's entry says what the upstream was allowed to run: every
// method an override names and the Destination it writes to, not only the
// request line, which an auditor would otherwise take for all of it (a
// POST that ran a MOVE onto another path).
func TestAuditNamesOverridesAndDestination(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		hdr       map[string]string
		overrides any // the decision's detail.overrides
		dest      any // its detail.destination
	}{
		{"plain", "POST", nil, nil, nil},
		{"override", "POST", map[string]string{"X-HTTP-Method-Override": "MOVE, move"}, "MOVE", nil},
		{"destination", "COPY", map[string]string{"Destination": "/gw/api/dav/in/sub/c%20d"}, nil, "/dav/in/sub/c d"},
		{"both", "POST", map[string]string{"X-HTTP-Method-Override": "COPY", "Destination": "/gw/api/dav/in/b"}, "COPY", "/dav/in/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tok := h.issue(lease.Request{Grants: []string{"dav"}})
			req, _ := http.NewRequest(tt.method, h.srv.URL+"/gw/api/dav/in/a", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			es := h.waitEntries(2)
			if len(es) != 2 || es[0].Type != TypeRequest || es[0].Method != tt.method {
				t.Fatalf("entries %+v", es)
			}
			d := es[0].Detail
			if d["decision"] != "allow" || d["overrides"] != tt.overrides || d["destination"] != tt.dest {
				t.Fatalf("detail %v; want overrides %v, destination %v", d, tt.overrides, tt.dest)
			}
		})
	}
}

// finishRecorder keeps the events a gateway finishes its requests with:
// with a journal (embedded SQLite) each is the request's one entry.
type finishRecorder struct {
	*failingAuditor
	mu    sync.Mutex
	whole []audit.Event
}

func (f *finishRecorder) Finish(in *auditlog.Intent, whole audit.Event, outcomeType string) {
	f.mu.Lock()
	f.whole = append(f.whole, whole)
	f.mu.Unlock()
	f.failingAuditor.Finish(in, whole, outcomeType)
}

// A response cut off mid-body keeps what its decision said beside
// "aborted": where the decision and outcome make one entry, the overrides
// and Destination must not be lost with it.
func TestAbortedEntryKeepsOverrides(t *testing.T) {
	h := newHarness(t)
	rec := &finishRecorder{failingAuditor: h.aud}
	h.gw.cfg.Auditor = rec
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/abort", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-HTTP-Method-Override", "GET")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a cut-off body reached the client whole")
	}
	h.waitEntries(2)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.whole) != 1 {
		t.Fatalf("%d finished requests, want 1", len(rec.whole))
	}
	if d := rec.whole[0].Detail; d["aborted"] != true || d["overrides"] != "GET" || d["decision"] != "allow" {
		t.Fatalf("finished with detail %v", d)
	}
}
