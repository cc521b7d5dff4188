// Package measure is what the benches read off the machine and how they
// sum it up: a process's CPU time and write calls from Linux's /proc, the
// load average, medians. It is a measuring stick for bench/, never part of
// mayfly; on a system without /proc every reading is zero.
package measure

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/PID/stat's CPU times: 100 ticks a second on
// every Linux the benches run on.
const userHZ = 100

// Stat returns a process's parent and its CPU time (user and system), from
// /proc/PID/stat (fields 4, 14 and 15); zeros when the process is gone.
func Stat(pid int) (ppid int, cpu time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields are counted from the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, 0
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, time.Duration(ut+st) * (time.Second / userHZ)
}

// CPU is a process's CPU time (user and system); 0 when it is gone.
func CPU(pid int) time.Duration {
	_, c := Stat(pid)
	return c
}

// TreeCPU is the CPU time of pid and of its children (nginx's master and
// its workers), read over every process in /proc.
func TreeCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	total := CPU(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if ppid, c := Stat(child); ppid == pid {
			total += c
		}
	}
	return total
}

// Writes is how many write system calls (write, pwrite, writev…) pid has
// made, from /proc/PID/io (syscw): unlike CPU time, a count the machine's
// load does not blur.
func Writes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "syscw: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// LoadAvg is the machine's load average over the last minute.
func LoadAvg() float64 {
	f := loadAvgs()
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// LoadAvgs is the 1, 5 and 15 minute load averages as /proc prints them,
// or "unknown".
func LoadAvgs() string {
	f := loadAvgs()
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func loadAvgs() []string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Fields(string(b))
}

// NumCPU is how many processors the machine has (not how many this
// process may use), from /proc/cpuinfo; at least 1.
func NumCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return max(1, strings.Count(string(b), "processor\t:"))
}

// Median is the middle value of xs (the upper one of an even count), 0 for
// none; xs is left as it was.
func Median[T cmp.Ordered](xs []T) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
