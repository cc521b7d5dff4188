package e2e

// The listener side of the attack suite (issue 12, classes 2, 4 and 7): not
// only the gateway's routes but every listener of a node — the API and
// gateway listener over TLS (HTTP/1.1 and HTTP/2) and the metrics listener —
// refuses ambiguous framing with 400 and closes the connection, and answers
// a request refused on its headers at once, without waiting for its body.
// The body-rate grace is five minutes here, so an answer that waited for the
// body (or for the rate to cut it) would not come within the test's bound on
// a hang (15 s). A smuggled request would revoke the job token: after each
// attack the token still works.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freeLoopbackPort returns a port nothing listens on right now.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

func TestAttackListeners(t *testing.T) {
	up := newRQUpstream(t)
	n := initDir(t)
	cfg := filepath.Join(t.TempDir(), "server.yaml")
	os.WriteFile(cfg, []byte("limits:\n  min_body_rate: 1000\n  body_rate_grace: 5m\n"), 0o600)
	metricsAddr := "127.0.0.1:" + freeLoopbackPort(t)
	n.start(t, "--config", cfg, "--metrics-listen", metricsAddr)
	tok, _ := n.gatewayJob(t, "echo", up.srv.URL, rqCredential, "items", `
      - methods: [POST]
        paths: ["/v1/items"]
`)
	api := rqStartedTarget(t, n, tok, up)
	metrics := &rqTarget{name: "metrics", addr: metricsAddr, tok: tok, up: up}

	// The job token still works: nothing smuggled revoked it.
	live := func(t *testing.T) {
		t.Helper()
		a := api.send(t, api.request("POST", "/v1/items", withLength("", ""), ""))
		if fmt.Sprint(a.statuses) != "[200]" {
			t.Fatalf("the job token no longer works: %v %q", a.statuses, a.bodies)
		}
	}
	revoke := "token=" + tok
	smuggledRevoke := fmt.Sprintf("POST /v1/revoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s", len(revoke), revoke)
	chunkedRevoke := "0\r\n\r\n" + smuggledRevoke
	apiHead := func(path, framing string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n%s\r\n", path, api.addr, framing)
	}
	apiOK := apiHead("/v1/revoke", "Content-Length: 7\r\nConnection: close\r\n") + "token=x"
	smuggledScrape := "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
	metricsHead := func(framing string) string {
		return fmt.Sprintf("GET /metrics HTTP/1.1\r\nHost: %s\r\n%s\r\n", metricsAddr, framing)
	}
	metricsOK := metricsHead("Connection: close\r\n")

	type listenerCase struct {
		name      string
		tg        *rqTarget
		neighbour string
		attack    string
		want      int
	}
	cases := []listenerCase{
		{"API CL then TE", api, apiOK, apiHead("/v1/revoke", fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n", len(chunkedRevoke))) + chunkedRevoke, 400},
		{"API TE then CL", api, apiOK, apiHead("/v1/token", fmt.Sprintf("Transfer-Encoding: chunked\r\nContent-Length: %d\r\n", len(chunkedRevoke))) + chunkedRevoke, 400},
		{"API TE CHUNKED", api, apiOK, apiHead("/v1/revoke", "Transfer-Encoding: CHUNKED\r\n") + chunkedRevoke, 400},
		{"API CL twice", api, apiOK, apiHead("/v1/revoke", "Content-Length: 7\r\nContent-Length: 7\r\n") + "token=x" + smuggledRevoke, 400},
		{"API bare LF", api, apiOK, apiHead("/v1/leaks", "X-A: b\nContent-Length: 7\r\n") + "token=x" + smuggledRevoke, 400},
		{"metrics CL then TE", metrics, metricsOK, metricsHead("Content-Length: 40\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n" + smuggledScrape, 400},
		{"metrics TE tab chunked", metrics, metricsOK, metricsHead("Transfer-Encoding: \tchunked\r\n") + "0\r\n\r\n" + smuggledScrape, 400},
		{"metrics CL twice", metrics, metricsOK, metricsHead("Content-Length: 0\r\nContent-Length: 0\r\n") + smuggledScrape, 400},
		{"metrics obs-fold", metrics, metricsOK, metricsHead("X-A: b\r\n Content-Length: 40\r\n") + smuggledScrape, 400},
		// Refused on their headers: answered before any of the body is sent.
		{"API unknown route, body never sent", api, apiOK, apiHead("/v1/nope", "Content-Length: 200000\r\n"), 404},
		{"API no admin token, body never sent", api, apiOK, strings.Replace(apiHead("/v1/secrets/x", "Content-Length: 200000\r\n"), "POST", "PUT", 1), 401},
		// An exchange too large to read is a refused exchange (SPEC 4: 400, "too large").
		{"API declared length over the limit", api, apiOK, apiHead("/v1/token", "Content-Length: 10000000\r\n"), 400},
		{"API leak report over the limit", api, apiOK, apiHead("/v1/leaks", "Content-Length: 50000000\r\n"), 413},
		{"gateway no token, body never sent", api, apiOK, strings.Replace(apiHead("/gw/echo/v1/items", "Content-Length: 200000\r\n"), "Content-Type", "X-A", 1), 401},
		{"metrics wrong method, body never sent", metrics, metricsOK, strings.Replace(metricsHead("Content-Length: 200000\r\n"), "GET", "POST", 1), 405},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := c.tg.send(t, c.neighbour)
			if fmt.Sprint(a.statuses) != "[200]" {
				t.Fatalf("neighbour: %v %q", a.statuses, a.bodies)
			}
			before := up.count()
			a = c.tg.send(t, c.attack)
			c.tg.noSecrets(t, a.raw)
			if fmt.Sprint(a.statuses) != fmt.Sprint([]int{c.want}) || !a.closed {
				t.Fatalf("attack: %v closed=%v %q; want [%d] and the connection closed", a.statuses, a.closed, a.bodies, c.want)
			}
			if up.count() != before {
				t.Fatalf("the upstream was reached: %+v", up.since(before))
			}
			live(t)
		})
	}

	// HTTP/2 on the same listener: a refused request is answered while its
	// body is still to come, and a method override is seen there too.
	h2 := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: api.tls.Clone(), ForceAttemptHTTP2: true}}
	h2.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"h2"}
	h2do := func(t *testing.T, method, path string, hdr map[string]string, body io.Reader) int {
		t.Helper()
		req, _ := http.NewRequest(method, "https://"+api.addr+path, body)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("%s %s over HTTP/2: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.ProtoMajor != 2 {
			t.Fatalf("not HTTP/2: %s", resp.Proto)
		}
		api.noSecrets(t, string(b))
		return resp.StatusCode
	}
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	t.Run("HTTP/2 refused, body never sent", func(t *testing.T) {
		if code := h2do(t, "POST", "/gw/echo/v1/items", bearer, strings.NewReader("item=x")); code != 200 {
			t.Fatalf("neighbour: %d", code)
		}
		for _, path := range []string{"/gw/echo/v1/items", "/v1/nope"} {
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("x"))
			before := up.count()
			if code := h2do(t, "POST", path, nil, pr); code != 401 && code != 404 {
				t.Fatalf("%s: %d", path, code)
			}
			if up.count() != before {
				t.Fatal("the upstream was reached")
			}
		}
	})
	t.Run("HTTP/2 method override", func(t *testing.T) {
		before := up.count()
		over := map[string]string{"Authorization": "Bearer " + tok, "X_HTTP_METHOD_OVERRIDE": "DELETE"}
		if code := h2do(t, "POST", "/gw/echo/v1/items", over, strings.NewReader("item=x")); code != 403 {
			t.Fatalf("override header: %d", code)
		}
		form := map[string]string{"Authorization": "Bearer " + tok, "Content-Type": "application/x-www-form-urlencoded"}
		if code := h2do(t, "POST", "/gw/echo/v1/items", form, strings.NewReader(url.Values{"_method": {"DELETE"}}.Encode())); code != 403 {
			t.Fatalf("override in the form: %d", code)
		}
		if up.count() != before {
			t.Fatal("the upstream was reached")
		}
	})
	live(t)
}

// rqStartedTarget is the TLS (HTTP/1.1) target of an already started node.
func rqStartedTarget(t *testing.T, n *node, tok string, up *rqUpstream) *rqTarget {
	t.Helper()
	tg := &rqTarget{name: "tls", addr: strings.TrimPrefix(n.url, "https://"), tok: tok, up: up}
	tg.tls = &tls.Config{RootCAs: n.caPool(t), ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	return tg
}
