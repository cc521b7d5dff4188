package gateway

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// An upstream's authentication challenge passed on as WWW-Authenticate
// comes on mayfly's origin: a Basic (or Digest, NTLM, Negotiate) one makes
// a browser prompt and keep what is typed for the gateway's origin, sending
// it with every route's requests after; and a job's client takes any
// challenge on a gateway answer for mayfly's own (SPEC section 5: 401
// invalid_token with WWW-Authenticate), and would drop or re-exchange a
// token that is fine, or answer a challenge the job cannot answer (mayfly
// injects the credential). The upstream's challenges come back as
// X-Upstream-WWW-Authenticate, the status unchanged; WWW-Authenticate on a
// gateway answer is only ever mayfly's.
func TestUpstreamChallengesRenamed(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	h.up.mu.Lock()
	h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		for _, v := range q["v"] {
			w.Header().Add("WWW-Authenticate", v)
		}
		status, _ := strconv.Atoi(q.Get("status"))
		w.WriteHeader(status)
	})
	h.up.mu.Unlock()
	for _, tc := range []struct {
		name   string
		status int
		v      []string
	}{
		{"Basic on a 401", 401, []string{`Basic realm="GitHub"`}},
		{"Digest and Basic on a 401", 401, []string{`Digest realm="x", nonce="abc"`, `Basic realm="x"`}},
		{"Negotiate on a 401", 401, []string{"Negotiate"}},
		{"Bearer invalid_token on a 401", 401, []string{`Bearer error="invalid_token"`}},
		{"Bearer insufficient_scope on a 403", 403, []string{`Bearer error="insufficient_scope"`}},
		{"on a 200", 200, []string{`Basic realm="x"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := "/gw/api/repos/acme/app/hostile/auth?" + url.Values{"v": tc.v, "status": {strconv.Itoa(tc.status)}}.Encode()
			resp, _, _ := rawGet(t, h.srv.Listener.Addr().String(), target, tok)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Values("WWW-Authenticate"); len(got) != 0 {
				t.Fatalf("the upstream's challenge came back as mayfly's: WWW-Authenticate %q", got)
			}
			if got := resp.Header.Values("X-Upstream-WWW-Authenticate"); !slices.Equal(got, tc.v) {
				t.Fatalf("X-Upstream-WWW-Authenticate %q, want %q", got, tc.v)
			}
		})
	}
	// mayfly's own 401 still challenges, so that a client tells them apart.
	resp, body := h.raw("GET", "/gw/api/repos/acme/app/hostile/auth?status=200", bearer(badChecksum(tok)))
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`) ||
		!strings.Contains(body, `"error":"invalid_token"`) || resp.Header.Get("X-Upstream-WWW-Authenticate") != "" {
		t.Fatalf("mayfly's refusal: %d %v %s", resp.StatusCode, resp.Header, body)
	}
}
