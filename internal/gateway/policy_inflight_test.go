package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// A request still running (an event stream, a watch, a long download or
// upload) when a policy version is applied that no longer allows it went
// on with the injected credential's authority: the watcher that cuts it
// when its token ends looked only at the token, and a policy apply revokes
// tokens only of grants it removes. A grant that stays but is narrowed (a
// method or path taken out of its rules, its who entries or networks
// changed, its upstream changed) left the request running to its end.
func TestStreamEndsWhenPolicyNoLongerAllowsIt(t *testing.T) {
	const readWho = "claims: {repository: acme/app}\n  dav:"
	for _, tc := range []struct {
		name string
		from string // replaced in the policy in force by to
		to   string
		cut  string // the entry's reason; "" the stream goes on
	}{
		{"method taken out", "- methods: [GET]\n        paths: [\"/repos/acme/app/**\"", "- methods: [HEAD]\n        paths: [\"/repos/acme/app/**\"",
			"stream closed: policy no longer allows it: no grant of this token allows this method and path"},
		{"path taken out", `"/sse", `, "",
			"stream closed: policy no longer allows it: no grant of this token allows this method and path"},
		{"identity no longer matches", readWho, "claims: {repository: acme/other}\n  dav:",
			"stream closed: policy no longer allows it: no who entry matches"},
		{"network no longer allowed", readWho, "claims: {repository: acme/app}\n        source_cidrs: [10.0.0.0/8]\n  dav:",
			"stream closed: policy no longer allows it: source address not allowed"},
		{"grant moved to another upstream", "read:\n    upstream: api", "read:\n    upstream: slow",
			"stream closed: policy no longer allows it: no grant of this token is for this upstream"},
		{"another grant changed", "paths: [\"/slow\"]", "paths: [\"/slow\", \"/slower\"]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			released := false
			release := func() {
				if !released {
					released = true
					close(h.up.sse)
				}
			}
			t.Cleanup(release)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/sse", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, 4)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("first bytes: %v", err)
			}

			if !strings.Contains(h.yaml, tc.from) {
				t.Fatalf("the test policy has no %q", tc.from)
			}
			p, err := policy.Parse([]policy.File{{Name: "v2.yaml", Data: []byte(strings.Replace(h.yaml, tc.from, tc.to, 1))}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.pol.p.Store(p)
			if tc.cut != "" {
				// A new request is refused at once...
				if r, _ := h.raw("GET", "/gw/api/sse", bearer(tok)); r.StatusCode != http.StatusForbidden {
					t.Fatalf("a new request under the narrowed policy: %d, want 403", r.StatusCode)
				}
			}
			// ...and the running one must end soon after, without the
			// rest of the answer.
			rest := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, resp.Body)
				rest <- err
			}()
			select {
			case err := <-rest:
				if tc.cut == "" {
					t.Fatalf("a stream the policy still allows ended: %v", err)
				}
				if err == nil {
					t.Fatal("the stream ended cleanly: the upstream's whole answer reached the client")
				}
			case <-time.After(3 * time.Second):
				release() // the upstream sends the rest
				err := <-rest
				if tc.cut != "" {
					t.Fatalf("3 s after the policy stopped allowing it, the stream was still open and carried the upstream's answer to its end (%v)", err)
				}
				if err != nil {
					t.Fatalf("a stream the policy still allows: %v", err)
				}
				return
			}
			deadline := time.Now().Add(5 * time.Second)
			for !hasEntry(h, func(e *audit.Entry) bool { return e.Path == "/sse" && e.Reason == tc.cut }) {
				if time.Now().After(deadline) {
					t.Fatalf("no entry of the stream with reason %q", tc.cut)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// A request whose upstream has not answered yet when the policy stops
// allowing it is answered 403 insufficient_scope (not 401: its token is
// fine), and its entry says why.
func TestWaitingRequestRefusedWhenPolicyNoLongerAllowsIt(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	reached := make(chan struct{})
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(reached)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
			io.WriteString(w, "late answer")
		}
	})
	h.up.mu.Unlock()
	type result struct {
		resp *http.Response
		body string
	}
	done := make(chan result, 1)
	go func() {
		resp, body := h.raw("GET", "/gw/api/repos/acme/app/hostile/wait", bearer(tok))
		done <- result{resp, body}
	}()
	<-reached
	p, err := policy.Parse([]policy.File{{Name: "v2.yaml", Data: []byte(strings.Replace(h.yaml, `"/repos/acme/app/**", "/echo"`, `"/echo"`, 1))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.pol.p.Store(p)
	var res result
	select {
	case res = <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("3 s after the policy stopped allowing it, the request still waited for the upstream")
	}
	if res.resp.StatusCode != http.StatusForbidden || !strings.Contains(res.body, `"error":"insufficient_scope"`) ||
		!strings.Contains(res.resp.Header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Fatalf("status %d %q %s, want 403 insufficient_scope", res.resp.StatusCode, res.resp.Header.Get("WWW-Authenticate"), res.body)
	}
	want := "stream closed: policy no longer allows it: no grant of this token allows this method and path"
	deadline := time.Now().Add(5 * time.Second)
	for !hasEntry(h, func(e *audit.Entry) bool {
		return e.Path == "/repos/acme/app/hostile/wait" && e.Status == 403 && e.Reason == want
	}) {
		if time.Now().After(deadline) {
			t.Fatalf("no entry of the request with status 403 and reason %q", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// applyingAuditor applies a policy version while the gateway waits for a
// request's decision to be durable, as an admin's PUT /v1/policy racing
// the request does.
type applyingAuditor struct {
	*failingAuditor
	apply func()
}

func (a *applyingAuditor) Begin(ctx context.Context, ev audit.Event) *auditlog.Intent {
	a.apply()
	return a.failingAuditor.Begin(ctx, ev)
}

// A request decided under one policy version and forwarded after a
// narrower one was applied (during the audit wait: a durable write, a
// PostgreSQL round trip, up to AuditTimeout) still reached the upstream
// with the credential: after the wait only the token was looked at again,
// and the watcher that decides again under a newer policy first looks
// 250 ms after the forward, when a DELETE or a POST has long been done.
// The apply had already answered: the rule it took out must hold for
// every request forwarded after it, as a revocation does.
func TestRequestForwardedAfterPolicyNarrowed(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to string // replaced in the policy applied during the wait
		want     int
		reason   string
	}{
		{"method taken out", "- methods: [POST]\n        paths: [\"/repos/acme/app/deployments\"]",
			"- methods: [GET]\n        paths: [\"/repos/acme/app/deployments\"]", http.StatusForbidden,
			"policy no longer allows it: no grant of this token allows this method and path"},
		{"identity no longer matches", "claims: {repository: acme/app}\n  dav:", "claims: {repository: acme/other}\n  dav:",
			http.StatusForbidden, "policy no longer allows it: no who entry matches"},
		{"another grant changed", "paths: [\"/slow\"]", "paths: [\"/slow\", \"/slower\"]", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			if !strings.Contains(h.yaml, tc.from) {
				t.Fatalf("the test policy has no %q", tc.from)
			}
			aud := &applyingAuditor{failingAuditor: h.aud, apply: func() {
				p, err := policy.Parse([]policy.File{{Name: "v2.yaml", Data: []byte(strings.Replace(h.yaml, tc.from, tc.to, 1))}}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				h.pol.p.Store(p)
			}}
			gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{testCred}, Auditor: aud,
				ClientIP: clientip.New(nil), AuditTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(gw.Close)
			srv := httptest.NewServer(gw)
			t.Cleanup(srv.Close)
			req, _ := http.NewRequest("POST", srv.URL+"/gw/api/repos/acme/app/deployments", strings.NewReader(`{"ref":"main"}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == http.StatusOK {
				if h.up.count() != 1 {
					t.Fatalf("a request the new policy still allows: the upstream got %d requests", h.up.count())
				}
				return
			}
			if n := h.up.count(); n != 0 {
				t.Fatalf("the policy no longer allowed the request before it was forwarded, yet the upstream got %d request(s) with the credential", n)
			}
			if !strings.Contains(string(body), `"error":"insufficient_scope"`) || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_scope") {
				t.Fatalf("answer %q %s, want insufficient_scope", resp.Header.Get("WWW-Authenticate"), body)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !hasEntry(h, func(e *audit.Entry) bool {
				return e.Path == "/repos/acme/app/deployments" && e.Status == tc.want && e.Check == CheckPolicy && e.Reason == tc.reason
			}) {
				if time.Now().After(deadline) {
					t.Fatalf("no entry of the request records its refusal (status %d, reason %q)", tc.want, tc.reason)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
