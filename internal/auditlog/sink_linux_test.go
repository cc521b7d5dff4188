package auditlog

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
)

// A write the disk refuses halfway (here RLIMIT_FSIZE, as a full disk
// would) leaves no part of a line: the retried batch follows whole lines.
// The Go runtime ignores SIGXFSZ, so the write just fails with EFBIG.
func TestFileSinkFailedWriteLeavesWholeLines(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	es := sampleEntries(20)
	s, err := NewFileSink(path, FileSinkOptions{MaxBytes: 1 << 20, MaxBackups: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(ctx, es[:5], 0); err != nil {
		t.Fatal(err)
	}
	size := s.size
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skip(err)
	}
	// Room for part of the next entry only.
	lim := old
	lim.Cur = uint64(size) + uint64(len(es[5]))/2
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skip(err)
	}
	err = s.Write(ctx, es[5:10], 5)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("a write past the file size limit succeeded")
	}
	if err := s.Write(ctx, es[5:10], 5); err != nil { // the forwarder's retry
		t.Fatal(err)
	}
	lines := readLines(t, path)
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 10", len(lines))
	}
	for i, l := range lines {
		if l != string(es[i]) {
			t.Fatalf("line %d = %q, want entry %d", i, l, i)
		}
	}
}
