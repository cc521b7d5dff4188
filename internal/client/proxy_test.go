package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Plain http is allowed only to a loopback address, because "a token must
// never cross a network in the clear" (NormalizeAddr). IsLoopback takes
// "LOCALHOST" (any case) as loopback, but http.ProxyFromEnvironment bypasses
// the proxy only for the exact name "localhost": with HTTP_PROXY set (as on
// many self-hosted runners), an exchange to http://LOCALHOST:PORT goes in
// the clear to the proxy, across the network, ID token and all.
func TestPlainHTTPToLoopbackNeverProxied(t *testing.T) {
	if os.Getenv("MAYFLY_PROXYTEST_CHILD") == "1" {
		// A fresh process: ProxyFromEnvironment reads the environment once.
		c, err := New(Config{Addr: os.Getenv("MAYFLY_PROXYTEST_ADDR")})
		if err != nil {
			t.Fatal(err)
		}
		_, _, _ = c.Exchange(context.Background(), ExchangeRequest{IDToken: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.SECRETSIG", Grants: []string{"deploy"}})
		return
	}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(400) }))
	defer server.Close()
	var mu sync.Mutex
	var proxied []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		proxied = append(proxied, r.Method+" "+r.URL.String()+" subject_token="+r.PostForm.Get("subject_token"))
		mu.Unlock()
		w.WriteHeader(502)
	}))
	defer proxy.Close()
	port := server.URL[strings.LastIndex(server.URL, ":")+1:]
	for _, addr := range []string{"http://localhost:" + port, "http://LOCALHOST:" + port, "http://LocalHost:" + port} {
		t.Run(addr, func(t *testing.T) {
			if _, err := NormalizeAddr(addr); err != nil {
				t.Skipf("refused: %v", err)
			}
			mu.Lock()
			proxied = nil
			mu.Unlock()
			cmd := exec.Command(os.Args[0], "-test.run=^TestPlainHTTPToLoopbackNeverProxied$", "-test.count=1")
			cmd.Env = append(os.Environ(), "MAYFLY_PROXYTEST_CHILD=1", "MAYFLY_PROXYTEST_ADDR="+addr,
				"HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(proxied) > 0 {
				t.Errorf("the exchange to %s went in plain HTTP through the proxy: %q", addr, proxied)
			}
		})
	}
}

// Whatever the environment says, plain http (loopback only) is never
// proxied, however the loopback name is spelt.
func TestProxyNeverForPlainHTTP(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	for _, u := range []string{"http://LOCALHOST:8443/v1/token", "http://LocalHost/", "http://localhost/", "http://127.0.0.1:1/", "http://[::1]:1/"} {
		req, err := http.NewRequest(http.MethodPost, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := Proxy(req); p != nil || err != nil {
			t.Errorf("%s: proxy %v, %v", u, p, err)
		}
	}
}
