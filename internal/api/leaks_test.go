package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// Connections that send a leak report's headers and then trickle its body
// hold no place in the queue shared by every reporter (GitHub's secret
// scanning, a scanner with --revoke): a complete report from another
// address is worked on; the slow address can only hold up its own.
func TestLeakReportsNotBlockedBySlowBodies(t *testing.T) {
	tests := []struct {
		name string
		from string // the complete report's address
		want int
	}{
		{"another address", "192.0.2.2", 200},
		{"the slow bodies' address", "192.0.2.1", 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The address a proxy would have resolved: each test
			// connection says its own.
			srv, _ := leakAPI(t, func(r *http.Request) netip.Addr { return netip.MustParseAddr(r.Header.Get("X-Test-From")) })
			// Default limits: 1 report at work and 8 waiting. Nine slow
			// senders from one address, within its 5/s (burst 20) rate.
			for range 9 {
				c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				fmt.Fprintf(c, "POST /v1/leaks HTTP/1.1\r\nHost: x\r\nX-Test-From: 192.0.2.1\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nsome")
			}
			time.Sleep(300 * time.Millisecond) // the nine are reading their bodies
			tok, _ := token.New(token.Job)
			r, _ := http.NewRequest("POST", srv.URL+"/v1/leaks", strings.NewReader("leaked: "+tok))
			r.Header.Set("Content-Type", "text/plain")
			r.Header.Set("X-Test-From", tt.from)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("a complete leak report from %s got %d while nine bodies were trickling in, want %d", tt.from, resp.StatusCode, tt.want)
			}
		})
	}
}

// A report sent with a Content-Encoding (gzip) is refused, not read as
// sent: its tokens are compressed out of sight, so it would answer 200 with
// nothing revoked, and the reporter would take the leak as handled.
func TestLeakReportWithContentEncodingRefused(t *testing.T) {
	srv, leases := leakAPI(t, nil)
	tok, _, err := leases.Issue(context.Background(), lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"g"}, TTL: time.Minute, MaxTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(tok + "\n"))
	zw.Close()
	tests := []struct {
		name, encoding string
		body           []byte
		want           int
	}{
		{"gzip", "gzip", gz.Bytes(), http.StatusUnsupportedMediaType},
		{"br", "br", []byte("x"), http.StatusUnsupportedMediaType},
		{"identity", "identity", []byte("nothing here"), http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", srv.URL+"/v1/leaks", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Content-Encoding", tt.encoding)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if _, err := leases.Lookup(context.Background(), tok); err != nil {
		t.Fatalf("a refused report revoked a token: %v", err)
	}
}

// leak_concurrency and leak_queue are places made at the start: a setting
// past any use is refused with a line that names it, not a panic (the sum
// overflowed) or an allocation of all memory.
func TestLeakPlacesBounded(t *testing.T) {
	tests := []struct {
		name              string
		concurrency, wait int
		ok                bool
	}{
		{"defaults", 0, 0, true},
		{"at the bound", 1 << 16, 1 << 16, true},
		{"concurrency past it", 1<<16 + 1, 0, false},
		{"queue near the int's max", 1, math.MaxInt - 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Limits: Limits{LeakConcurrency: tt.concurrency, LeakQueue: tt.wait}})
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "leak_queue") {
				t.Errorf("error %q names no setting", err)
			}
		})
	}
}

// leakAPI serves an API whose leak reports take the mayfly tokens of their
// text, over a fresh SQLite store; clientAddr, when set, says who calls.
func leakAPI(t *testing.T, clientAddr func(*http.Request) netip.Addr) (*httptest.Server, *lease.Manager) {
	t.Helper()
	return leakAPILimits(t, Limits{}, clientAddr)
}

// leakAPILimits is leakAPI with limits.
func leakAPILimits(t *testing.T, limits Limits, clientAddr func(*http.Request) netip.Addr) (*httptest.Server, *lease.Manager) {
	t.Helper()
	db := storetest.SQLite(t).DB
	h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	leases := lease.New(db, h, lease.Options{})
	log := &entries{fail: map[string]bool{}}
	a, err := New(Config{Authority: authority.New(authority.Config{Audit: log, Leases: leases}), Leases: leases, ClientAddr: clientAddr, Limits: limits,
		ParseLeakReport: func(b []byte) ([]string, string, string, error) {
			var out []string
			for _, m := range token.Find(b) {
				out = append(out, m.Token)
			}
			return out, "", "", nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return srv, leases
}

// One address cannot spend limits.leak_token_rate for every reporter:
// reports of made-up tokens sent from one address as fast as its rate
// allows (5 a second, each at the cap) kept the shared budget spent, and a
// genuine report from anywhere else (GitHub's, a scanner's --revoke) got
// 429 nine times in ten while the leaked token stayed live. An address may
// spend a quarter of the rate; the rest stays for the others.
func TestLeakBudgetNotTakenByOneAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	const flooder = "192.0.2.1"
	tests := []struct {
		name                     string
		from                     string // the small reports' address
		minAdmitted, maxAdmitted float64
	}{
		{"another address", "198.51.100.7", 0.6, 1},
		{"the flood's own address", flooder, 0, 0.4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := leakAPILimits(t, Limits{LeakTokenRate: 1000, MaxLeakTokens: 1000},
				func(r *http.Request) netip.Addr { return netip.MustParseAddr(r.Header.Get("X-Test-From")) })
			var flood strings.Builder
			for range 1000 {
				tok, _ := token.New(token.Job)
				flood.WriteString(tok + "\n")
			}
			send := func(from, body string) int {
				r, _ := http.NewRequest("POST", srv.URL+"/v1/leaks", strings.NewReader(body))
				r.Header.Set("Content-Type", "text/plain")
				r.Header.Set("X-Test-From", from)
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Error(err)
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(200 * time.Millisecond) // the address's 5 a second
				defer tick.Stop()
				for ctx.Err() == nil {
					send(flooder, flood.String())
					select {
					case <-ctx.Done():
					case <-tick.C:
					}
				}
			}()
			time.Sleep(1500 * time.Millisecond) // the flood under way
			admitted, sent := 0, 0
			for range 25 {
				tok, _ := token.New(token.Job)
				if send(tt.from, "leaked: "+tok) == 200 {
					admitted++
				}
				sent++
				time.Sleep(100 * time.Millisecond)
			}
			stop()
			<-done
			t.Logf("%d of %d small reports taken", admitted, sent)
			if share := float64(admitted) / float64(sent); share < tt.minAdmitted || share > tt.maxAdmitted {
				t.Fatalf("%d of %d small reports from %s were taken during the flood from %s (want a share in [%v, %v])", admitted, sent, tt.from, flooder, tt.minAdmitted, tt.maxAdmitted)
			}
		})
	}
}

// A reporter that hangs up once its report is read (a scanner killed by
// its job's timeout, a proxy's short deadline) still has its tokens
// revoked: the report was taken, and a leaked token left live because the
// sender stopped listening for the answer is the failure the endpoint
// exists to prevent. Before, the lookup and revocation ran under the
// request's context and stopped with it, leaving the token working.
func TestLeakReportOutlivesItsSender(t *testing.T) {
	tests := []struct {
		name   string
		hangUp bool
	}{
		{"sender waits for the answer", false},
		{"sender hangs up after sending", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := storetest.SQLite(t).DB
			h, _ := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			leases := lease.New(db, h, lease.Options{})
			tok, _, err := leases.Issue(context.Background(), lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"g"}, TTL: time.Minute, MaxTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			ctx, hangUp := context.WithCancel(context.Background())
			defer hangUp()
			a, err := New(Config{Authority: authority.New(authority.Config{Audit: &entries{fail: map[string]bool{}}, Leases: leases}), Leases: leases,
				ParseLeakReport: func(b []byte) ([]string, string, string, error) {
					var out []string
					for _, m := range token.Find(b) {
						out = append(out, m.Token)
					}
					if tt.hangUp {
						hangUp() // the whole report is in hand
					}
					return out, "", "", nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequestWithContext(ctx, "POST", "/v1/leaks", strings.NewReader("leaked: "+tok))
			req.Header.Set("Content-Type", "text/plain")
			a.ServeHTTP(httptest.NewRecorder(), req)
			if _, err := leases.Lookup(context.Background(), tok); err == nil {
				t.Fatal("the reported token still works")
			}
		})
	}
}
