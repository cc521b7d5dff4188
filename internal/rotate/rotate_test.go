package rotate

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/secret"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

var ctx = context.Background()

// entries records audit events in memory, failing on demand, so tests can
// read what was recorded (the log itself is tested in its package). An
// action's entry (Record) counts once its transaction committed
// (Settle).
type entries struct {
	mu   sync.Mutex
	evs  []audit.Event
	fail bool
	// limit, when above 0, is how many entries it takes before it fails
	// (a disk that fills up).
	limit int
}

func (e *entries) Add(ctx context.Context, ev audit.Event) auditlog.Future {
	return auditlog.Answered(e.record(ctx, ev))
}

func (e *entries) refusing() bool { return e.fail || (e.limit > 0 && len(e.evs) >= e.limit) }

func (e *entries) record(_ context.Context, ev audit.Event) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refusing() {
		return 0, errors.New("disk full")
	}
	e.evs = append(e.evs, ev)
	return int64(len(e.evs)), nil
}

func (e *entries) Size() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return int64(len(e.evs))
}

func (e *entries) Record(ev audit.Event) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refusing() {
		return nil, errors.New("disk full")
	}
	return json.Marshal(ev)
}

func (e *entries) Settle(_ context.Context, _ int64, note *store.Note) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rec := range note.Records {
		var ev audit.Event
		if err := json.Unmarshal(rec, &ev); err != nil {
			panic(err)
		}
		e.evs = append(e.evs, ev)
	}
	return nil
}

func (e *entries) json(t *testing.T) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, err := json.Marshal(e.evs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type counts struct {
	mu       sync.Mutex
	ok, bad  int
	failures map[string]int
}

func (c *counts) Rotated(_ string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.ok++
	} else {
		c.bad++
	}
}

func (c *counts) Failing(name string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failures == nil {
		c.failures = map[string]int{}
	}
	c.failures[name] = n
}

// clock is a settable time for the schedule.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time           { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration)      { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock                    { return &clock{t: time.Now()} }
func secretValue(prefix string) []byte    { return []byte(prefix + rand.Text()) }
func mustJSON(t *testing.T, v any) []byte { b, _ := json.Marshal(v); return b }

// script writes an executable rotator; skipped where there is no /bin/sh.
func script(t *testing.T, body string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("rotator scripts are POSIX shell")
	}
	p := filepath.Join(t.TempDir(), "rotator.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

type rig struct {
	db    *store.DB
	vault *secret.Vault
	log   *entries
	obs   *counts
	clock *clock
	m     *Manager
	// refused counts the settings refused for their MAC (Config.Refused).
	refused atomic.Int64
}

func newRig(t *testing.T, b storetest.Backend, rotators map[string][]string, key []byte) *rig {
	t.Helper()
	v, err := secret.Open(ctx, b.DB, key, secret.Options{RecordCacheTTL: -1, RetireGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	r := &rig{db: b.DB, vault: v, log: &entries{}, obs: &counts{}, clock: newClock()}
	r.m, err = New(Config{Store: b.DB, Vault: v, Audit: r.log, Rotators: rotators, Observer: r.obs, Now: r.clock.Now, Timeout: 20 * time.Second,
		// The cluster's rotation key, the same for every node of one
		// master key (the server's is a system key the vault seals).
		Key: append([]byte("rotation-mac:"), key...), Refused: func(string) { r.refused.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) put(t *testing.T, name string, value []byte, spec string) {
	t.Helper()
	if _, err := r.vault.Put(ctx, name, value); err != nil {
		t.Fatal(err)
	}
	if spec == "" {
		return
	}
	s, err := r.m.Parse(ctx, name, []byte(spec), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.m.Set(ctx, name, &s); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) value(t *testing.T, name string) string {
	t.Helper()
	v, _, err := r.vault.Reveal(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestCommandRotator(t *testing.T) {
	t.Setenv("MAYFLY_PLANTED_ENV", "server-only")
	tests := []struct {
		name    string
		body    string
		want    func(old string) string // nil: the attempt fails
		wantErr string
	}{
		{"new value from the old", `read v; printf '%s-next\n' "$v"`, func(o string) string { return o + "-next" }, ""},
		{"no trailing newline", `read v; printf 'fresh-%s' "$MAYFLY_SECRET_NAME"`, func(string) string { return "fresh-api" }, ""},
		{"minimal environment", `read v; printf '%s|%s|%s' "${MAYFLY_PLANTED_ENV:-clean}" "${HOME:-nohome}" "$PATH"`,
			func(string) string { return "clean|nohome|/usr/local/bin:/usr/bin:/bin" }, ""},
		{"exits non-zero", `read v; echo "$v" >&2; exit 3`, nil, "exited with status 3"},
		{"prints nothing", `cat >/dev/null`, nil, "printed no value"},
		{"prints the same value", `cat`, nil, "printed the current value unchanged"},
		{"prints too much", `head -c 70000 /dev/zero | tr '\0' a`, nil, "printed more than"},
		{"never answers", `sleep 30`, nil, "no answer within"},
	}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					bb := storetest.SQLite(t)
					if b.Name != "sqlite" {
						bb = storetest.Postgres(t)
					}
					r := newRig(t, bb, map[string][]string{"x": {script(t, tt.body)}}, key(t))
					r.m.cfg.Timeout = 2 * time.Second
					if tt.name != "never answers" {
						r.m.cfg.Timeout = 30 * time.Second
					}
					old := "old-" + rand.Text()
					r.put(t, "api", []byte(old), `{"every":"1h","via":{"command":"x"}}`)
					res, err := r.m.Rotate(ctx, "api", "alice", "127.0.0.1")
					st, gerr := r.m.Get(ctx, "api")
					if gerr != nil {
						t.Fatal(gerr)
					}
					if tt.want == nil {
						if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tt.wantErr) {
							t.Fatalf("err = %v, want %q", err, tt.wantErr)
						}
						if got := r.value(t, "api"); got != old {
							t.Fatalf("a failed rotation changed the value")
						}
						if st.Failures != 1 || !strings.Contains(st.LastError, tt.wantErr) || r.obs.bad != 1 || r.obs.failures["api"] != 1 {
							t.Fatalf("failure not visible: state %+v, observer %+v", st, r.obs)
						}
						if strings.Contains(r.log.json(t), old) || strings.Contains(st.LastError, old) {
							t.Fatal("the value reached the audit log or the state")
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					if got := r.value(t, "api"); got != tt.want(old) || res.Version != 2 {
						t.Fatalf("value = %q v%d, want %q v2", got, res.Version, tt.want(old))
					}
					prev, _, err := r.vault.RevealPrevious(ctx, "api")
					if err != nil || string(prev) != old {
						t.Fatalf("previous in grace = %v", err)
					}
					if st.LastVersion != 2 || st.Failures != 0 || !st.NextAt.Equal(r.clock.Now().Add(time.Hour)) {
						t.Fatalf("state = %+v", st)
					}
					if j := r.log.json(t); strings.Contains(j, old) || strings.Contains(j, tt.want(old)) {
						t.Fatal("a value reached the audit log")
					}
				})
			}
		})
	}
}

func key(t *testing.T) []byte {
	k := make([]byte, secret.KeySize)
	rand.Read(k)
	return k
}

// A rotator leaves nothing running: what it started in the background is
// killed with it, whether it answered or ran out of time.
func TestCommandRotatorLeavesNothing(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("process groups")
	}
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"answered", `(sleep 2; touch "$(dirname "$0")/leftover") & read v; printf 'new-%s' "$v"`, true},
		{"timed out", `(sleep 2; touch "$(dirname "$0")/leftover") & sleep 30`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := script(t, tt.body)
			r := newRig(t, storetest.SQLite(t), map[string][]string{"x": {p}}, key(t))
			r.m.cfg.Timeout = time.Second
			if tt.ok {
				r.m.cfg.Timeout = 30 * time.Second
			}
			r.put(t, "api", secretValue("v-"), `{"every":"1h","via":{"command":"x"}}`)
			if _, err := r.m.Rotate(ctx, "api", "alice", ""); (err == nil) != tt.ok {
				t.Fatalf("rotate: %v", err)
			}
			// Had the background child survived, it would have made the
			// file 2 s after it started.
			time.Sleep(3 * time.Second)
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), "leftover")); err == nil {
				t.Fatal("the rotator's background child outlived it")
			}
		})
	}
}

// The schedule: due secrets rotate once (whichever node gets there), a
// failure backs off and keeps the value, the audit log says what happened,
// on-demand rotation refuses what it should.
func TestScheduleAndOnDemand(t *testing.T) {
	counter := script(t, `read v; n=$(cat "$(dirname "$0")/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$(dirname "$0")/n"; printf 'value-%s-%s' "$n" "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"`)
	failing := script(t, `exit 1`)
	rotators := map[string][]string{"count": {counter}, "fail": {failing}}
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			k := key(t)
			r := newRig(t, b, rotators, k)
			// A second node on the same database, same clock.
			r2 := newRig(t, storetest.Backend{Name: b.Name, DB: b.Another(t)}, rotators, k)
			r2.clock = r.clock
			r2.m.cfg.Now = r.clock.Now
			r2.m.cfg.Audit = r.log // one log for the cluster
			r.put(t, "a", secretValue("a-"), `{"every":"1h","via":{"command":"count"}}`)
			r.put(t, "b", secretValue("b-"), `{"every":"2h","grace":"0s","via":{"command":"fail"}}`)
			r.put(t, "plain", secretValue("p-"), "")

			if n, err := r.m.RunDue(ctx); err != nil || n != 0 {
				t.Fatalf("nothing due yet: %d %v", n, err)
			}
			r.clock.add(61 * time.Minute)
			var wg sync.WaitGroup
			ns := make([]int, 2)
			for i, m := range []*Manager{r.m, r2.m} {
				wg.Add(1)
				go func() { defer wg.Done(); ns[i], _ = m.RunDue(ctx) }()
			}
			wg.Wait()
			if ns[0]+ns[1] != 1 {
				t.Fatalf("attempts by the two nodes = %v, want 1 in all", ns)
			}
			if m, _ := r.vault.Meta(ctx, "a"); m.Version != 2 {
				t.Fatalf("a is v%d after one due rotation, want v2", m.Version)
			}
			// b is not due until 2h; then it fails, keeps its value, backs
			// off (a, due again, rotates to v3).
			bOld := r.value(t, "b")
			r.clock.add(60 * time.Minute)
			r.m.RunDue(ctx)
			st, _ := r.m.Get(ctx, "b")
			if st.Failures != 1 || r.value(t, "b") != bOld || !st.NextAt.Equal(r.clock.Now().Add(time.Minute)) {
				t.Fatalf("b after a failure: %+v", st)
			}
			r.clock.add(time.Minute)
			r.m.RunDue(ctx)
			if st, _ = r.m.Get(ctx, "b"); st.Failures != 2 || !st.NextAt.Equal(r.clock.Now().Add(2*time.Minute)) {
				t.Fatalf("b after a second failure: %+v", st)
			}
			// The schedule survives a restart: a new manager on a reopened
			// store finds a's next time where the first left it.
			sa, _ := r.m.Get(ctx, "a")
			fresh, err := New(Config{Store: b.Another(t), Vault: r.vault, Audit: r.log, Now: r.clock.Now, Rotators: rotators})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := fresh.Get(ctx, "a"); !got.NextAt.Equal(sa.NextAt) || got.LastVersion != sa.LastVersion || sa.LastVersion != 3 {
				t.Fatalf("after restart: %+v, want next %v", got, sa.NextAt)
			}

			// On demand.
			onDemand := []struct {
				name    string
				secret  string
				want    error
				version int
			}{
				{"rotates now", "a", nil, 4},
				{"no rotation", "plain", ErrNoRotation, 0},
				{"no such secret", "ghost", secret.ErrNotFound, 0},
				{"rotator fails", "b", ErrFailed, 0},
			}
			for _, tt := range onDemand {
				res, err := r.m.Rotate(ctx, tt.secret, "alice", "10.0.0.1")
				if !errors.Is(err, tt.want) || res.Version != tt.version {
					t.Errorf("%s: = v%d %v, want v%d %v", tt.name, res.Version, err, tt.version, tt.want)
				}
			}
			// While another node holds the claim: busy.
			now := r.clock.Now()
			if _, err := r.db.ClaimRotation(ctx, "a", "elsewhere", now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if _, err := r.m.Rotate(ctx, "a", "alice", ""); !errors.Is(err, ErrBusy) {
				t.Fatalf("rotate while claimed: %v", err)
			}
			r.clock.add(2 * time.Hour)
			// An audit log that cannot record: nothing runs.
			r.log.fail = true
			if _, err := r.m.Rotate(ctx, "a", "alice", ""); !errors.Is(err, failclosed.ErrUnavailable) {
				t.Fatalf("rotate without audit: %v", err)
			}
			r.log.fail = false
			if m, _ := r.vault.Meta(ctx, "a"); m.Version != 4 {
				t.Fatalf("an unaudited rotation ran: a is v%d", m.Version)
			}
			// The audit log: a start and an outcome per attempt, no value.
			var started, ok, failed int
			for _, ev := range r.log.evs {
				if ev.Type != AuditType {
					t.Fatalf("unexpected entry %+v", ev)
				}
				switch {
				case ev.Reason == "started":
					started++
				case ev.Status == 200 && ev.SecretVersion > 0:
					ok++
				case ev.Status == 502 && ev.Reason != "":
					failed++
				}
			}
			if started != 3+3 || ok != 3 || failed != 3 {
				t.Fatalf("entries: %d started, %d ok, %d failed; %s", started, ok, failed, r.log.json(t))
			}
			for _, n := range []string{"a", "b", "plain"} {
				if v := r.value(t, n); strings.Contains(r.log.json(t), v) {
					t.Fatalf("value of %s in the audit log", n)
				}
			}
			// Removing the rotation, and removing it again, is fine.
			if err := r.m.Set(ctx, "a", nil); err != nil {
				t.Fatal(err)
			}
			if err := r.m.Set(ctx, "a", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := r.m.Get(ctx, "a"); !errors.Is(err, ErrNoRotation) {
				t.Fatalf("after removal: %v", err)
			}
			all, err := r.m.All(ctx)
			if err != nil || len(all) != 1 || all["b"].Spec.Kind() != "command:fail" {
				t.Fatalf("all = %+v %v", all, err)
			}
		})
	}
}

// A rotation writes a new version of a secret, an action whose entry
// must be durable before it stands (SPEC section 6). When the audit log
// stops taking entries after the "started" one, the new version is not
// stored and the caller is not told the rotation succeeded. Before, the
// version was stored outside any audit transaction and the outcome
// entry's failure was only logged.
func TestRotationOutcomeUnrecorded(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			rot := script(t, `read v; printf '%s-next\n' "$v"`)
			r := newRig(t, b, map[string][]string{"r": {rot}}, key(t))
			r.put(t, "api", []byte("v1"), `{"every":"24h","via":{"command":"r"}}`)
			r.log.limit = 1 // the started entry is taken, the outcome's refused
			if _, err := r.m.Rotate(ctx, "api", "alice", ""); !errors.Is(err, ErrFailed) {
				t.Fatalf("a rotation whose entry could not be written: %v, want ErrFailed", err)
			}
			if now := r.value(t, "api"); now != "v1" {
				t.Fatalf("the value was replaced (%q) with no audit entry recording it", now)
			}
			// With room in the log again, the rotation and its entry stand.
			r.log.limit = 0
			r.clock.add(time.Hour) // past the failure's backoff
			res, err := r.m.Rotate(ctx, "api", "alice", "")
			if err != nil {
				t.Fatal(err)
			}
			recorded := false
			for _, ev := range r.log.evs {
				recorded = recorded || ev.Type == AuditType && ev.Status == 200 && ev.SecretVersion == res.Version && ev.Detail["grace_until"] != nil
			}
			if now := r.value(t, "api"); now != "v1-next" || !recorded {
				t.Fatalf("after the log recovered: value %q, entry of v%d recorded %v: %s", now, res.Version, recorded, r.log.json(t))
			}
		})
	}
}

func TestScrub(t *testing.T) {
	v := []byte("hunter2-secret")
	tests := []struct{ in, want string }{
		{"plain failure", "plain failure"},
		{"bad value hunter2-secret here", "bad value *** here"},
	}
	for _, tt := range tests {
		if got := scrub(errors.New(tt.in), v).Error(); got != tt.want {
			t.Errorf("scrub(%q) = %q", tt.in, got)
		}
	}
	_ = fmt.Sprint(mustJSON(t, 1))
}

// A timeout past MaxTimeout is refused: a claim lasts twice it plus a
// minute from now, which near 146 years overflowed time.Duration.
func TestTimeoutBound(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		ok      bool
	}{
		{MaxTimeout, true},
		{MaxTimeout + 1, false},
		{146 * 365 * 24 * time.Hour, false},
	} {
		_, err := New(Config{Timeout: tc.timeout})
		if (err == nil) != tc.ok {
			t.Errorf("timeout %s: %v, want accepted %v", tc.timeout, err, tc.ok)
		}
	}
}
