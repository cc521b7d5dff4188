package proccpu

import (
	"time"

	"golang.org/x/sys/windows"
)

// Used is the CPU time (user and system) this process has used, or 0 when
// the system will not say.
func Used() time.Duration {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(windows.CurrentProcess(), &created, &exited, &kernel, &user); err != nil {
		return 0
	}
	// Filetimes here are durations in units of 100 ns, not instants.
	ticks := func(f windows.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration((ticks(kernel) + ticks(user)) * 100)
}
