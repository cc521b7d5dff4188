package store

import (
	"strings"
	"testing"
)

// inBatches makes one query per HashBatch hashes, each with as many
// placeholders as arguments.
func TestInBatches(t *testing.T) {
	for _, tc := range []struct{ n, queries int }{{0, 0}, {1, 1}, {HashBatch, 1}, {HashBatch + 1, 2}, {2*HashBatch + 10, 3}} {
		hs := make([][32]byte, tc.n)
		queries, seen := 0, 0
		err := inBatches(hs, func(in string, args []any) error {
			queries++
			seen += len(args)
			if strings.Count(in, "?") != len(args) || len(args) > HashBatch || len(args) == 0 {
				t.Fatalf("%d hashes: %d placeholders for %d args", tc.n, strings.Count(in, "?"), len(args))
			}
			return nil
		})
		if err != nil || queries != tc.queries || seen != tc.n {
			t.Fatalf("%d hashes: %d queries over %d hashes (err %v), want %d", tc.n, queries, seen, err, tc.queries)
		}
	}
}
