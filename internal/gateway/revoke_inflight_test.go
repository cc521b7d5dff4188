package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/clientip"
	"github.com/mayfly-sh/mayfly/internal/lease"
)

// An upgraded (WebSocket) connection keeps carrying the client's frames to
// the upstream, with the injected credential's authority, after the token
// that opened it was revoked (a leak report, an admin, the holder) or
// expired: SPEC section 4 says a revocation takes effect for the very next
// gateway request, and section 2 that a token lives for minutes; the tunnel
// it opened lives on.
func TestWebSocketOutlivesRevokedOrExpiredToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(h *harness, tok string)
	}{
		{"revoked", func(h *harness, tok string) {
			if _, ok, err := h.leases.RevokeToken(context.Background(), tok, "leaked"); err != nil || !ok {
				t.Fatalf("revoke: %v %v", ok, err)
			}
		}},
		{"expired", func(h *harness, tok string) { h.clk.Add(11 * time.Minute) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /gw/api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", tok)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			wsWriteFrame(conn, true, 1, []byte("before"), true)
			if _, _, msg, err := wsReadFrame(br); err != nil || string(msg) != "BEFORE" {
				t.Fatalf("echo before: %q %v", msg, err)
			}

			tc.end(h, tok)
			// The token is dead for any new request...
			if r, _ := h.raw("GET", "/gw/api/repos/acme/app/x", bearer(tok)); r.StatusCode != 401 {
				t.Fatalf("a new request with the %s token: %d, want 401", tc.name, r.StatusCode)
			}
			// ...but the tunnel it opened still reaches the upstream.
			time.Sleep(1500 * time.Millisecond) // well past any cluster-wide propagation
			wsWriteFrame(conn, true, 1, []byte("after"), true)
			if _, _, msg, err := wsReadFrame(br); err == nil {
				t.Fatalf("after the token was %s, the WebSocket still carried a frame to the upstream and back: %q", tc.name, msg)
			}
			// The tunnel's entry says why it ended.
			want := "tunnel closed: token " + tc.name
			deadline := time.Now().Add(5 * time.Second)
			for !hasEntry(h, func(e *audit.Entry) bool { return e.Path == "/ws" && e.Status == 101 && e.Reason == want }) {
				if time.Now().After(deadline) {
					t.Fatalf("no entry of the WebSocket with reason %q", want)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// revokingAuditor revokes the token while the gateway waits for the
// request's decision to be durable (the moments between the token check
// and the forward: the audit write, the credential read, a DPoP or use
// count store round trip), as a leak report racing the request does.
type revokingAuditor struct {
	*failingAuditor
	revoke func()
}

func (a *revokingAuditor) Begin(ctx context.Context, ev audit.Event) *auditlog.Intent {
	a.revoke()
	return a.failingAuditor.Begin(ctx, ev)
}

// A plain request whose token is revoked after its lookup but before it is
// forwarded still goes upstream with the credential: the leak report that
// revoked it has already answered "revoked".
func TestRequestForwardedAfterItsTokenWasRevoked(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	aud := &revokingAuditor{failingAuditor: h.aud, revoke: func() {
		if _, ok, err := h.leases.RevokeToken(context.Background(), tok, "leaked"); err != nil || !ok {
			t.Errorf("revoke: %v %v", ok, err)
		}
	}}
	gw, err := New(Config{Leases: h.leases, Policies: h.pol, Secrets: fixedSecrets{testCred}, Auditor: aud,
		ClientIP: clientip.New(nil), AuditTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/gw/api/repos/acme/app/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := h.up.count(); n != 0 {
		t.Fatalf("the token was revoked before the request was forwarded, yet the upstream got %d request(s) with the credential (status %d)", n, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("status %d, WWW-Authenticate %q: want 401 invalid_token", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// The request's entry records the refusal (its outcome: the decision
	// was recorded before the re-check).
	deadline := time.Now().Add(5 * time.Second)
	for !hasEntry(h, func(e *audit.Entry) bool {
		return e.Path == "/repos/acme/app/x" && e.Status == 401 && e.Check == CheckToken && e.Reason == lease.ErrRevoked.Error() && e.Lease != ""
	}) {
		if time.Now().After(deadline) {
			t.Fatal("no entry of the request records its refusal")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasEntry(h *harness, ok func(*audit.Entry) bool) bool {
	for _, e := range h.entries() {
		if ok(e) {
			return true
		}
	}
	return false
}

// A response still streaming when its token is revoked or expires (an event
// stream, a watch, a long download) keeps carrying the upstream's answer,
// read with the injected credential, to whoever holds the dead token: the
// request's authority must end with the token's, as a WebSocket's does.
func TestStreamEndsWithItsToken(t *testing.T) {
	for _, path := range []string{"/sse", "/trickle"} {
		for _, tc := range []struct {
			name string
			end  func(h *harness, tok string)
		}{
			{"revoked", func(h *harness, tok string) {
				if _, ok, err := h.leases.RevokeToken(context.Background(), tok, "leaked"); err != nil || !ok {
					t.Fatalf("revoke: %v %v", ok, err)
				}
			}},
			{"expired", func(h *harness, tok string) { h.clk.Add(11 * time.Minute) }},
		} {
			t.Run(strings.TrimPrefix(path, "/")+"/"+tc.name, func(t *testing.T) {
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
				req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api"+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				first := make([]byte, 4)
				if _, err := io.ReadFull(resp.Body, first); err != nil {
					t.Fatalf("first bytes: %v", err)
				}

				tc.end(h, tok)
				// The stream must end, without the rest of the answer,
				// soon after the token did (the tunnel check's period).
				rest := make(chan error, 1)
				go func() {
					_, err := io.Copy(io.Discard, resp.Body)
					rest <- err
				}()
				select {
				case err := <-rest:
					if err == nil {
						t.Fatalf("the stream ended cleanly after the token was %s: the upstream's whole answer reached the client", tc.name)
					}
				case <-time.After(3 * time.Second):
					release() // the upstream sends the rest: it must not come through
					err := <-rest
					t.Fatalf("3 s after its token was %s, the stream was still open and carried the upstream's answer to its end (%v)", tc.name, err)
				}
				want := "stream closed: token " + tc.name
				deadline := time.Now().Add(5 * time.Second)
				for !hasEntry(h, func(e *audit.Entry) bool { return e.Path == path && e.Reason == want }) {
					if time.Now().After(deadline) {
						t.Fatalf("no entry of the stream with reason %q", want)
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
	}
}

// A request body still streaming to the upstream (a long upload) when its
// token is revoked is cut off too, rather than delivered to its end with
// the credential.
func TestUploadEndsWithItsToken(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	// The upstream says when the upload reaches it, so that the token is
	// revoked while it is forwarded (not before: a refusal would pass too).
	reached := make(chan struct{})
	h.up.mu.Lock()
	h.up.arrived = func(r *http.Request) {
		if r.Method == "PUT" {
			close(reached)
		}
	}
	h.up.mu.Unlock()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", h.srv.URL+"/gw/api/upload", pr)
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		resp.Body.Close()
		done <- resp
	}()
	chunk := []byte(strings.Repeat("u", 1024))
	if _, err := pw.Write(chunk); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reached:
	case resp := <-done:
		t.Fatalf("the upload ended before it reached the upstream: %v", resp)
	case <-time.After(10 * time.Second):
		t.Fatal("the upload did not reach the upstream")
	}
	if _, ok, err := h.leases.RevokeToken(context.Background(), tok, "leaked"); err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	deadline := time.After(3 * time.Second)
	for {
		select {
		case resp := <-done:
			pw.Close()
			if resp != nil && resp.StatusCode < 300 {
				t.Fatalf("the upload went through to its end after its token was revoked: %d", resp.StatusCode)
			}
			return
		case <-deadline:
			pw.Close()
			<-done
			t.Fatal("3 s after its token was revoked, the upload was still being forwarded to the upstream")
		case <-time.After(50 * time.Millisecond):
			pw.Write(chunk) // an error once the gateway has cut the request
		}
	}
}
