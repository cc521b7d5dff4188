package auditlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/token"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

var testSigner, testVerifier = mustKey("mayfly.test/audit")

func mustKey(origin string) (string, string) {
	s, v, err := audit.GenerateKey(origin)
	if err != nil {
		panic(err)
	}
	return s, v
}

func openLog(t testing.TB, st Storage, opts Options) *Log {
	t.Helper()
	l, err := Open(context.Background(), st, testSigner, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func gatewayEvent(i int) audit.Event {
	return audit.Event{Type: audit.TypeGateway, Lease: fmt.Sprintf("lse_%d", i), Issuer: "github", Subject: "repo:o/r:ref:refs/heads/main",
		Grant: "deploy", Upstream: "api", Method: "GET", Path: fmt.Sprintf("/v1/items/%d", i), Status: 200,
		Source: "10.0.0.1", BytesOut: int64(i), DurationMS: 3}
}

func appendN(t testing.TB, l *Log, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := l.appendDurable(ctx, gatewayEvent(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
}

func TestAppendReadAndCheckpoint(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{})
			if l.VerifierKey() != testVerifier {
				t.Fatalf("VerifierKey = %q, want %q", l.VerifierKey(), testVerifier)
			}
			if l.Origin() != "mayfly.test/audit" {
				t.Fatalf("Origin = %q", l.Origin())
			}
			// An empty log has a checkpoint at once.
			cp, err := l.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if size, root, err := audit.ParseCheckpoint(cp, testVerifier); err != nil || size != 0 || root != emptyRoot() {
				t.Fatalf("empty checkpoint: %d %x %v", size, root, err)
			}
			for i := 0; i < 10; i++ {
				idx, err := l.appendDurable(ctx, gatewayEvent(i))
				if err != nil || idx != int64(i) {
					t.Fatalf("Append %d = %d, %v", i, idx, err)
				}
			}
			es, err := l.Entries(ctx, 3, 4)
			if err != nil || len(es) != 4 {
				t.Fatalf("Entries = %d, %v", len(es), err)
			}
			for i, e := range es {
				pe, err := audit.ParseEntry(e)
				if err != nil {
					t.Fatalf("ParseEntry(%s): %v", e, err)
				}
				want := gatewayEvent(3 + i)
				if pe.Index != int64(3+i) || pe.Path != want.Path || pe.Lease != want.Lease || pe.Status != 200 {
					t.Fatalf("entry %d = %+v", 3+i, pe)
				}
				if !strings.HasPrefix(string(e), fmt.Sprintf(`{"index":%d,"time":"`, 3+i)) || bytes.ContainsAny(e, "\n ") {
					t.Fatalf("entry not compact with index first: %s", e)
				}
				if time.Since(pe.Time) > time.Minute || pe.Time.Location() != time.UTC {
					t.Fatalf("entry time %v", pe.Time)
				}
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			cp, _ = l.Checkpoint(ctx)
			size, root, err := audit.ParseCheckpoint(cp, testVerifier)
			if err != nil || size != 10 {
				t.Fatalf("checkpoint %d, %v", size, err)
			}
			if !strings.HasPrefix(string(cp), "mayfly.test/audit\n10\n") {
				t.Fatalf("checkpoint text:\n%s", cp)
			}
			th, err := l.TreeHash(ctx, 10)
			if err != nil || th != root {
				t.Fatalf("TreeHash = %x, %v; checkpoint root %x", th, err, root)
			}
			if old, err := l.CheckpointAt(ctx, 0); err != nil || !bytes.HasPrefix(old, []byte("mayfly.test/audit\n0\n")) {
				t.Fatalf("CheckpointAt(0) = %q, %v", old, err)
			}
			res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{})
			if err != nil || !res.OK() || res.Size != 10 || res.Root != root {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		})
	}
}

// A batch is committed in written mode only when every entry in it asked
// for no more (AppendWritten, AppendAsync); one Append makes it durable.
func TestWrittenModeOnlyWhenAllAskIt(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name        string
		appends     []string // "durable", "written", "async": submitted together
		wantWritten bool
	}{
		{"durable alone", []string{"durable"}, false},
		{"written alone", []string{"written"}, true},
		{"async alone", []string{"async"}, true},
		{"written and async", []string{"async", "written"}, true},
		{"durable with written", []string{"written", "durable", "async"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newMemStore()
			l := openLog(t, st, Options{})
			// Hold the committer inside a commit so that the appends below
			// queue up and share the next one.
			st.entering = make(chan struct{}, 1)
			st.mu.Lock()
			first := l.appendAsync(gatewayEvent(0))
			<-st.entering
			var wg sync.WaitGroup
			for i, kind := range tc.appends {
				ev := gatewayEvent(i + 1)
				switch kind {
				case "durable":
					wg.Go(func() { l.appendDurable(ctx, ev) })
				case "written":
					wg.Go(func() { l.appendWritten(ctx, ev) })
				case "async":
					wg.Go(func() { <-l.appendAsync(ev) })
				}
			}
			for len(l.reqs) < len(tc.appends) {
				time.Sleep(time.Millisecond)
			}
			st.mu.Unlock()
			<-first
			wg.Wait()
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.appends != 2 {
				t.Fatalf("%d commits, want 2", st.appends)
			}
			if got := st.written == 2; got != tc.wantWritten {
				t.Fatalf("written commits %d of 2; want the second written: %v", st.written, tc.wantWritten)
			}
		})
	}
}

func TestPublisherSignsWhileGrowingOnly(t *testing.T) {
	st := newMemStore()
	l := openLog(t, st, Options{CheckpointInterval: 20 * time.Millisecond})
	appendN(t, l, 5)
	waitFor(t, func() bool { s, _, _ := st.LatestAuditCheckpoint(context.Background()); return s == 5 })
	time.Sleep(100 * time.Millisecond)
	st.mu.Lock()
	n := len(st.checkpoints)
	st.mu.Unlock()
	if n != 2 { // sizes 0 and 5: nothing new while idle
		t.Fatalf("%d checkpoints stored, want 2", n)
	}
	appendN(t, l, 1)
	waitFor(t, func() bool { s, _, _ := st.LatestAuditCheckpoint(context.Background()); return s == 6 })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentAppends(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			reg := prometheus.NewRegistry()
			l := openLog(t, b.st, Options{Registerer: reg})
			const writers, each = 64, 20
			var mu sync.Mutex
			seen := map[int64]string{}
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < each; i++ {
						ev := gatewayEvent(i)
						ev.Lease = fmt.Sprintf("lse_w%d_%d", w, i)
						idx, err := l.appendDurable(ctx, ev)
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						mu.Lock()
						if _, dup := seen[idx]; dup {
							t.Errorf("index %d returned twice", idx)
						}
						seen[idx] = ev.Lease
						mu.Unlock()
					}
				}(w)
			}
			wg.Wait()
			const n = writers * each
			if len(seen) != n {
				t.Fatalf("%d indexes, want %d", len(seen), n)
			}
			es, err := b.st.AuditEntries(ctx, 0, n+10)
			if err != nil || len(es) != n {
				t.Fatalf("stored %d entries, %v", len(es), err)
			}
			for i, e := range es {
				pe, err := audit.ParseEntry(e)
				if err != nil || pe.Index != int64(i) || pe.Lease != seen[int64(i)] {
					t.Fatalf("entry %d = %s (%v), want lease %s", i, e, err, seen[int64(i)])
				}
			}
			var m dto.Metric
			if err := l.metrics.appends.Write(&m); err != nil || m.GetCounter().GetValue() != n {
				t.Fatalf("appends metric %v, %v", m.GetCounter().GetValue(), err)
			}
			if mfs, err := reg.Gather(); err != nil || len(mfs) < 5 {
				t.Fatalf("%d metric families registered, %v", len(mfs), err)
			}
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{PageSize: 100})
			if err != nil || !res.OK() || res.Size != n {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		})
	}
}

// TestProofsIndependent checks inclusion and consistency proofs and roots
// against github.com/transparency-dev/merkle.
func TestProofsIndependent(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{})
			const n = 70
			roots := map[int64][32]byte{}
			for i := 0; i < n; i++ {
				if _, err := l.appendDurable(ctx, gatewayEvent(i)); err != nil {
					t.Fatal(err)
				}
				r, err := l.TreeHash(ctx, int64(i+1))
				if err != nil {
					t.Fatal(err)
				}
				roots[int64(i+1)] = r
			}
			es, _ := l.Entries(ctx, 0, n)
			h := rfc6962.DefaultHasher
			// Independent roots: fold the leaves the RFC 6962 way.
			for size := int64(1); size <= n; size++ {
				if got := refRoot(es[:size]); got != roots[size] {
					t.Fatalf("root %d = %x, independent %x", size, roots[size], got)
				}
			}
			for size := int64(1); size <= n; size += 7 {
				for idx := int64(0); idx < size; idx++ {
					p, err := l.InclusionProof(ctx, idx, size)
					if err != nil {
						t.Fatal(err)
					}
					root := roots[size]
					if err := proof.VerifyInclusion(h, uint64(idx), uint64(size), h.HashLeaf(es[idx]), toSlices(p), root[:]); err != nil {
						t.Fatalf("inclusion %d in %d: %v", idx, size, err)
					}
					if err := audit.VerifyInclusion(idx, size, es[idx], root, p); err != nil {
						t.Fatalf("own inclusion check %d in %d: %v", idx, size, err)
					}
				}
				for old := int64(1); old <= size; old++ {
					p, err := l.ConsistencyProof(ctx, old, size)
					if err != nil {
						t.Fatal(err)
					}
					r1, r2 := roots[old], roots[size]
					if err := proof.VerifyConsistency(h, uint64(old), uint64(size), toSlices(p), r1[:], r2[:]); err != nil {
						t.Fatalf("consistency %d→%d: %v", old, size, err)
					}
					if err := audit.VerifyConsistency(old, r1, size, r2, p); err != nil {
						t.Fatalf("own consistency %d→%d: %v", old, size, err)
					}
					if old != size {
						if err := audit.VerifyConsistency(old, roots[size], size, r2, p); err == nil {
							t.Fatalf("consistency with a wrong old root accepted")
						}
					}
				}
			}
			// Proof JSON round trip.
			p, _ := l.InclusionProof(ctx, 5, n)
			back, err := audit.UnmarshalProof(audit.MarshalProof(p))
			if err != nil || len(back) != len(p) || back[0] != p[0] {
				t.Fatalf("proof JSON round trip: %v", err)
			}
			if !strings.HasPrefix(string(audit.MarshalProof(p)), `{"hashes":["`) {
				t.Fatalf("proof JSON %s", audit.MarshalProof(p))
			}
			// Out of range.
			for _, c := range [][2]int64{{n, n}, {0, n + 1}, {-1, 3}} {
				if _, err := l.InclusionProof(ctx, c[0], c[1]); !errors.Is(err, audit.ErrRange) {
					t.Fatalf("InclusionProof%v err = %v", c, err)
				}
			}
			if _, err := l.ConsistencyProof(ctx, 5, n+1); !errors.Is(err, audit.ErrRange) {
				t.Fatalf("ConsistencyProof beyond size: %v", err)
			}
			if p, err := l.ConsistencyProof(ctx, 0, 5); err != nil || len(p) != 0 {
				t.Fatalf("ConsistencyProof from empty: %v %v", p, err)
			}
			if err := audit.VerifyConsistency(10, roots[10], 5, roots[5], nil); err == nil {
				t.Fatal("rollback accepted by VerifyConsistency")
			}
		})
	}
}

func toSlices(p [][32]byte) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

// refRoot is the RFC 6962 Merkle tree hash, computed recursively with the
// independent hasher.
func refRoot(leaves [][]byte) [32]byte {
	h := rfc6962.DefaultHasher
	var rec func(ls [][]byte) []byte
	rec = func(ls [][]byte) []byte {
		if len(ls) == 1 {
			return h.HashLeaf(ls[0])
		}
		k := 1
		for k*2 < len(ls) {
			k *= 2
		}
		return h.HashChildren(rec(ls[:k]), rec(ls[k:]))
	}
	var out [32]byte
	if len(leaves) == 0 {
		copy(out[:], h.EmptyRoot())
	} else {
		copy(out[:], rec(leaves))
	}
	return out
}

func TestStoreFailureAndRecovery(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{CheckpointInterval: 10 * time.Millisecond})
	appendN(t, l, 3)
	if err := l.Healthy(); err != nil {
		t.Fatalf("Healthy = %v", err)
	}
	st.setFail(errInjected)
	_, err := l.appendDurable(ctx, gatewayEvent(99))
	if !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("Append on failing store = %v, want failclosed.ErrUnavailable", err)
	}
	if err := l.Healthy(); !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("Healthy = %v", err)
	}
	// Recovery without traffic: the probe writes a checkpoint.
	st.setFail(nil)
	waitFor(t, func() bool { return l.Healthy() == nil })
	idx, err := l.appendDurable(ctx, gatewayEvent(4))
	if err != nil || idx != 3 {
		t.Fatalf("Append after recovery = %d, %v", idx, err)
	}
	// Recovery through traffic.
	st.setFail(errInjected)
	if _, err := l.appendDurable(ctx, gatewayEvent(5)); !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatal(err)
	}
	st.setFail(nil)
	if idx, err := l.appendDurable(ctx, gatewayEvent(5)); err != nil || idx != 4 {
		t.Fatalf("Append = %d, %v", idx, err)
	}
	if err := l.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Healthy(); err != nil {
		t.Fatal(err)
	}
	res, err := audit.Verify(ctx, st, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() || res.Size != 5 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

// TestTwoWriters runs two logs (two nodes) on one storage: commits that
// lose the race reload and retry.
func TestTwoWriters(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l1 := openLog(t, b.st, Options{})
			l2 := openLog(t, b.st, Options{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[int64]bool{}
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					l := l1
					if w%2 == 1 {
						l = l2
					}
					for i := 0; i < 25; i++ {
						idx, err := l.appendDurable(ctx, gatewayEvent(i))
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						mu.Lock()
						if seen[idx] {
							t.Errorf("index %d twice", idx)
						}
						seen[idx] = true
						mu.Unlock()
					}
				}(w)
			}
			wg.Wait()
			if len(seen) != 200 {
				t.Fatalf("%d entries", len(seen))
			}
			l1.Sync(ctx)
			l2.Sync(ctx)
			res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{})
			if err != nil || !res.OK() || res.Size != 200 {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		})
	}
}

func TestReopenAndClose(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l, err := Open(ctx, b.st, testSigner, Options{CheckpointInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			// Appends in flight when Close is called are all committed.
			var chans []<-chan result
			for i := 0; i < 50; i++ {
				chans = append(chans, l.appendAsync(gatewayEvent(i)))
			}
			if err := l.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for i, ch := range chans {
				if r := <-ch; r.Err != nil || r.Index != int64(i) {
					t.Fatalf("async %d = %+v", i, r)
				}
			}
			if _, err := l.appendDurable(ctx, gatewayEvent(0)); !errors.Is(err, ErrClosed) {
				t.Fatalf("Append after Close = %v", err)
			}
			if err := l.Healthy(); !errors.Is(err, ErrClosed) {
				t.Fatalf("Healthy after Close = %v", err)
			}
			// Close published the last checkpoint.
			if s, _, err := b.st.LatestAuditCheckpoint(ctx); err != nil || s != 50 {
				t.Fatalf("latest checkpoint %d, %v", s, err)
			}
			st := b.reopen(t)
			l2 := openLog(t, st, Options{})
			if l2.Size() != 50 {
				t.Fatalf("reopened size %d", l2.Size())
			}
			if idx, err := l2.appendDurable(ctx, gatewayEvent(50)); err != nil || idx != 50 {
				t.Fatalf("Append after reopen = %d, %v", idx, err)
			}
			l2.Sync(ctx)
			res, err := audit.Verify(ctx, st, testVerifier, audit.VerifyOptions{})
			if err != nil || !res.OK() || res.Size != 51 {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
			// A different key refuses to continue a log signed by another.
			other, _ := mustKey("mayfly.test/audit")
			if _, err := Open(ctx, st, other, Options{}); err == nil {
				t.Fatal("Open with another key accepted")
			}
		})
	}
}

func TestEventEncoding(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{})
	tok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		ev      audit.Event
		wantErr bool
	}{
		{"minimal", audit.Event{Type: audit.TypeRevoke}, false},
		{"detail", audit.Event{Type: audit.TypePolicy, PolicyVersion: "7", Detail: map[string]any{"b": 1, "a": "x"}}, false},
		{"token in path", audit.Event{Type: audit.TypeGateway, Path: "/x?token=" + tok}, false},
		{"token in detail", audit.Event{Type: audit.TypeLeak, Detail: map[string]any{"raw": "leaked " + tok + " here"}}, false},
		{"no type", audit.Event{}, true},
		{"bad type", audit.Event{Type: "Token Exchange"}, true},
		{"unencodable", audit.Event{Type: audit.TypeGateway, Detail: map[string]any{"c": make(chan int)}}, true},
		{"too large", audit.Event{Type: audit.TypeGateway, Reason: strings.Repeat("x", audit.MaxEntrySize)}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			idx, err := l.appendDurable(ctx, c.ev)
			if (err != nil) != c.wantErr {
				t.Fatalf("Append err = %v", err)
			}
			if err != nil {
				if errors.Is(err, failclosed.ErrUnavailable) {
					t.Fatalf("caller error reported as failclosed.ErrUnavailable: %v", err)
				}
				return
			}
			es, _ := l.Entries(ctx, idx, 1)
			if bytes.Contains(es[0], []byte(tok)) {
				t.Fatalf("token written to the log: %s", es[0])
			}
			if strings.Contains(c.name, "token") && !bytes.Contains(es[0], []byte(token.Hint(tok))) {
				t.Fatalf("token hint missing: %s", es[0])
			}
			if _, err := audit.ParseEntry(es[0]); err != nil {
				t.Fatalf("ParseEntry(%s): %v", es[0], err)
			}
		})
	}
	es, _ := l.Entries(ctx, 1, 1)
	if !bytes.Contains(es[0], []byte(`"detail":{"a":"x","b":1}`)) {
		t.Fatalf("detail not sorted/compact: %s", es[0])
	}
}

func TestEntryIndex(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{`{"index":0,"time":""}`, 0},
		{`{"index":123,`, 123},
		{`{"index":0123,`, -1},
		{`{"index":-1,`, -1},
		{`{"index":12`, -1},
		{`{"index": 1,`, -1},
		{`{"time":"","index":1}`, -1},
		{`{"index":9999999999999999999,`, -1},
		{``, -1},
	} {
		if got := audit.EntryIndex([]byte(c.in)); got != c.want {
			t.Errorf("entryIndex(%s) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestFrontierMatchesTlog(t *testing.T) {
	// frontierIndexes must name exactly the hashes tlog.TreeHash reads.
	for n := int64(1); n < 300; n++ {
		var got []int64
		tlog.TreeHash(n, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			got = idx
			return make([]tlog.Hash, len(idx)), nil
		}))
		want := frontierIndexes(n)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("n=%d: tlog reads %v, frontier %v", n, got, want)
		}
	}
}

// The frontier, advanced one entry or one batch at a time, always holds
// exactly the subtree roots of the tree so far, with their hashes.
func TestFrontierAdvance(t *testing.T) {
	var all []tlog.Hash // every stored hash, by index
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = all[x]
		}
		return out, nil
	})
	const n = 300
	for i := int64(0); i < n; i++ {
		hs, err := tlog.StoredHashes(i, []byte(fmt.Sprint(i)), r)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, hs...)
	}
	for _, step := range []int64{1, 2, 7, 64, n} {
		l := &Log{}
		for size := int64(0); size < n; {
			next := min(size+step, n)
			l.advance(size, next, all[tlog.StoredHashCount(size):tlog.StoredHashCount(next)])
			size = next
			want := frontierIndexes(size)
			if !slices.Equal(l.frontier.idx, want) {
				t.Fatalf("step %d, size %d: frontier %v, want %v", step, size, l.frontier.idx, want)
			}
			for i, x := range want {
				if l.frontier.h[i] != all[x] {
					t.Fatalf("step %d, size %d: hash %d differs", step, size, x)
				}
			}
			root, err := tlog.TreeHash(size, l.frontierReader())
			if err != nil {
				t.Fatal(err)
			}
			if wantRoot, _ := tlog.TreeHash(size, r); root != wantRoot {
				t.Fatalf("step %d, size %d: root differs", step, size)
			}
		}
	}
}

// emptyRoot is the RFC 6962 hash of the empty tree.
func emptyRoot() tlog.Hash {
	h, _ := tlog.TreeHash(0, nil)
	return h
}
