package auditlog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A process killed (or a machine losing power) in the middle of a file
// sink's write leaves part of a line at the file's end: the forwarder,
// restarted, writes that batch again from its cursor. The sink must start
// on a line of its own, or the first entry it writes is glued to the
// broken part into one line no reader can parse, and the SIEM loses it.
func TestFileSinkReopensAfterTornLine(t *testing.T) {
	ctx := context.Background()
	es := sampleEntries(4)
	whole := func(n int) []byte {
		var b []byte
		for _, e := range es[:n] {
			b = append(append(b, e...), '\n')
		}
		return b
	}
	long := bytes.Repeat([]byte("x"), 2*len(es[0])+70<<10) // not a line of a sink: no newline in the last 64 KiB
	cases := []struct {
		name  string
		file  []byte
		from  int // the index the forwarder resumes at
		check func(t *testing.T, got []byte)
	}{
		{name: "torn after whole lines", file: append(whole(2), es[2][:len(es[2])/2]...), from: 2},
		{name: "torn first line", file: es[0][:10], from: 0},
		{name: "whole lines", file: whole(2), from: 2},
		{name: "empty", file: nil, from: 0},
		{name: "a long tail without a newline is kept, ended", file: long, from: 0, check: func(t *testing.T, got []byte) {
			if !bytes.HasPrefix(got, append(long, '\n')) {
				t.Fatalf("the file's own content was not kept as it was, with a line end")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := NewFileSink(path, FileSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Write(ctx, es[c.from:], int64(c.from)); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				c.check(t, got)
				got = got[len(long)+1:]
			}
			if !bytes.Equal(got, whole(4)[len(whole(c.from)):]) && !bytes.Equal(got, whole(4)) {
				t.Fatalf("file holds\n%s\nwant whole lines, entries 0 to 3 each once:\n%s", got, whole(4))
			}
			for i, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
				if !bytes.HasPrefix([]byte(l), []byte(`{"index":`)) || !bytes.HasSuffix([]byte(l), []byte(`}`)) {
					t.Fatalf("line %d is broken: %q", i, l)
				}
			}
			if fi, _ := os.Stat(path); fi.Size() != s.size {
				t.Fatalf("the sink counts %d bytes, the file has %d", s.size, fi.Size())
			}
		})
	}
}
