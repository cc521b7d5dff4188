package gateway

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// Path-override headers under any spelling never reach the upstream, nor
// does a second credential or framing header spelled with "_". Script-name
// headers are path overrides too: an upstream that takes one as SCRIPT_NAME
// cuts it off the path and serves the rest.
func TestPathOverrideSpellingsDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	names := []string{"X-Original-URL", "X_Original_URL", "x-rewrite-url", "X_Rewrite_URL", "X-Original-URI",
		"X_ORIGINAL_URI", "X-Envoy-Original-Path", "X-Forwarded-Uri", "X-Forwarded-Prefix", "X-Original-Path",
		"Proxy_Authorization", "X_Forwarded_For", "X-Script-Name", "X_Script_Name", "SCRIPT_NAME", "X-Forwarded-Script-Name"}
	var b strings.Builder
	fmt.Fprintf(&b, "GET /gw/api/repos/acme/app/issues HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n", tok)
	for _, n := range names {
		fmt.Fprintf(&b, "%s: /admin/delete-everything\r\n", n)
	}
	b.WriteString("\r\n")
	if status, body := rawExchange(t, h.srv.Listener.Addr().String(), b.String()); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	got := h.up.last().Header
	for k, vs := range got {
		for _, v := range vs {
			if strings.Contains(v, "/admin/") {
				t.Errorf("forwarded %s: %s", k, v)
			}
		}
	}
	if got.Get("Authorization") != "Bearer "+testCred {
		t.Fatalf("credential header %q", got.Get("Authorization"))
	}
}

// Headers that a proxy in front of a server sets to say who the client is
// (its address, its TLS client certificate, the user an authenticating
// proxy signed in) never reach the upstream from a job, under any
// spelling: the gateway is the upstream's proxy and sets none of them, so
// the upstream would take the job's word for another address or user than
// the credential's (Gitea's and Grafana's X-WEBAUTH-USER, Jenkins'
// X-Forwarded-User, an IP allow list reading X-Real-IP). Other headers,
// and the method overrides the policy checked, pass.
func TestProxyAssertedHeadersDropped(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	dropped := []string{"X-Real-IP", "X_Real_IP", "True-Client-IP", "X-Client-IP", "CF-Connecting-IP", "Fastly-Client-IP",
		"X-Cluster-Client-IP", "X-Forwarded", "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Scheme", "X-Forwarded-Ssl",
		"X_Forwarded_Host", "X-Host", "X-Original-Host", "X-Forwarded-Client-Cert", "X-SSL-Client-Cert", "X-SSL-Client-S-DN",
		"X-Client-Cert", "SSL-Client-Cert", "X-ARR-ClientCert", "Remote-User", "REMOTE_USER", "X-Remote-User", "X-Remote-Group",
		"X-Remote-Extra-Scopes", "X-WebAuth-User", "X_WEBAUTH_USER", "X-Forwarded-User", "X-Forwarded-Email",
		"X-Forwarded-Groups", "X-Forwarded-Preferred-Username", "X-Forwarded-Access-Token", "X-Auth-Request-User",
		"X-Auth-Request-Email", "X-Authenticated-User"}
	kept := []string{"X-Request-Id", "User-Agent", "X-Forwarded-Method", "CF-Access-Client-Id"}
	var b strings.Builder
	fmt.Fprintf(&b, "GET /gw/api/repos/acme/app/issues HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n", tok)
	for _, n := range dropped {
		fmt.Fprintf(&b, "%s: admin\r\n", n)
	}
	for _, n := range kept {
		fmt.Fprintf(&b, "%s: GET\r\n", n)
	}
	b.WriteString("\r\n")
	if status, body := rawExchange(t, h.srv.Listener.Addr().String(), b.String()); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	got := h.up.last().Header
	for k, vs := range got {
		for _, v := range vs {
			if v == "admin" {
				t.Errorf("forwarded %s: %s", k, v)
			}
		}
	}
	for _, n := range kept {
		if got.Get(n) != "GET" {
			t.Errorf("%s not forwarded", n)
		}
	}
}

// nest percent-encodes s n more times.
func nest(s string, n int) string {
	for range n {
		s = url.QueryEscape(s)
	}
	return s
}

// pctU writes s as ASP.NET's %uXXXX escapes.
func pctU(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, "%%u%04X", r)
	}
	return b.String()
}

func utf16le(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(s[i])
		b.WriteByte(0)
	}
	return b.String()
}

func TestURLTokenDetection(t *testing.T) {
	tok := mustToken(t)
	adm := mustAdmin(t)
	pct := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02x", s[i])
		}
		return b.String()
	}
	// The token with its last character changed (never to itself).
	broken := tok[:len(tok)-1] + map[bool]string{true: "y", false: "x"}[strings.HasSuffix(tok, "x")]
	tests := []struct {
		target string
		want   bool
	}{
		{"/gw/api/v1/q?access_token=" + tok, true},
		{"/gw/api/v1/" + tok + "/x", true},
		{"/gw/api/v1/q?t=" + adm, true},
		{"/gw/api/v1/q?t=" + pct(tok), true},
		{"/gw/api/v1/q?t=" + url.QueryEscape(pct(tok)), true},
		{"/gw/api/v1/q?t=" + base64.StdEncoding.EncodeToString([]byte(tok)), true},
		{"/gw/api/v1/q?t=" + base64.RawURLEncoding.EncodeToString([]byte("x:"+tok)), true},
		{"/gw/api/v1/q?t=ab" + base64.RawURLEncoding.EncodeToString([]byte("xy:"+tok)), true},
		{"/gw/api/v1/q?t=" + hex.EncodeToString([]byte(tok)), true},
		{"/gw/api/v1/q?t=" + strings.ToUpper(hex.EncodeToString([]byte(" "+tok))), true},
		{"/gw/api/v1/q?t=" + nest(pct(tok), 3), true},
		{"/gw/api/v1/q?t=" + nest("%25", maxURLDecodes) + "41" + strings.Repeat("x", 40), true}, // too deep to tell
		{"/gw/api/v1/q?t=" + nest("%25", maxURLDecodes-3) + "41" + strings.Repeat("x", 40), false},
		{"/gw/api/v1/q?t=" + pctU(tok), true},
		{"/gw/api/v1/q?t=" + pct(utf16le(tok)), true},
		{"/gw/api/v1/q?t=" + pct("\x00"+utf16le(tok)), true}, // big-endian
		{"/gw/api/v1/q?t=ab" + tok + "cd", true},             // glued to other characters
		{"/gw/api/v1/q?t=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("ab"+tok))), true},
		{"/gw/api/v1/q?t=" + broken, false}, // checksum fails
		{"/gw/api/repos/acme/app/issues?state=open&per_page=100", false},
		{"/gw/api/v1/q?sha=" + strings.Repeat("0123456789abcdef", 5), false},
	}
	for _, tt := range tests {
		if got := urlHasToken(tt.target); got != tt.want {
			t.Errorf("urlHasToken(%q) = %v, want %v", tt.target, got, tt.want)
		}
	}
}

// A request whose URL carries a mayfly token is refused (400, saying
// why) whatever else it holds, never forwarded, and the audit entry does
// not carry the token.
func TestURLTokenRefused(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	before := h.up.count()
	for _, target := range []string{
		"/gw/api/repos/acme/app/issues?access_token=" + tok,
		"/gw/api/repos/acme/app/" + tok,
		"/gw/api/repos/acme/app/issues?t=" + base64.StdEncoding.EncodeToString([]byte(tok)),
	} {
		resp, body := h.raw("GET", target, bearer(tok))
		if resp.StatusCode != 400 || !strings.Contains(body, "URL carries a mayfly token") {
			t.Fatalf("%s: status %d: %s", target, resp.StatusCode, body)
		}
	}
	if h.up.count() != before {
		t.Fatalf("upstream reached: %+v", h.up.last())
	}
	for _, e := range h.entries() {
		b := fmt.Sprintf("%+v", *e)
		if strings.Contains(b, tok) || strings.Contains(b, base64.StdEncoding.EncodeToString([]byte(tok))) {
			t.Fatalf("audit entry holds the token: %s", b)
		}
	}
}

func FuzzURLHasToken(f *testing.F) {
	f.Add("/gw/api/x?y=%6d%66%79_")
	f.Add("/gw/" + strings.Repeat("QUJD", 20))
	f.Fuzz(func(t *testing.T, s string) {
		urlHasToken(s)
	})
}

// A request refused on its headers is answered before any of its body
// arrives, and its connection closed: net/http would otherwise read (and
// wait for) up to 256 KiB of a body nobody uses before answering.
func TestRefusalDoesNotWaitForBody(t *testing.T) {
	h := newHarness(t)
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	for _, tt := range []struct {
		auth string
		want int
	}{{"", 401}, {"Authorization: Bearer " + tok + "\r\n", 403}} {
		c, err := net.Dial("tcp", h.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "PUT /gw/api/repos/acme/app/x HTTP/1.1\r\nHost: x\r\n%sContent-Length: 200000\r\n\r\n", tt.auth)
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounds a hang; measures nothing
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.Close()
			t.Fatalf("no answer before the body: %v", err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != tt.want || !resp.Close {
			t.Fatalf("status %d, close %v; want %d and close", resp.StatusCode, resp.Close, tt.want)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection not closed: %v", err)
		}
		c.Close()
	}
}

// appendHeaderKey folds as headerKey does, under any spelling.
func TestAppendHeaderKey(t *testing.T) {
	for _, k := range []string{"", "Authorization", "X-Http-Method-Override", "x_http_method_override", "X_Forwarded_URI",
		"SCRIPT_NAME", "Content-Type", "X-\u212Aey", "Ünicode_Name", "\xff_Bad", strings.Repeat("Long-Name_", 10)} {
		if got, want := string(appendHeaderKey([]byte("pre"), k)), "pre"+headerKey(k); got != want {
			t.Errorf("appendHeaderKey(%q) = %q, want %q", k, got, want)
		}
	}
}

// Every request's headers are folded (scrubHeaders, headerOverrides) and
// every response header's name is lowered (nameHolds): for the usual
// names, without allocating.
func TestHeaderFoldingAllocatesNothing(t *testing.T) {
	h := http.Header{"User-Agent": {"git/2.43"}, "Accept": {"*/*"}, "Content-Type": {"application/json"},
		"X-Request-Id": {"abc"}, "Accept-Encoding": {"gzip"}, "X-Github-Api-Version": {"2022-11-28"}}
	red, err := newRedactor([][]byte{[]byte("s3cr3t-value-1234")})
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"scrubHeaders":    func() { scrubHeaders(h, "authorization") },
		"headerOverrides": func() { _, _ = headerOverrides(h) },
		"nameHolds":       func() { _ = red.nameHolds("Content-Security-Policy") },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %.0f allocations, want 0", name, n)
		}
	}
	if len(h) != 6 {
		t.Errorf("scrubHeaders dropped a usual header: %v", h)
	}
	if !red.nameHolds("X-S3cr3t-Value-1234-Echo") || red.nameHolds("X-Other") {
		t.Error("nameHolds does not find the secret in a name in another case")
	}
}
