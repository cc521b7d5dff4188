package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// receiver is a local webhook that answers the first fail requests with
// failStatus, then 200, and keeps what it was sent.
type receiver struct {
	mu         sync.Mutex
	fail       int
	failStatus int
	bodies     [][]byte
	headers    []http.Header
	got        chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.bodies = append(rc.bodies, b)
	rc.headers = append(rc.headers, r.Header.Clone())
	failing := rc.fail > 0
	rc.fail--
	rc.mu.Unlock()
	if failing {
		w.WriteHeader(rc.failStatus)
	}
	select {
	case rc.got <- struct{}{}:
	default: // nobody counts this many
	}
}

func entryBytes(t *testing.T, index int64, at time.Time, ev audit.Event) []byte {
	t.Helper()
	body, err := audit.EncodeEvent(nil, &ev)
	if err != nil {
		t.Fatal(err)
	}
	return audit.AppendEntry(nil, index, audit.FormatTime(at), body)
}

func newTestEngine(t *testing.T, url string, reg prometheus.Registerer, queue int, key []byte) *Engine {
	t.Helper()
	c := Config{Targets: []TargetConfig{{Name: "recv", URL: url, HMACKeyFile: "/unused"}}, Queue: queue,
		InitialBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, MaxAttempts: 4}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := New(c, Options{Keys: map[string][]byte{"recv": key}, Registerer: reg, Server: "https://mayfly.test"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDeliveryRetriesThenSucceeds(t *testing.T) {
	key := []byte("alert-test-key-0123456789")
	plantedToken := "mf" + "j_planted0SecretTokenValue0000000000000000"
	plantedSecret := "ghs_" + "PlantedUpstreamSecret0123456789abcdef"
	tests := []struct {
		name       string
		fail       int
		failStatus int
		wantPosts  int
		result     string
	}{
		{"first attempt", 0, 0, 1, "delivered"},
		{"fails twice, then succeeds", 2, http.StatusInternalServerError, 3, "delivered"},
		{"rate limited, then succeeds", 1, http.StatusTooManyRequests, 2, "delivered"},
		{"refused: not retried", 1, http.StatusBadRequest, 1, "failed"},
		{"down for every attempt", 100, http.StatusBadGateway, 4, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &receiver{fail: tt.fail, failStatus: tt.failStatus, got: make(chan struct{}, 200)}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			reg := prometheus.NewRegistry()
			e := newTestEngine(t, srv.URL+"/hook", reg, 10, key)
			ctx, cancel := context.WithCancel(context.Background())
			e.Start(ctx)
			defer func() { cancel(); e.Wait() }()

			now := time.Now()
			ent := entryBytes(t, 41, now, audit.Event{Type: audit.TypeLeak, Status: 200, Count: 1, Source: "127.0.0.1", Hint: "mfj_…abcd",
				Path: "/x/" + plantedSecret, Detail: map[string]any{"leases": []string{"l-1"}, "url": "https://paste.example/" + plantedSecret, "token": plantedToken}})
			if err := e.Sinks()[0].Write(ctx, [][]byte{ent}, 41); err != nil {
				t.Fatal(err)
			}
			for range tt.wantPosts {
				<-rc.got
			}
			// The worker counts the result after the last answer; wait for it.
			for counterValue(e.delivered.WithLabelValues("recv", tt.result)) != 1 {
				select {
				case <-rc.got:
					t.Fatal("more attempts than expected")
				default:
				}
				time.Sleep(time.Millisecond)
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if len(rc.bodies) != tt.wantPosts {
				t.Fatalf("%d posts, want %d", len(rc.bodies), tt.wantPosts)
			}
			for i, b := range rc.bodies {
				h := rc.headers[i]
				if err := Verify(key, h.Get(HeaderTimestamp), h.Get(HeaderSignature), b, time.Now(), time.Minute); err != nil {
					t.Fatalf("post %d: %v", i, err)
				}
				for _, planted := range []string{plantedToken, plantedSecret, string(key), "paste.example"} {
					if bytes.Contains(b, []byte(planted)) {
						t.Fatalf("post %d carries a planted value %q: %s", i, planted, b)
					}
				}
				var a Alert
				if err := json.Unmarshal(b, &a); err != nil {
					t.Fatal(err)
				}
				if a.Rule != RuleLeakRevoked || a.AuditIndex == nil || *a.AuditIndex != 41 || h.Get(HeaderAlertID) != a.ID || a.Event.Leases[0] != "l-1" {
					t.Fatalf("post %d: %s", i, b)
				}
			}
		})
	}
}

func TestFullQueueDropsNeverBlocks(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newTestEngine(t, "http://127.0.0.1:9/never-started", reg, 2, []byte("alert-test-key-0123456789"))
	// No worker runs: the queue fills at 2 and the rest are dropped, and
	// Raise returns each time.
	for i := range 5 {
		idx := int64(i)
		e.Raise(Alert{ID: "x", Rule: RuleMassRevocation, AuditIndex: &idx})
	}
	if got := counterValue(e.delivered.WithLabelValues("recv", "dropped")); got != 3 {
		t.Fatalf("dropped = %v, want 3", got)
	}
}

// max_age skips only what was history when the engine started: an entry
// logged since is news however late the engine reads it (a target
// retrying, a backlog).
func TestMaxAgeSkipsOnlyHistory(t *testing.T) {
	rc := &receiver{got: make(chan struct{}, 10)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	start := time.Now()
	now := start
	c := Config{Targets: []TargetConfig{{Name: "recv", URL: srv.URL, HMACKeyFile: "/unused"}}, MaxAge: 10 * time.Minute}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := New(c, Options{Keys: map[string][]byte{"recv": []byte("alert-test-key-0123456789")}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	leak := audit.Event{Type: audit.TypeLeak, Status: 200, Count: 3}
	history := entryBytes(t, 1, start.Add(-time.Hour), leak)
	late := entryBytes(t, 3, start.Add(time.Second), leak) // logged after the start, read an hour later
	now = start.Add(time.Hour)
	if err := e.Sinks()[0].Write(context.Background(), [][]byte{history, []byte("not an entry"), late}, 1); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var a Alert
	if len(rc.bodies) != 1 || json.Unmarshal(rc.bodies[0], &a) != nil || *a.AuditIndex != 3 {
		t.Fatalf("%d alerts sent, want 1, for entry 3: %s", len(rc.bodies), rc.bodies)
	}
}

// A target that is down holds back its own alerts only: each target's
// sink is read by its own forwarder, so the healthy one receives every
// alert while the dead one is still retrying its first.
func TestDeadTargetHoldsBackOnlyItself(t *testing.T) {
	pager := &receiver{got: make(chan struct{}, 10)}
	dead := &receiver{fail: 1 << 30, failStatus: http.StatusServiceUnavailable, got: make(chan struct{}, 1<<10)}
	pagerSrv, deadSrv := httptest.NewServer(pager), httptest.NewServer(dead)
	defer pagerSrv.Close()
	defer deadSrv.Close()
	c := Config{Targets: []TargetConfig{
		{Name: "chat", URL: deadSrv.URL, HMACKeyFile: "/unused"},
		{Name: "pager", URL: pagerSrv.URL, HMACKeyFile: "/unused"},
	}, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 1 << 20}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	key := []byte("alert-test-key-0123456789")
	e, err := New(c, Options{Keys: map[string][]byte{"chat": key, "pager": key}})
	if err != nil {
		t.Fatal(err)
	}
	leak := audit.Event{Type: audit.TypeLeak, Status: 200, Count: 1}
	entries := [][]byte{entryBytes(t, 1, time.Now(), leak), entryBytes(t, 2, time.Now(), leak)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, s := range e.Sinks() {
		wg.Go(func() {
			for i, ent := range entries {
				if s.Write(ctx, [][]byte{ent}, int64(i+1)) != nil {
					return
				}
			}
		})
	}
	for i := range entries {
		select {
		case <-pager.got:
		case <-time.After(10 * time.Second): // a bound on a hang, not a timing check
			t.Fatalf("the healthy target got %d of %d alerts while the other was down", i, len(entries))
		}
	}
}

// TestPostErrorsQuoteNeitherURLNorAnswer: a receiver whose answer cannot
// be understood gets an error saying so (logged with every failed
// attempt), never Go's text of it, which quotes the malformed line: a
// receiver that echoes the request line puts the webhook URL's secret
// path there.
func TestPostErrorsQuoteNeitherURLNorAnswer(t *testing.T) {
	const path = "/services/T0/B0/PLANTEDwebhookSECRET0123456789" // mayfly:allow
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nno route for " + r.Method + " " + r.RequestURI + "\r\n\r\n"))
	}))
	defer srv.Close()
	e := newTestEngine(t, srv.URL+path, prometheus.NewRegistry(), 1, []byte("alert-test-key-0123456789"))
	err := e.post(context.Background(), e.targets[0], "alt_1", []byte("{}"))
	if err == nil {
		t.Fatal("a malformed answer was taken for a delivery")
	}
	if s := err.Error(); strings.Contains(s, "PLANTED") || strings.Contains(s, "no route") || !strings.Contains(s, "not valid HTTP") {
		t.Errorf("post error %q: want what went wrong, quoting neither the URL nor the answer", s)
	}
}

// Write answers only once its alerts are through delivery, and an error
// when shutdown cut delivery short, so that the forwarder keeps its
// cursor and the alert is raised again, with the same id, after a
// restart: at least once, even across a crash.
func TestWriteHoldsTheCursorUntilDelivered(t *testing.T) {
	rc := &receiver{fail: 1 << 30, failStatus: http.StatusServiceUnavailable, got: make(chan struct{}, 1<<10)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	ent := entryBytes(t, 7, time.Now(), audit.Event{Type: audit.TypeLeak, Status: 200, Count: 1, Detail: map[string]any{"leases": []string{"l-7"}}})

	// The receiver is down; the process stops while delivery retries.
	c := Config{Targets: []TargetConfig{{Name: "recv", URL: srv.URL, HMACKeyFile: "/unused"}}, Queue: 4, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 1 << 20}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := Options{Keys: map[string][]byte{"recv": []byte("alert-test-key-0123456789")}}
	first, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	first.Start(ctx)
	wrote := make(chan error, 1)
	go func() { wrote <- first.Sinks()[0].Write(ctx, [][]byte{ent}, 7) }()
	<-rc.got
	<-rc.got // retrying
	select {
	case err := <-wrote:
		t.Fatalf("Write answered %v while its alert was undelivered", err)
	default:
	}
	cancel()
	if err := <-wrote; err == nil {
		t.Fatal("Write answered nil for an alert shutdown cut short")
	}
	first.Wait()

	// After the restart the receiver is up: the same entry raises the
	// same alert, and Write answers once it is delivered.
	rc.mu.Lock()
	rc.fail, rc.bodies = 0, nil
	rc.mu.Unlock()
	second, err := New(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer func() { cancel2(); second.Wait() }()
	second.Start(ctx2)
	if err := second.Sinks()[0].Write(ctx2, [][]byte{ent}, 7); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var a Alert
	if len(rc.bodies) != 1 || json.Unmarshal(rc.bodies[0], &a) != nil || a.ID != "leak_revoked-7" || *a.AuditIndex != 7 {
		t.Fatalf("after restart: %d bodies, alert %+v", len(rc.bodies), a)
	}
}

func TestAuditHealthFiresAndResolves(t *testing.T) {
	c := Config{Targets: []TargetConfig{{Name: "s", URL: "http://127.0.0.1:9/h", Format: "slack"}}, HealthInterval: time.Millisecond}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	states := []error{nil, errors.New("store down"), errors.New("store down"), nil}
	var calls int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.WatchHealth(ctx, func() error {
			if calls == len(states)-1 {
				cancel()
			}
			err := states[min(calls, len(states)-1)]
			calls++
			return err
		})
	}()
	<-done
	q := e.targets[0].queue
	if len(q) != 2 {
		t.Fatalf("%d alerts, want firing and resolved", len(q))
	}
	a, b := <-q, <-q
	if a.Rule != RuleAuditUnhealthy || a.Status != "firing" || b.Status != "resolved" || a.AuditIndex != nil {
		t.Fatalf("got %+v then %+v", a, b)
	}
	body, _ := render("slack", a)
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil || len(m) != 1 || m["text"] == "" {
		t.Fatalf("slack body %s", body)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// A failing mint reaches a target as an upstream_failure alert, and 100
// failures of one upstream in a row reach it as one.
func TestFailingMintAlertsOnce(t *testing.T) {
	rc := &receiver{got: make(chan struct{}, 200)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	e := newTestEngine(t, srv.URL+"/hook", prometheus.NewRegistry(), 10, []byte("alert-test-key-0123456789"))
	ctx, cancel := context.WithCancel(context.Background())
	e.Start(ctx)
	defer func() { cancel(); e.Wait() }()
	now := time.Now()
	var ents [][]byte
	for i := range 100 {
		ents = append(ents, entryBytes(t, int64(i), now.Add(time.Duration(i)*100*time.Millisecond), audit.Event{Type: audit.TypeCredentialMint,
			Lease: "lse_1", Grant: "release", Upstream: "github", Status: 503, Reason: "upstream_unavailable: GitHub is unreachable"}))
	}
	// Write returns once its alerts are settled: what was posted is all.
	if err := e.Sinks()[0].Write(ctx, ents, 0); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.bodies) != 1 {
		t.Fatalf("100 failed mints posted %d alerts, want 1", len(rc.bodies))
	}
	var a Alert
	if err := json.Unmarshal(rc.bodies[0], &a); err != nil {
		t.Fatal(err)
	}
	if a.Rule != RuleUpstreamFailure || a.Event == nil || a.Event.Upstream != "github" || a.Event.Type != audit.TypeCredentialMint || *a.AuditIndex != 0 {
		t.Fatalf("alert %+v, want upstream_failure about the first failed mint", a)
	}
}
