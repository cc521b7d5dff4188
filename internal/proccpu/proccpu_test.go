package proccpu

import (
	"testing"
	"time"
)

// Busy work must show as CPU time, and the count never goes back.
func TestUsedGrowsWithWork(t *testing.T) {
	before := Used()
	x := 0
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
		x++
	}
	after := Used()
	if after <= before {
		t.Fatalf("CPU time %v then %v after 50 ms of busy work (%d loops)", before, after, x)
	}
}
