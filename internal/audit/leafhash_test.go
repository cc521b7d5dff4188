package audit

import (
	"math/rand/v2"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// The verifier's reused hasher computes exactly tlog's leaf hash.
func TestLeafHasherIsRecordHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	lh := newLeafHasher()
	for _, n := range []int{0, 1, 55, 56, 63, 64, 65, 300, 4096} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		if got, want := lh.hash(data), tlog.RecordHash(data); got != want {
			t.Fatalf("%d bytes: %x, want %x", n, got, want)
		}
	}
}
