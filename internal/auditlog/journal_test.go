//go:build linux && !mayfly_nojournal

package auditlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
)

func journalPath(t testing.TB) string { return filepath.Join(t.TempDir(), "audit.journal") }

// Appends in journal mode: written ones are answered from the journal and
// reach the store within integrateDelay; durable ones once stored; the log
// verifies, whatever the mix and the concurrency.
func TestJournalAppends(t *testing.T) {
	for _, b := range allBackends(t) {
		if b.name == "postgres" {
			continue // the journal is for a store with one writer
		}
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{Journal: journalPath(t)})
			var wg sync.WaitGroup
			var mu sync.Mutex
			seen := map[int64]bool{}
			for w := 0; w < 16; w++ {
				wg.Go(func() {
					for i := 0; i < 30; i++ {
						var idx int64
						var err error
						switch i % 3 {
						case 0:
							idx, err = l.appendDurable(ctx, gatewayEvent(i))
						case 1:
							idx, err = l.appendWritten(ctx, gatewayEvent(i))
						default:
							r := <-l.appendAsync(gatewayEvent(i))
							idx, err = r.Index, r.Err
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if seen[idx] {
							t.Errorf("index %d twice", idx)
						}
						seen[idx] = true
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			const n = 16 * 30
			waitFor(t, func() bool { return l.Size() == n })
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := audit.Verify(ctx, b.st, testVerifier, audit.VerifyOptions{PageSize: 64})
			if err != nil || !res.OK() || res.Size != n {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		})
	}
}

// A crash leaves journaled entries out of the store: the next Open folds
// them in, skips what the store has, ignores a torn tail, and empties the
// journal.
func TestJournalReplay(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	path := journalPath(t)
	l, err := Open(ctx, st, testSigner, Options{Journal: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := l.appendWritten(ctx, gatewayEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return l.Size() == 5 })
	// The store stops taking writes: what follows stays in the journal,
	// as after a kill -9 between journal and store.
	st.setFail(errInjected)
	for i := 5; i < 12; i++ {
		if idx, err := l.appendWritten(ctx, gatewayEvent(i)); err != nil || idx != int64(i) {
			t.Fatalf("AppendWritten %d = %d, %v", i, idx, err)
		}
	}
	l.Close(ctx) // cannot store them either
	raw, err := os.ReadFile(path)
	recs, _, end := readJournal(raw)
	if err != nil || len(recs) != 12 { // the file is emptied only past resetSize
		t.Fatalf("journal after a failed close: %d records, %v", len(recs), err)
	}
	// A torn record after the whole ones, as a kill in the middle of a
	// copy or a power loss can leave.
	torn := bytes.Clone(raw)
	copy(torn[end:], raw[fileHeader:fileHeader+journalHeader+10])
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	st.setFail(nil)
	l2 := openLog(t, st, Options{Journal: path})
	if l2.Recovered() != 7 || l2.Size() != 12 {
		t.Fatalf("recovered %d, size %d; want 7, 12", l2.Recovered(), l2.Size())
	}
	if after, err := os.ReadFile(path); err != nil || len(after) == 0 {
		t.Fatalf("journal after replay: %d bytes, %v", len(after), err)
	} else if recs, _, _ := readJournal(after); len(recs) != 0 {
		t.Fatalf("journal not emptied after replay: %d records", len(recs))
	}
	if idx, err := l2.appendDurable(ctx, gatewayEvent(12)); err != nil || idx != 12 {
		t.Fatalf("Append after replay = %d, %v", idx, err)
	}
	res, err := audit.Verify(ctx, st, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() || res.Size != 13 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
	// Replaying the same records again changes nothing: the store has them.
	l2.Close(ctx)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	l3 := openLog(t, st, Options{Journal: path})
	if l3.Recovered() != 0 || l3.Size() != 13 {
		t.Fatalf("second replay: recovered %d, size %d", l3.Recovered(), l3.Size())
	}
}

// While the store fails, the log is unhealthy and refuses what an action
// waits on, but keeps records of what happened; it recovers by itself.
func TestJournalStoreFailure(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{Journal: journalPath(t), CheckpointInterval: 10 * time.Millisecond})
	if _, err := l.appendWritten(ctx, gatewayEvent(0)); err != nil {
		t.Fatal(err)
	}
	st.setFail(errInjected)
	if _, err := l.appendDurable(ctx, gatewayEvent(1)); !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("durable Append on a failing store = %v", err)
	}
	if _, err := l.appendWritten(ctx, gatewayEvent(2)); !errors.Is(err, failclosed.ErrUnavailable) {
		t.Fatalf("AppendWritten while unhealthy = %v", err)
	}
	if r := <-l.appendAsync(gatewayEvent(3)); r.Err != nil {
		t.Fatalf("AppendAsync while unhealthy = %v", r.Err)
	}
	st.setFail(nil)
	waitFor(t, func() bool { return l.Healthy() == nil })
	// The durable entry that failed is stored after all: an audit entry
	// records an attempt; the action it names did not happen.
	waitFor(t, func() bool { return l.Size() == 3 })
	if idx, err := l.appendWritten(ctx, gatewayEvent(4)); err != nil || idx != 3 {
		t.Fatalf("AppendWritten after recovery = %d, %v", idx, err)
	}
}

// A second process (here: a second Log) cannot use the same journal.
func TestJournalLocked(t *testing.T) {
	path := journalPath(t)
	openLog(t, newMemStore(), Options{Journal: path})
	if _, err := Open(context.Background(), newMemStore(), testSigner, Options{Journal: path}); err == nil {
		t.Fatal("a second Log opened a journal in use")
	}
}

func storedEntries(t *testing.T, st Storage, n int) []*audit.Entry {
	t.Helper()
	raw, err := st.AuditEntries(context.Background(), 0, n+10)
	if err != nil || len(raw) != n {
		t.Fatalf("%d stored entries, want %d (%v)", len(raw), n, err)
	}
	out := make([]*audit.Entry, n)
	for i, r := range raw {
		e, err := audit.ParseEntry(r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = e
	}
	return out
}

// With a journal a forwarded request makes one entry: Begin journals an
// intent, Finish the whole record. An intent a crash left unfinished
// becomes the decision's entry on the next Open; one still running when
// the journal is emptied gets its own entry, and Finish then adds the
// outcome beside it.
func TestJournalIntents(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	path := journalPath(t)
	l, err := Open(ctx, st, testSigner, Options{Journal: path})
	if err != nil {
		t.Fatal(err)
	}
	dec := gatewayEvent(1)
	dec.Status = 0
	in, err := l.begin(ctx, dec)
	if err != nil {
		t.Fatal(err)
	}
	whole := dec
	whole.Status, whole.BytesOut = 201, 5
	l.Finish(in, whole, "gateway.response")
	waitFor(t, func() bool { return l.Size() == 1 })
	if es := storedEntries(t, st, 1); es[0].Status != 201 || es[0].Type != audit.TypeGateway {
		t.Fatalf("entry %+v, want the whole request", es[0])
	}

	// A crash while a request runs: its intent is in the journal only.
	dec2 := gatewayEvent(2)
	dec2.Status = 0
	if _, err := l.begin(ctx, dec2); err != nil {
		t.Fatal(err)
	}
	st.setFail(errInjected) // Close cannot store anything: as if killed
	l.Close(ctx)
	st.setFail(nil)
	l2 := openLog(t, st, Options{Journal: path})
	if l2.Recovered() != 1 || l2.Size() != 2 {
		t.Fatalf("recovered %d, size %d; want 1, 2", l2.Recovered(), l2.Size())
	}
	if es := storedEntries(t, st, 2); es[1].Path != dec2.Path || es[1].Status != 0 {
		t.Fatalf("entry %+v, want the unfinished request's decision", es[1])
	}

	// The active journal file passes its size limit while a request runs:
	// appenders move to the other file, the intent with them, and the
	// first file is emptied once the store has its entries durably.
	l2.js.mu.Lock()
	l2.js.resetSize = 1
	l2.js.mu.Unlock()
	dec3 := gatewayEvent(3)
	dec3.Status = 0
	in3, err := l2.begin(ctx, dec3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l2.appendWritten(ctx, gatewayEvent(4)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return l2.Size() == 3 })
	waitFor(t, func() bool {
		l2.js.mu.Lock()
		defer l2.js.mu.Unlock()
		return l2.js.old < 0 && l2.js.j.used(l2.js.j.active^1) == 0
	})
	whole3 := dec3
	whole3.Status = 200
	l2.Finish(in3, whole3, "gateway.response")
	waitFor(t, func() bool { return l2.Size() == 4 })
	es := storedEntries(t, st, 4)
	if e := es[3]; e.Path != dec3.Path || e.Status != 200 || e.Type != audit.TypeGateway {
		t.Fatalf("entry %+v, want the running request's one entry", e)
	}

	// Close while a request runs: its decision gets an entry of its own;
	// the outcome that comes after the log closed is lost.
	dec5 := gatewayEvent(5)
	dec5.Status = 0
	in5, err := l2.begin(ctx, dec5)
	if err != nil {
		t.Fatal(err)
	}
	l2.Close(ctx)
	l2.Finish(in5, dec5, "gateway.response")
	es = storedEntries(t, st, 5)
	if e := es[4]; e.Path != dec5.Path || e.Status != 0 {
		t.Fatalf("entry %+v, want the decision of the request running at Close", e)
	}
	res, err := audit.Verify(ctx, st, testVerifier, audit.VerifyOptions{})
	if err != nil || !res.OK() || res.Size != 5 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

// Replay cases, from raw journal records: what the store ends with.
func TestJournalReplayCases(t *testing.T) {
	entry := func(i int64) []byte { return audit.AppendEntry(nil, i, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`)) }
	intent := func(id byte, path string) []byte {
		return append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, id}, "2026-01-01T00:00:00Z\n{\"type\":\"gateway.request\",\"path\":\""+path+"\"}"...)
	}
	done := func(id byte, i int64) []byte {
		return append([]byte{recComplete, 0, 0, 0, 0, 0, 0, 0, id}, audit.AppendEntry(nil, i, "2026-01-01T00:00:01Z", []byte(`{"type":"gateway.request","path":"/done","status":200}`))...)
	}
	for _, tc := range []struct {
		name  string
		file0 [][]byte
		file1 [][]byte
		want  []string // entry types/paths, in order
	}{
		{"entries in order", [][]byte{entry(0), entry(1)}, nil, []string{"x", "x"}},
		{"across files, out of order", [][]byte{entry(1)}, [][]byte{entry(0), entry(2)}, []string{"x", "x", "x"}},
		{"unfinished intent", [][]byte{entry(0), intent(7, "/run")}, nil, []string{"x", "/run"}},
		{"finished intent", [][]byte{intent(7, "/run"), done(7, 0)}, nil, []string{"/done"}},
		{"intent written to both files", [][]byte{intent(7, "/run")}, [][]byte{intent(7, "/run")}, []string{"/run"}},
		{"completion past a gap", [][]byte{entry(0), intent(7, "/run"), done(7, 2)}, nil, []string{"x", "/run"}},
	} {
		// In this version's files, and in an earlier version's (no
		// header), which a first start after an upgrade replays.
		for _, gen := range []uint64{5, 0} {
			t.Run(fmt.Sprintf("%s/gen=%d", tc.name, gen), func(t *testing.T) {
				path := journalPath(t)
				write := func(p string, gen uint64, recs [][]byte) {
					b := journalFile(gen, recs...)
					if err := os.WriteFile(p, b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				write(path, gen, tc.file0)
				write(path+".1", gen+gen/5, tc.file1) // another generation
				st := newMemStore()
				l := openLog(t, st, Options{Journal: path})
				if l.Size() != int64(len(tc.want)) {
					t.Fatalf("size %d, want %d", l.Size(), len(tc.want))
				}
				for i, e := range storedEntries(t, st, len(tc.want)) {
					got := e.Type
					if e.Path != "" {
						got = e.Path
					}
					if got != tc.want[i] {
						t.Errorf("entry %d = %s, want %s", i, got, tc.want[i])
					}
				}
			})
		}
	}
}

// A journal the store does not keep up with fills up: new requests are
// refused (the gateway answers 503), while every request already admitted
// still gets its one entry, from the room Begin kept for it. Once the
// store has caught up and the file is switched, requests are taken again.
func TestJournalFull(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	l := openLog(t, st, Options{Journal: journalPath(t), journalCapacity: 16 << 10})
	l.js.mu.Lock()
	l.js.resetSize = 1 << 30 // no switch to the other file: this one fills
	l.js.mu.Unlock()
	var running []*Intent
	for {
		in, err := l.begin(ctx, requestEvent(len(running)))
		if err != nil {
			if !errors.Is(err, failclosed.ErrUnavailable) || !strings.Contains(err.Error(), "full") {
				t.Fatalf("Begin on a full journal = %v", err)
			}
			break
		}
		running = append(running, in)
		if len(running) > 1000 {
			t.Fatal("16 KiB of journal never filled")
		}
	}
	// Smaller entries fill what is left, but not the room kept.
	written := 0
	for i := 0; ; i++ {
		if _, err := l.appendWritten(ctx, gatewayEvent(i)); err != nil {
			if !errors.Is(err, failclosed.ErrUnavailable) {
				t.Fatalf("AppendWritten on a full journal = %v", err)
			}
			break
		}
		if i > 1000 {
			t.Fatal("AppendWritten never refused")
		}
		written++
	}
	for i, in := range running {
		whole := requestEvent(i)
		whole.Status, whole.BytesOut, whole.DurationMS, whole.Reason = 502, 1<<40, 1<<30, "client_gone"
		whole.Detail = map[string]any{"decision": "allow", "rule": 0, "aborted": true}
		if _, _, err := l.appendJournalFor(whole, in, "gateway.response", true, false); err != nil {
			t.Fatalf("request %d of %d admitted but not recorded: %v", i, len(running), err)
		}
	}
	waitFor(t, func() bool { return l.Size() == int64(written+len(running)) })
	l.js.mu.Lock()
	l.js.resetSize = 1
	l.js.mu.Unlock()
	waitFor(t, func() bool {
		_, err := l.begin(ctx, requestEvent(0))
		return err == nil
	})
}

// On a disk with no room left, copying a record into the journal's mapping
// faults; that must be an error (the request is refused, the log turns
// unhealthy), never a crash of the server.
func TestJournalDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	ctx := context.Background()
	l := openLog(t, newMemStore(), Options{Journal: filepath.Join(mnt, "audit.journal"), journalCapacity: 1 << 20})
	l.js.mu.Lock()
	l.js.resetSize = 1 << 30
	l.js.mu.Unlock()
	for i := 0; ; i++ {
		if _, err := l.begin(ctx, requestEvent(i)); err != nil {
			if !errors.Is(err, failclosed.ErrUnavailable) || strings.Contains(err.Error(), errJournalFull.Error()) {
				t.Fatalf("Begin on a full disk = %v", err)
			}
			t.Logf("refused after %d requests: %v", i, err)
			break
		}
		if i > 10000 {
			t.Fatal("64 KiB never filled")
		}
	}
	if err := l.Healthy(); err == nil {
		t.Fatal("log healthy after a failed journal write")
	}
}

// A power loss can leave the mapped file without what the page cache held
// (here: wiped); the mirror has every record synced, and the next Open
// replays from it. Records both hold are stored once.
func TestJournalMirror(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	path := journalPath(t)
	l, err := Open(ctx, st, testSigner, Options{Journal: path, journalCapacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st.setFail(errInjected) // nothing reaches the store
	for i := 0; i < 6; i++ {
		if _, err := l.appendWritten(ctx, gatewayEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { // the committer has synced them to the mirror
		b, err := os.ReadFile(path + ".sync")
		recs, _, _ := readJournal(b)
		return err == nil && len(recs) == 6
	})
	l.Close(ctx)
	st.setFail(nil)
	for _, tc := range []struct {
		name string
		wipe string
	}{
		{"mapped file lost", path},
		{"both hold them", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mirror, err := os.ReadFile(path + ".sync")
			if err != nil {
				t.Fatal(err)
			}
			mapped, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wipe != "" {
				clear(mapped)
			}
			st := newMemStore()
			dir := t.TempDir()
			p := filepath.Join(dir, "audit.journal")
			os.WriteFile(p, mapped, 0o600)
			os.WriteFile(p+".sync", mirror, 0o600)
			l := openLog(t, st, Options{Journal: p, journalCapacity: 1 << 20})
			if l.Recovered() != 6 || l.Size() != 6 {
				t.Fatalf("recovered %d, size %d; want 6, 6", l.Recovered(), l.Size())
			}
		})
	}
}

// The committer keeps the active file's mapping prefaulted ahead of its
// last record, so that requests copying their records in take no page
// fault: from a fresh file, once a quarter of the window is used, and from
// the start again once the file was emptied; never past the mapping, and
// not at all where the kernel cannot.
func TestJournalPrefaultWindow(t *testing.T) {
	page := int64(os.Getpagesize())
	const mapped = 2 << 20
	for _, tc := range []struct {
		name           string
		size, ahead    int64
		noPrefault     bool
		wantLo, wantHi int64 // wantHi 0: nothing to do
	}{
		{name: "fresh file", size: fileHeader, ahead: 0, wantLo: 0, wantHi: fileHeader + prefaultAhead},
		{name: "window mostly left", size: 10_000, ahead: fileHeader + prefaultAhead},
		{name: "quarter used", size: fileHeader + prefaultAhead/4 + 1, ahead: fileHeader + prefaultAhead,
			wantLo: (fileHeader + prefaultAhead) &^ (page - 1), wantHi: fileHeader + prefaultAhead/4 + 1 + prefaultAhead},
		{name: "overtaken", size: 3 * prefaultAhead, ahead: prefaultAhead,
			wantLo: 3 * prefaultAhead, wantHi: 4 * prefaultAhead},
		{name: "emptied since", size: fileHeader, ahead: mapped / 2, wantLo: 0, wantHi: fileHeader + prefaultAhead},
		{name: "end of the mapping", size: mapped - 1000, ahead: 0,
			wantLo: (mapped - 1000) &^ (page - 1), wantHi: mapped},
		{name: "kernel without it", size: fileHeader, noPrefault: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := make([]byte, mapped)
			j := &journal{noPrefault: tc.noPrefault}
			j.m[0], j.size[0], j.ahead[0] = m, tc.size, tc.ahead
			got := j.toPrefault()
			if tc.wantHi == 0 {
				if got != nil {
					t.Fatalf("prefaults %d bytes, want none", len(got))
				}
				return
			}
			lo := int64(len(m) - cap(got))
			if lo != tc.wantLo || lo+int64(len(got)) != tc.wantHi {
				t.Fatalf("prefaults [%d, %d), want [%d, %d)", lo, lo+int64(len(got)), tc.wantLo, tc.wantHi)
			}
			if lo%page != 0 || j.ahead[0] != tc.wantHi {
				t.Fatalf("start %d not page-aligned, or ahead %d", lo, j.ahead[0])
			}
		})
	}
}

// After requests' records, the pages they will be copied into next are
// present in the mapping already (/proc/self/pagemap): the committer
// faulted them in, not the requests.
func TestJournalPrefaulted(t *testing.T) {
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer pm.Close()
	ctx := context.Background()
	l := openLog(t, newMemStore(), Options{Journal: journalPath(t)})
	for i := range 20 {
		in, err := l.begin(ctx, requestEvent(i))
		if err != nil {
			t.Fatal(err)
		}
		whole := requestEvent(i)
		whole.Status = 200
		l.Finish(in, whole, "gateway.response")
	}
	page := os.Getpagesize()
	missing := func() int {
		l.js.mu.Lock()
		i := l.js.j.active
		m, end := l.js.j.m[i], int(l.js.j.size[i])
		l.js.mu.Unlock()
		n := 0
		// The next 128 KiB of the file, from the page after the last record.
		for off := (end/page + 1) * page; off < end+128<<10; off += page {
			var e [8]byte
			addr := uintptr(unsafe.Pointer(&m[off]))
			if _, err := pm.ReadAt(e[:], int64(addr/uintptr(page))*8); err != nil {
				t.Fatal(err)
			}
			if binary.LittleEndian.Uint64(e[:])>>63 == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := missing(); n > 0; n = missing() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the next 32 pages not present after the committer ran", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A replay that fails to store what it made (or is killed before), with
// records past a gap in the journal: the next replay drops what the first
// dropped, and neither loses nor adds a request.
func TestJournalReplayAgain(t *testing.T) {
	ctx := context.Background()
	entry := func(i int64) []byte { return audit.AppendEntry(nil, i, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`)) }
	intent := func(id byte) []byte {
		return append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, id}, fmt.Sprintf("2026-01-01T00:00:00Z\n{\"type\":\"gateway.request\",\"path\":\"/r%d\"}", id)...)
	}
	for _, tc := range []struct {
		name string
		recs [][]byte
		want []string
	}{
		{"an entry past a gap", [][]byte{intent(7), entry(1)}, []string{"/r7"}},
		{"an entry past a gap, where a made one goes", [][]byte{intent(7), intent(8), entry(1)}, []string{"/r7", "/r8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := journalPath(t)
			if err := os.WriteFile(path, journalFile(5, tc.recs...), 0o600); err != nil {
				t.Fatal(err)
			}
			st := newMemStore()
			st.failAppend = errInjected
			opts := Options{Journal: path, journalCapacity: 1 << 20}
			if l, err := Open(ctx, st, testSigner, opts); err == nil {
				l.Close(ctx)
				t.Fatal("Open stored the replay with a failing store")
			}
			st.failAppend = nil
			l := openLog(t, st, opts)
			if l.Size() != int64(len(tc.want)) {
				t.Fatalf("size %d, want %d", l.Size(), len(tc.want))
			}
			for i, e := range storedEntries(t, st, len(tc.want)) {
				if e.Path != tc.want[i] {
					t.Errorf("entry %d = %q, want %s", i, e.Path, tc.want[i])
				}
			}
		})
	}
}

// A kill right after the store took the entries of a replay (Open) or of
// Close, before the journal was emptied, leaves the journal as it was
// then: the next Open must not record its unfinished requests again (an
// entry for a request that ran once, twice in the log).
func TestJournalCrashAfterFold(t *testing.T) {
	ctx := context.Background()
	entry := func(i int64) []byte { return audit.AppendEntry(nil, i, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`)) }
	intent := append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, 7}, "2026-01-01T00:00:00Z\n{\"type\":\"gateway.request\",\"path\":\"/run\"}"...)
	doneAt2 := append([]byte{recComplete, 0, 0, 0, 0, 0, 0, 0, 7}, audit.AppendEntry(nil, 2, "2026-01-01T00:00:01Z", []byte(`{"type":"gateway.request","path":"/done","status":200}`))...)
	for _, tc := range []struct {
		name  string
		file0 [][]byte // the journal at Open; none: a request runs at Close
		want  []string
	}{
		{"replay", [][]byte{entry(0), intent}, []string{"x", "/run"}},
		{"replay, completion past a gap", [][]byte{entry(0), intent, doneAt2}, []string{"x", "/run"}},
		{"close", nil, []string{"/run"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := journalPath(t)
			files := []string{path, path + ".sync", path + ".1", path + ".1.sync"}
			var crashed [][]byte
			snapshot := func() {
				if crashed != nil {
					return // the first durable append only
				}
				for _, f := range files {
					b, err := os.ReadFile(f)
					if err != nil {
						t.Error(err)
					}
					crashed = append(crashed, b)
				}
			}
			st := newMemStore()
			opts := Options{Journal: path, journalCapacity: 1 << 20}
			if tc.file0 != nil {
				if err := os.WriteFile(path, journalFile(5, tc.file0...), 0o600); err != nil {
					t.Fatal(err)
				}
				st.durableDone = snapshot
				openLog(t, st, opts).Close(ctx)
			} else {
				l := openLog(t, st, opts)
				ev := gatewayEvent(1)
				ev.Path, ev.Status = "/run", 0
				if _, err := l.begin(ctx, ev); err != nil {
					t.Fatal(err)
				}
				st.durableDone = snapshot
				l.Close(ctx)
			}
			if crashed == nil {
				t.Fatal("no durable append")
			}
			st.durableDone = nil
			for i, f := range files {
				if err := os.WriteFile(f, crashed[i], 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l := openLog(t, st, opts)
			if l.Size() != int64(len(tc.want)) {
				t.Fatalf("size %d after the restart, want %d", l.Size(), len(tc.want))
			}
			for i, e := range storedEntries(t, st, len(tc.want)) {
				got := e.Type
				if e.Path != "" {
					got = e.Path
				}
				if got != tc.want[i] {
					t.Errorf("entry %d = %s, want %s", i, got, tc.want[i])
				}
			}
		})
	}
}

// FuzzJournalReplay replays journals a crash could leave (records copied
// between a file and its mirror, generations, torn tails) and checks what
// Open makes of them: no panic; a log that verifies; each request
// recorded at most once; and a kill right after the replay's store write,
// before the journal is emptied, changes nothing at the next Open.
func FuzzJournalReplay(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 0, 2, 1, 1})
	f.Add([]byte{0, 0, 0, 1, 2, 0, 2, 2, 3, 0, 1, 2, 3, 5, 0})
	f.Add([]byte{1, 1, 0, 1, 1, 2, 0, 1, 0, 4, 1, 2, 2, 1, 4, 3, 9, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 60 {
			return
		}
		ctx := context.Background()
		// Files: the journal, its mirror, the second file, its mirror.
		var recs [4][][]byte
		gens := [4]uint64{5, 5, 6, 6}
		cut := [4]int{}
		byIndex := map[int64][]byte{} // one record an index, as the log writes
		completed := map[byte]bool{}
		for i := 0; i+2 < len(ops); i += 3 {
			op, a, b := ops[i]%5, ops[i+1], ops[i+2]
			file := int(b % 4)
			switch op {
			case 0, 2: // an entry, or the completion of intent a%4
				idx := int64(b / 4 % 8)
				rec, ok := byIndex[idx]
				if !ok {
					id := a % 4
					if op == 2 && !completed[id] {
						completed[id] = true
						rec = append([]byte{recComplete, 0, 0, 0, 0, 0, 0, 0, id}, audit.AppendEntry(nil, idx, "2026-01-01T00:00:01Z", []byte(fmt.Sprintf(`{"type":"gateway.request","path":"/r%d","status":200}`, id)))...)
					} else {
						rec = audit.AppendEntry(nil, idx, "2026-01-01T00:00:00Z", []byte(`{"type":"x"}`))
					}
					byIndex[idx] = rec
				}
				recs[file] = append(recs[file], rec)
			case 1: // an intent
				id := a % 4
				recs[file] = append(recs[file], append([]byte{recIntent, 0, 0, 0, 0, 0, 0, 0, id}, fmt.Sprintf("2026-01-01T00:00:00Z\n{\"type\":\"gateway.request\",\"path\":\"/r%d\"}", id)...))
			case 3: // a torn tail
				cut[file] = int(a%32) + 1
			case 4: // another generation
				gens[file] += uint64(a%3) + 1
			}
		}
		path := filepath.Join(t.TempDir(), "audit.journal")
		files := []string{path, path + ".sync", path + ".1", path + ".1.sync"}
		for i, name := range files {
			b := journalFile(gens[i], recs[i]...)
			b = b[:max(len(b)-cut[i], 0)]
			if err := os.WriteFile(name, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var crashed [][]byte
		st := newMemStore()
		st.durableDone = func() {
			if crashed != nil {
				return
			}
			for _, name := range files {
				b, err := os.ReadFile(name)
				if err != nil {
					t.Error(err)
				}
				crashed = append(crashed, b)
			}
		}
		opts := Options{Journal: path, journalCapacity: 64 << 10}
		l, err := Open(ctx, st, testSigner, opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		size := l.Size()
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		check := func() {
			t.Helper()
			seen := map[string]bool{}
			for _, e := range storedEntries(t, st, int(size)) {
				if e.Path != "" && seen[e.Path] {
					t.Fatalf("request %s recorded twice", e.Path)
				}
				seen[e.Path] = true
			}
			res, err := audit.Verify(ctx, st, testVerifier, audit.VerifyOptions{})
			if err != nil || !res.OK() || res.Size != size {
				t.Fatalf("Verify = %+v, %v", res, err)
			}
		}
		check()
		if crashed == nil {
			return
		}
		st.durableDone = nil
		for i, name := range files {
			if err := os.WriteFile(name, crashed[i], 0o600); err != nil {
				t.Fatal(err)
			}
		}
		l, err = Open(ctx, st, testSigner, opts)
		if err != nil {
			t.Fatalf("Open after a kill during the replay: %v", err)
		}
		if l.Size() != size {
			t.Fatalf("size %d after a kill during the replay, %d before", l.Size(), size)
		}
		l.Close(ctx)
		check()
	})
}
