package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/scan"
)

// scanProgress shows a long file scan's running totals on standard error
// when it is a terminal: nothing for a scan that ends within delay, then one
// line rewritten at most every interval, cleared when the scan ends so that
// the report starts on a clean line.
type scanProgress struct {
	w               io.Writer
	now             func() time.Time
	delay, interval time.Duration

	mu          sync.Mutex
	start, last time.Time
	shown       bool
}

func newScanProgress(w io.Writer) *scanProgress {
	p := &scanProgress{w: w, now: time.Now, delay: time.Second, interval: 200 * time.Millisecond}
	p.start = p.now()
	return p
}

// update takes the running totals (scan.Options.Progress); it is safe for
// concurrent use.
func (p *scanProgress) update(st scan.Stats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.now()
	if t.Sub(p.start) < p.delay || p.shown && t.Sub(p.last) < p.interval {
		return
	}
	p.last, p.shown = t, true
	fmt.Fprintf(p.w, "\r\x1b[Kscanning: %d files, %s read", st.Files, humanBytes(st.Bytes))
}

// done clears the progress line, if one was shown.
func (p *scanProgress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
