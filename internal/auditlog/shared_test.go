package auditlog

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/proccpu"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// sharedNodes opens n logs in shared mode, each over a store of its own,
// on one fresh PostgreSQL schema, as n nodes of a cluster.
func sharedNodes(t *testing.T, n int) ([]*Log, []*store.DB, string) {
	t.Helper()
	return sharedNodesWith(t, n, Options{})
}

// sharedNodesWith is sharedNodes with opts (Shared and CheckpointInterval
// set here).
func sharedNodesWith(t *testing.T, n int, opts Options) ([]*Log, []*store.DB, string) {
	t.Helper()
	opts.Shared, opts.CheckpointInterval = true, 50*time.Millisecond
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	ctx := context.Background()
	logs := make([]*Log, n)
	dbs := make([]*store.DB, n)
	for i := range logs {
		db, err := store.Open(ctx, store.Config{PostgresDSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
		logs[i] = openLog(t, db, opts)
	}
	return logs, dbs, dsn
}

// load appends from every node at once (awaited appends, written ones,
// and forwarded requests' Begin and Finish) until stop is closed or each
// worker made per appends, and returns the awaited appends' indexes and
// the number of appends and requests made (a request makes one entry, or
// two when its decision got an entry of its own: see closeAndVerify).
func load(t *testing.T, logs []*Log, workers, per int, stop <-chan struct{}) (idx []int64, entries int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(logs)*workers)
	for n, l := range logs {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					ev := gatewayEvent(n*1_000_000 + w*10_000 + i)
					var got int64
					var err error
					switch i % 3 {
					case 0:
						got, err = l.appendDurable(ctx, ev)
					case 1:
						got, err = l.appendWritten(ctx, ev)
					default:
						var in *Intent
						if in, err = l.begin(ctx, ev); err == nil {
							l.Finish(in, completed(ev), "gateway.response")
							got = -1
						}
					}
					cancel()
					if err != nil {
						errs <- fmt.Errorf("node %d worker %d append %d: %w", n, w, i, err)
						return
					}
					mu.Lock()
					if got >= 0 {
						idx = append(idx, got)
					}
					entries++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	return idx, entries
}

// completed is ev as its request's completion records it.
func completed(ev audit.Event) audit.Event {
	ev.BytesIn, ev.DurationMS = 99, 7
	return ev
}

// closeAndVerify closes the logs and verifies the shared log: want
// entries and an outcome entry for each decision that got an entry of its
// own, each awaited index once, and a checkpoint covering them.
func closeAndVerify(t *testing.T, logs []*Log, db *store.DB, want int, idx []int64) {
	t.Helper()
	ctx := context.Background()
	for _, l := range logs {
		if err := l.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	seen := map[int64]bool{}
	for _, i := range idx {
		if seen[i] {
			t.Fatalf("index %d returned to two appends", i)
		}
		seen[i] = true
	}
	res, err := audit.Verify(ctx, db, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	entries, err := db.AuditEntries(ctx, 0, int(res.Size)+1)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := checkOutcomes(t, entries)
	if res.Size != int64(want+outcomes) || res.Checkpoint.Size != res.Size {
		t.Fatalf("log of %d entries, checkpoint at %d; want %d and %d outcomes", res.Size, res.Checkpoint.Size, want, outcomes)
	}
	for _, i := range idx {
		e, err := audit.ParseEntry(entries[i])
		if err != nil || e.Index != i {
			t.Fatalf("entry %d: %+v, %v", i, e, err)
		}
	}
	var pending int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_pending`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("%d entries still pending (%v)", pending, err)
	}
}

// checkOutcomes checks that every outcome entry names its decision's
// entry, an earlier gateway entry of the same request that is only the
// decision, and returns how many there are.
func checkOutcomes(t *testing.T, raw [][]byte) int {
	t.Helper()
	n := 0
	for i, b := range raw {
		e, err := audit.ParseEntry(b)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if e.Type != "gateway.response" {
			continue
		}
		n++
		ri, ok := e.Detail["request_index"].(float64)
		if !ok || ri < 0 || int64(ri) >= e.Index {
			t.Fatalf("outcome %d names request_index %v", e.Index, e.Detail["request_index"])
		}
		d, err := audit.ParseEntry(raw[int64(ri)])
		if e.BytesIn != 99 {
			t.Fatalf("outcome %d does not carry its completion: %+v", e.Index, e.Event)
		}
		if err != nil || d.Type != audit.TypeGateway || d.Path != e.Path || d.Lease != e.Lease || d.BytesIn != 0 {
			t.Fatalf("outcome %d (%s) names entry %d: %+v %v", e.Index, e.Path, int64(ri), d.Event, err)
		}
	}
	return n
}

// waitSequencer returns the index of the log that holds the sequencer
// lock, once one does (at most 20 s).
func waitSequencer(t *testing.T, logs []*Log) int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		for i, l := range logs {
			if l.sh.leader.Load() {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node became the sequencer")
		}
	}
}

// waitSize waits until every one of logs has at least want entries, at
// most within.
func waitSize(t *testing.T, within time.Duration, want int64, logs ...*Log) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(time.Millisecond) {
		behind := -1
		for i, l := range logs {
			if l.Size() < want {
				behind = i
				break
			}
		}
		if behind < 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %d has %d entries after %v, want %d", behind, logs[behind].Size(), within, want)
		}
	}
}

// An outcome whose decision was sequenced by a sequencer that has gone
// names the decision's index all the same: the new sequencer, which never
// saw the decision, finds it in the log.
func TestSharedOutcomeAfterFailover(t *testing.T) {
	logs, dbs, _ := sharedNodes(t, 3)
	ctx := context.Background()
	if _, err := logs[0].appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	leader := waitSequencer(t, logs)
	other := (leader + 1) % 3
	var ins []*Intent
	for i := 1; i <= 20; i++ {
		in, err := logs[other].begin(ctx, gatewayEvent(i))
		if err != nil {
			t.Fatal(err)
		}
		ins = append(ins, in)
	}
	// The leader holds the decisions for their completions and, leaving,
	// gives them entries of their own.
	if _, err := logs[other].appendDurable(ctx, gatewayEvent(100)); err != nil {
		t.Fatal(err)
	}
	if err := logs[leader].Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, in := range ins {
		logs[other].Finish(in, completed(gatewayEvent(i+1)), "gateway.response")
	}
	var rest []*Log
	for i, l := range logs {
		if i != leader {
			rest = append(rest, l)
		}
	}
	closeAndVerify(t, rest, dbs[other], 20+2, nil)
	raw, err := dbs[other].AuditEntries(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n := checkOutcomes(t, raw); n != 20 {
		t.Fatalf("%d outcomes, want 20", n)
	}
}

// A forwarded request gets one entry, decision and outcome together,
// whichever node records it; a decision whose completion does not come
// within the hold gets an entry of its own, and the completion, when it
// comes, an outcome entry naming it.
func TestSharedRequestOneEntry(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		hold time.Duration
		// released decisions get entries of their own before any request
		// completes (the test waits for them): their requests get two
		// entries, every other request one.
		released int
	}{
		{"completed within the hold", 10, time.Minute, 0},
		{"completed after the hold", 10, 20 * time.Millisecond, 10},
		{"more in flight than the sequencer holds", maxHeld + 50, time.Minute, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, dbs, _ := sharedNodesWith(t, 2, Options{intentHold: tc.hold})
			ctx := context.Background()
			var ins []*Intent
			for i := range tc.n {
				in, err := logs[i%2].begin(ctx, gatewayEvent(i))
				if err != nil {
					t.Fatal(err)
				}
				ins = append(ins, in)
			}
			waitSize(t, 20*time.Second, int64(tc.released), logs...)
			for i, in := range ins {
				logs[i%2].Finish(in, completed(gatewayEvent(i)), "gateway.response")
			}
			// Before any Close (whose last round holds nothing back).
			want := tc.n + tc.released
			waitSize(t, 20*time.Second, int64(want), logs...)
			closeAndVerify(t, logs, dbs[0], tc.n, nil)
			raw, err := dbs[0].AuditEntries(ctx, 0, 3*tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) != want {
				t.Fatalf("%d entries for %d requests, want %d", len(raw), tc.n, want)
			}
			whole := 0
			for _, b := range raw {
				e, err := audit.ParseEntry(b)
				if err != nil {
					t.Fatal(err)
				}
				if e.Type == audit.TypeGateway && e.BytesIn == 99 {
					whole++
				}
			}
			if whole != tc.n-tc.released {
				t.Fatalf("%d requests in one entry, want %d", whole, tc.n-tc.released)
			}
		})
	}
}

// A busy sequencer's rounds are paced, not one per commit of its node:
// each round costs a read and a fold (two statements, their round trips,
// a transaction) whatever it carries, and nobody waits for an index, so
// under steady load it takes what came in the last seqPoll at once. At
// 2 ms apart (up to 500 rounds a second) the rounds were most of a busy
// cluster's statements per gateway call, the more so the slower its nodes.
func TestSharedSequencerRoundsPaced(t *testing.T) {
	var mu sync.Mutex
	starts := map[*Log][]time.Time{}
	logs, _, _ := sharedNodesWith(t, 2, Options{seqRound: func(l *Log, began time.Time) {
		mu.Lock()
		starts[l] = append(starts[l], began)
		mu.Unlock()
	}})
	ctx := context.Background()
	if _, err := logs[0].appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	leader := logs[waitSequencer(t, logs)]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n, l := range logs {
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ev := gatewayEvent(n*1_000_000 + w*100_000 + i)
					in, err := l.begin(ctx, ev)
					if err != nil {
						t.Error(err)
						return
					}
					l.Finish(in, completed(ev), "gateway.response")
				}
			})
		}
	}
	time.Sleep(200 * time.Millisecond) // steady load
	mu.Lock()
	from := len(starts[leader])
	mu.Unlock()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	rounds := slices.Clone(starts[leader][from:])
	mu.Unlock()
	if len(rounds) < 3 {
		t.Fatalf("the sequencer ran %d rounds in 2 s of steady load", len(rounds))
	}
	least := time.Hour
	for i := 1; i < len(rounds); i++ {
		least = min(least, rounds[i].Sub(rounds[i-1]))
	}
	t.Logf("%d rounds in 2 s, the closest %v apart", len(rounds), least)
	if least < seqPollFloor {
		t.Fatalf("two rounds began %v apart under steady load, want at least %v", least, seqPollFloor)
	}
}

// A node that is not the sequencer is not woken by its own commits: it
// has nothing to sequence, and a round there only checks whether an
// election or a read of the log's size is due. Under steady load it ran
// a round per commit (up to one per seqPoll), each a wake-up of its loop
// and of its sleep; now it wakes at seqIdle.
func TestSharedFollowerNotWokenByCommits(t *testing.T) {
	var mu sync.Mutex
	rounds := map[*Log]int{}
	logs, _, _ := sharedNodesWith(t, 2, Options{seqRound: func(l *Log, _ time.Time) {
		mu.Lock()
		rounds[l]++
		mu.Unlock()
	}})
	ctx := context.Background()
	if _, err := logs[0].appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	follower := logs[1-waitSequencer(t, logs)]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	commits := 0
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ev := gatewayEvent(w*100_000 + i)
				in, err := follower.begin(ctx, ev)
				if err != nil {
					t.Error(err)
					return
				}
				follower.Finish(in, completed(ev), "gateway.response")
				mu.Lock()
				commits++
				mu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // steady load
	mu.Lock()
	r0, c0 := rounds[follower], commits
	mu.Unlock()
	const d = 2 * time.Second
	time.Sleep(d)
	mu.Lock()
	r, c := rounds[follower]-r0, commits-c0
	mu.Unlock()
	close(stop)
	wg.Wait()
	t.Logf("the follower ran %d rounds in %v while it recorded %d requests", r, d, c)
	if c < 50 {
		t.Skipf("only %d requests recorded in %v: too few to tell", c, d)
	}
	// One round per seqIdle, and a few at the shorter waits that lead
	// up to it.
	if limit := int(d/seqIdle) + 10; r > limit {
		t.Fatalf("the follower ran %d rounds in %v while it recorded %d requests, want at most %d", r, d, c, limit)
	}
}

// seqPollFloor is the least spacing of a busy sequencer's rounds that
// TestSharedSequencerRoundsPaced holds it to.
const seqPollFloor = 10 * time.Millisecond

// Three nodes on one PostgreSQL append at once: none fails, none
// conflicts, and together they write one log that verifies.
func TestSharedNodesAppend(t *testing.T) {
	logs, dbs, _ := sharedNodes(t, 3)
	idx, n := load(t, logs, 4, 30, nil)
	for i, l := range logs {
		if err := l.Healthy(); err != nil {
			t.Errorf("node %d unhealthy: %v", i, err)
		}
		if c := counterValue(t, l.metrics.conflicts); c != 0 {
			t.Errorf("node %d: %v conflicts", i, c)
		}
	}
	closeAndVerify(t, logs, dbs[0], n, idx)
}

// Ending the sequencer's database session under load moves sequencing to
// another session (another node, or the same one anew); every append is
// answered and the log verifies.
func TestSharedSequencerFailover(t *testing.T) {
	logs, dbs, dsn := sharedNodes(t, 3)
	ctx := context.Background()
	if _, err := logs[0].appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	leaderPID := func() (int, int64) {
		for i, l := range logs {
			if pid := l.sh.pid.Load(); pid != 0 {
				return i, pid
			}
		}
		return -1, 0
	}
	_, pid := leaderPID()
	if pid == 0 {
		t.Fatal("an entry was sequenced, but no node is the sequencer")
	}
	stop := make(chan struct{})
	var idx []int64
	var n int
	done := make(chan struct{})
	go func() {
		defer close(done)
		idx, n = load(t, logs, 3, 1<<30, stop)
	}()
	for counterValue(t, logs[0].metrics.appends) < 20 {
		time.Sleep(time.Millisecond)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var ok bool
	if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminating the sequencer's session %d: %v, %v", pid, ok, err)
	}
	// Until another session sequences entries recorded after the kill.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, p := leaderPID(); p != 0 && p != pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no node took over sequencing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := logs[2].appendDurable(ctx, gatewayEvent(1)); err != nil {
		t.Fatalf("Append after the fail-over: %v", err)
	}
	close(stop)
	<-done
	closeAndVerify(t, logs, dbs[1], n+2, idx)
}

// A shared log refuses a store that cannot record pending entries.
func TestSharedNeedsPendingStore(t *testing.T) {
	_, err := Open(context.Background(), newMemStore(), testSigner, Options{Shared: true})
	if err == nil || errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("Open(shared, memory store) = %v, want a configuration error", err)
	}
}

// BenchmarkSharedSequencer measures how fast the one sequencer of a
// shared log folds pending entries, b.N of them recorded beforehand (as
// many nodes would): its capacity, which does not grow with nodes.
//
//	MAYFLY_TEST_POSTGRES=… go test ./internal/auditlog -run X -bench SharedSequencer -benchtime 50000x
func BenchmarkSharedSequencer(b *testing.B) {
	db := freshPostgres(b)
	ctx := context.Background()
	ts := audit.FormatTime(time.Now())
	for off := 0; off < b.N; off += 1000 {
		var recs [][]byte
		for i := off; i < min(off+1000, b.N); i++ {
			body, _ := encodeEvent(gatewayEvent(i))
			recs = append(recs, sealed(append([]byte(ts+"\n"), body...)))
		}
		if _, err := db.AddAuditPending(ctx, recs, store.AuditDurable); err != nil {
			b.Fatal(err)
		}
	}
	drain(b, db, int64(b.N), "entries/s", "node-cpu-µs/entry")
}

// freshPostgres opens a store on a schema of its own in the test database
// (skipped without one), closed when tb ends.
func freshPostgres(tb testing.TB) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), store.Config{PostgresDSN: storetest.FreshSchema(tb, storetest.PostgresDSN(tb))})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// drain opens a shared log on db, whose pending records make size
// entries, waits until its sequencer has placed them all, and reports the
// rate of the benchmark's b.N items (rate) and the node's CPU per item
// (cpu).
func drain(b *testing.B, db *store.DB, size int64, rate, cpu string) {
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := proccpu.Used()
	l, err := Open(ctx, db, testSigner, Options{Shared: true, CheckpointInterval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	for l.Size() < size {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), rate)
	b.ReportMetric(float64((proccpu.Used()-cpu0).Microseconds())/float64(b.N), cpu)
	if err := l.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if l.Size() != size {
		b.Fatalf("%d entries, want %d", l.Size(), size)
	}
}

// BenchmarkSharedSequencerRequests drains the pending records of b.N
// forwarded requests, decision then completion, recorded before the
// sequencer starts, in chunks of 500 requests: as this mayfly records them
// (an intent and its completion, folded into one entry) and as mayfly did
// before (a decision and an outcome whose index the sequencer writes in:
// two entries, a form the sequencer still reads). Reports the requests a
// second one sequencer places, what bounds a cluster's gateway calls.
func BenchmarkSharedSequencerRequests(b *testing.B) {
	for _, form := range []string{"one_entry", "two_entries"} {
		b.Run(form, func(b *testing.B) {
			db := freshPostgres(b)
			ctx := context.Background()
			ts := audit.FormatTime(time.Now())
			entries := 0
			for off := 0; off < b.N; off += 500 {
				var decisions, outcomes [][]byte
				for i := off; i < min(off+500, b.N); i++ {
					body, _ := encodeEvent(gatewayEvent(i))
					head := ts + "\n"
					if form == "one_entry" {
						head = ts + " intent\n"
					}
					decisions = append(decisions, sealed(append([]byte(head), body...)))
				}
				pids, err := db.AddAuditPending(ctx, decisions, store.AuditDurable)
				if err != nil {
					b.Fatal(err)
				}
				for k, pid := range pids {
					ev := completed(gatewayEvent(off + k))
					if form == "one_entry" {
						body, _ := encodeEvent(ev)
						outcomes = append(outcomes, sealed(append(fmt.Appendf(nil, "%s %d 0 gateway.response\n", ts, pid), body...)))
						entries++
						continue
					}
					body, _ := encodeEvent(audit.Outcome(ev, "gateway.response", -1))
					outcomes = append(outcomes, sealed(append(fmt.Appendf(nil, "%s %d 0\n", ts, pid), body...)))
					entries += 2
				}
				if _, err := db.AddAuditPending(ctx, outcomes, store.AuditDurable); err != nil {
					b.Fatal(err)
				}
			}
			drain(b, db, int64(entries), "requests/s", "node-cpu-µs/request")
		})
	}
}

// Pending records in every form nodes write, and forms none does.
func TestParsePending(t *testing.T) {
	const ts = "2026-12-05T10:00:00.000000001Z"
	for _, tc := range []struct {
		rec  string
		ok   bool
		want pendingRec
	}{
		{ts + "\n{}", true, pendingRec{ts: ts, body: []byte("{}")}},
		{ts + " intent\n{}", true, pendingRec{ts: ts, body: []byte("{}"), intent: true}},
		{ts + " 12 3 gateway.response\n{}", true, pendingRec{ts: ts, body: []byte("{}"), ref: 12, from: 3, outcome: "gateway.response"}},
		{ts + " 12 3\n{\"detail\":{" + outcomeIndexSuffix, true, pendingRec{ts: ts, body: []byte("{\"detail\":{" + outcomeIndexSuffix), ref: 12, from: 3}},
		{ts + " 12 3\n{}", false, pendingRec{}},                       // an older outcome without its suffix
		{ts + " 0 3 gateway.response\n{}", false, pendingRec{}},       // no decision
		{ts + " 12 -1 gateway.response\n{}", false, pendingRec{}},     // no size
		{ts + " x 3 gateway.response\n{}", false, pendingRec{}},       // not a number
		{ts + " 12 3 gateway.response more\n{}", false, pendingRec{}}, // too many fields
		{ts + " intents\n{}", false, pendingRec{}},
		{ts + " intent\n", false, pendingRec{}},
		{ts + "\nnot json", false, pendingRec{}},
		{"\n{}", false, pendingRec{}},
		{ts, false, pendingRec{}},
	} {
		got, ok := parsePending([]byte(tc.rec))
		if ok != tc.ok || ok && (got.ts != tc.want.ts || string(got.body) != string(tc.want.body) || got.intent != tc.want.intent ||
			got.ref != tc.want.ref || got.from != tc.want.from || got.outcome != tc.want.outcome) {
			t.Errorf("parsePending(%q) = %+v, %v; want %+v, %v", tc.rec, got, ok, tc.want, tc.ok)
		}
	}
}

// Any pending record: parsePending never panics, a record it accepts
// reads back the same once written again in its form, and an outcome's
// body can be made from it.
func FuzzParsePending(f *testing.F) {
	const ts = "2026-12-05T10:00:00.000000001Z"
	for _, rec := range []string{
		ts + "\n{}", ts + " intent\n{\"type\":\"gateway.request\"}", ts + " 12 3 gateway.response\n{\"path\":\"/x\"}",
		ts + " 12 3\n{\"detail\":{" + outcomeIndexSuffix, ts + " 12 3\n{}", "\n{}", ts,
	} {
		f.Add([]byte(rec))
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		p, ok := parsePending(rec)
		if !ok {
			return
		}
		head := p.ts
		switch {
		case p.intent:
			head += " intent"
		case p.outcome != "":
			head += fmt.Sprintf(" %d %d %s", p.ref, p.from, p.outcome)
		case p.ref > 0:
			head += fmt.Sprintf(" %d %d", p.ref, p.from)
		}
		q, ok := parsePending(append([]byte(head+"\n"), p.body...))
		if !ok || q.ts != p.ts || string(q.body) != string(p.body) || q.intent != p.intent || q.ref != p.ref || q.from != p.from || q.outcome != p.outcome {
			t.Fatalf("%q parsed as %+v, written again as %q: %+v, %v", rec, p, head, q, ok)
		}
		if p.ref > 0 {
			body, err := outcomeBody(p, 5)
			if p.outcome == "" && (err != nil || !bytes.HasSuffix(body, []byte(`"request_index":5}}`))) {
				t.Fatalf("outcome of %q: %q, %v", rec, body, err)
			}
		}
	})
}

// A node that failed to publish a checkpoint while it was the sequencer
// (the database went away) and is no longer the sequencer once the database
// is back (another node took the lock) is healthy again: the checkpoints are
// not its to publish. Before, the old failure kept it unready, its gateway
// refusing, for as long as the other node sequenced.
func TestSharedFollowerDropsCheckpointError(t *testing.T) {
	logs, _, _ := sharedNodes(t, 2)
	ctx := context.Background()
	if _, err := logs[0].appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	l := logs[1-waitSequencer(t, logs)]
	l.mu.Lock()
	l.publishErr = fmt.Errorf("audit log %w: publishing checkpoint 1: connection refused", failclosed.ErrUnavailable)
	l.mu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); l.Healthy() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the follower stays unhealthy: %v", l.Healthy())
		}
	}
	if _, err := l.appendDurable(ctx, gatewayEvent(1)); err != nil {
		t.Fatalf("append on the follower: %v", err)
	}
}

// lateRecord opens a one-node shared log and records rec as pending in a
// transaction it holds open while entries 0-6 are appended and sequenced,
// the last more than lateCommit after the others, so that the sequencer's
// floor is above rec's id when commit (returned with that id) commits it.
func lateRecord(t *testing.T, rec []byte) (l *Log, id int64, commit func() error) {
	t.Helper()
	logs, _, dsn := sharedNodes(t, 1)
	l = logs[0]
	ctx := context.Background()
	if _, err := l.appendDurable(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	waitSequencer(t, logs)
	waitSize(t, 10*time.Second, 1, l)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	if err := tx.QueryRowContext(ctx, `INSERT INTO audit_pending (data) VALUES ($1) RETURNING id`, rec).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if i == 6 {
			waitSize(t, 10*time.Second, 6, l)
			time.Sleep(2 * lateCommit)
		}
		if _, err := l.appendDurable(ctx, gatewayEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitSize(t, 10*time.Second, 7, l)
	return l, id, tx.Commit
}

// A pending record committed long after records with higher ids (its
// insert stalled) is still sequenced: the sequencer's reads start at a
// floor above it by then, and its reads from the start (rescan) find it.
func TestSharedLateCommit(t *testing.T) {
	late := gatewayEvent(99)
	body, err := encodeEvent(late)
	if err != nil {
		t.Fatal(err)
	}
	l, id, commit := lateRecord(t, sealed(append([]byte(audit.FormatTime(time.Now())+"\n"), body...)))
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	waitSize(t, 5*rescan, 8, l)
	raw, err := l.Entries(context.Background(), 7, 1)
	if err != nil || len(raw) != 1 || !bytes.Contains(raw[0], []byte(late.Path)) {
		t.Fatalf("entry 7 = %q, %v; want the late record (%s, pending id %d)", raw, err, late.Path, id)
	}
}

// The read floor is the highest id read at least lateCommit ago.
func TestReadFloor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type read struct {
		t   time.Duration
		top int64
	}
	cases := []struct {
		name  string
		reads []read
		now   time.Duration
		want  int64
	}{
		{"no reads", nil, time.Hour, 0},
		{"too recent", []read{{0, 10}}, lateCommit - 1, 0},
		{"just old enough", []read{{0, 10}}, lateCommit, 10},
		{"the newest old enough", []read{{0, 10}, {10 * time.Millisecond, 20}, {lateCommit, 30}}, lateCommit + 10*time.Millisecond, 20},
		{"an empty or lower read changes nothing", []read{{0, 10}, {time.Millisecond, 0}, {2 * time.Millisecond, 5}}, time.Hour, 10},
	}
	for _, c := range cases {
		var f readFloor
		for _, r := range c.reads {
			f.read(at(r.t), r.top)
		}
		if got := f.get(at(c.now)); got != c.want {
			t.Errorf("%s: floor %d, want %d", c.name, got, c.want)
		}
		if got := f.get(at(c.now)); got != c.want {
			t.Errorf("%s: floor %d at a second look, want %d", c.name, got, c.want)
		}
	}
}

// A forwarded request whose decision was committed late (below the
// sequencer's floor by then) and whose completion followed at once is one
// entry all the same: the completion makes the sequencer read from the
// start, where it finds the decision.
func TestSharedLateDecision(t *testing.T) {
	decision := gatewayEvent(99)
	whole := decision
	whole.BytesIn = 99
	dbody, err := encodeEvent(decision)
	if err != nil {
		t.Fatal(err)
	}
	wbody, err := encodeEvent(whole)
	if err != nil {
		t.Fatal(err)
	}
	ts := audit.FormatTime(time.Now())
	l, ref, commit := lateRecord(t, sealed(append([]byte(ts+" intent\n"), dbody...)))
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	completion := sealed(append([]byte(fmt.Sprintf("%s %d 0 gateway.response\n", ts, ref)), wbody...))
	if _, err := l.sh.st.AddAuditPending(context.Background(), [][]byte{completion}, store.AuditDurable); err != nil {
		t.Fatal(err)
	}
	waitSize(t, 10*time.Second, 8, l)
	time.Sleep(rescan + 200*time.Millisecond)
	raw, err := l.Entries(context.Background(), 7, 10)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.ParseEntry(raw[0])
	if err != nil || len(raw) != 1 || e.Type != audit.TypeGateway || e.Path != whole.Path || e.BytesIn != 99 {
		t.Fatalf("%d entries from 7, the first %+v (%v); want the request's one entry", len(raw), e.Event, err)
	}
}
