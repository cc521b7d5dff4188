package measure

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 3},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Median(in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("Median reordered its input: %v", in)
			}
		}
	}
}

// This process's own readings: its parent is the test driver, and busy
// work shows as CPU time.
func TestStatReadsThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux's /proc")
	}
	ppid, before := Stat(os.Getpid())
	if ppid != os.Getppid() {
		t.Fatalf("parent %d, want %d", ppid, os.Getppid())
	}
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
	}
	if after := CPU(os.Getpid()); after <= before {
		t.Fatalf("CPU time %v then %v after 100 ms of busy work", before, after)
	}
	// The root read first: it only grows while the tree is read.
	if root := CPU(os.Getpid()); TreeCPU(os.Getpid()) < root {
		t.Fatal("a process tree used less CPU than its root")
	}
	if Writes(os.Getpid()) < 0 || NumCPU() < 1 || LoadAvg() < 0 {
		t.Fatal("a reading out of range")
	}
	if _, c := Stat(1 << 30); c != 0 {
		t.Fatal("a process that does not exist has CPU time")
	}
}
