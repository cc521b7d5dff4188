package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// Sink receives entries for a SIEM. Write gets consecutive entries' exact
// bytes starting at index firstIndex; it returns nil only once they are
// delivered as far as the sink can tell. Delivery is at least once: after a
// failure or restart the same entries may come again (dedupe by index).
type Sink interface {
	Name() string
	Write(ctx context.Context, entries [][]byte, firstIndex int64) error
}

// FileSinkOptions tune a FileSink.
type FileSinkOptions struct {
	// MaxBytes rotates the file before it would grow beyond this size
	// (default 100 MiB).
	MaxBytes int64
	// MaxBackups is how many rotated files (path.1 … path.N) are kept
	// (default 5, at most MaxFileSinkBackups).
	MaxBackups int
}

// MaxFileSinkBackups bounds FileSinkOptions.MaxBackups: a rotation renames
// every backup in turn, holding up the export meanwhile.
const MaxFileSinkBackups = 1000

// FileSink writes entries as JSON lines to a file, rotating it by size.
type FileSink struct {
	path string
	opts FileSinkOptions

	mu   sync.Mutex
	f    *os.File
	size int64
}

// NewFileSink returns a sink appending to path.
func NewFileSink(path string, opts FileSinkOptions) (*FileSink, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 100 << 20
	}
	if opts.MaxBackups <= 0 {
		opts.MaxBackups = 5
	}
	if opts.MaxBackups > MaxFileSinkBackups {
		return nil, fmt.Errorf("audit: file sink %s: max_backups is %d: it must be at most %d (each rotation renames every backup)", path, opts.MaxBackups, MaxFileSinkBackups)
	}
	s := &FileSink{path: path, opts: opts}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// Name is "file:" and the path.
func (s *FileSink) Name() string { return "file:" + s.path }

func (s *FileSink) open() error {
	f, err := openSinkFile(s.path)
	if err != nil {
		return fmt.Errorf("audit: opening sink file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: opening sink file: %w", err)
	}
	size, err := endTornLine(f, fi.Size())
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: opening sink file: %w", err)
	}
	s.f, s.size = f, size
	return nil
}

// endTornLine makes a sink file of size bytes end with a whole line and
// returns its new size. A write cut short by a kill or a power loss leaves
// part of an entry at the end, and the forwarder writes that entry again
// from its cursor: glued to the broken part, it would make one line no
// reader parses. A tail of at most one entry after the last line end (or
// from the file's start) is cut off; a longer one is no entry this sink
// wrote, and is kept, ended with a line end.
func endTornLine(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		return size, nil
	}
	window := min(size, int64(audit.MaxLineSize))
	buf := make([]byte, window)
	if _, err := f.ReadAt(buf, size-window); err != nil {
		return 0, err
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 || window == size {
		cut := size - window + int64(i) + 1
		if err := f.Truncate(cut); err != nil {
			return 0, err
		}
		return cut, nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return 0, err
	}
	return size + 1, nil
}

func (s *FileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("audit: rotating sink file: %w", err)
	}
	s.f = nil
	for i := s.opts.MaxBackups - 1; i >= 1; i-- {
		from := s.path + "." + strconv.Itoa(i)
		if err := os.Rename(from, s.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: rotating sink file: %w", err)
		}
	}
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return fmt.Errorf("audit: rotating sink file: %w", err)
	}
	return s.open()
}

// Write appends one line per entry and syncs the file. A write that fails
// (a full disk) may have left part of a line: the file is cut back to its
// last whole line, so the forwarder's retry of the batch follows whole
// lines and a reader never meets a broken one.
func (s *FileSink) Write(ctx context.Context, entries [][]byte, firstIndex int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	start := s.size // where this file's part of the batch begins
	fail := func(what string, err error) error {
		err = fmt.Errorf("audit: %s sink file: %w", what, err)
		if terr := s.f.Truncate(start); terr != nil {
			// The next Write reopens it, and the reopening cuts the
			// partial line off (endTornLine).
			s.f.Close()
			s.f = nil
			return errors.Join(err, fmt.Errorf("audit: cutting back sink file: %w", terr))
		}
		s.size = start
		return err
	}
	w := bufio.NewWriterSize(s.f, 64<<10)
	for _, e := range entries {
		n := int64(len(e) + 1)
		if s.size > 0 && s.size+n > s.opts.MaxBytes {
			if err := w.Flush(); err != nil {
				return fail("writing", err)
			}
			if err := s.f.Sync(); err != nil {
				return fail("syncing", err)
			}
			if err := s.rotate(); err != nil {
				return err
			}
			start = 0
			w.Reset(s.f)
		}
		w.Write(e)
		w.WriteByte('\n')
		s.size += n
	}
	if err := w.Flush(); err != nil {
		return fail("writing", err)
	}
	if err := s.f.Sync(); err != nil {
		return fail("syncing", err)
	}
	return nil
}

// Close closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// SyslogOptions configure a SyslogSink.
type SyslogOptions struct {
	Addr     string      // host:port of the collector
	TLS      *tls.Config // nil: plain TCP
	Hostname string      // default os.Hostname()
	AppName  string      // default "mayfly"
	Facility int         // default 13 (log audit)
	// Severity of every message (default 6, informational).
	Severity     int
	DialTimeout  time.Duration // default 5s
	WriteTimeout time.Duration // default 10s
}

// SyslogSink sends entries as RFC 5424 messages over TCP (RFC 6587
// octet-counting framing), optionally TLS (RFC 5425). Each message's
// MSG is the entry's exact JSON; its structured data carries the index.
type SyslogSink struct {
	opts SyslogOptions

	mu   sync.Mutex
	conn net.Conn
}

// NewSyslogSink returns a sink; it connects on first use.
func NewSyslogSink(opts SyslogOptions) (*SyslogSink, error) {
	if opts.Addr == "" {
		return nil, errors.New("audit: syslog sink needs an address")
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	opts.Hostname = syslogField(opts.Hostname, 255)
	if opts.AppName == "" {
		opts.AppName = "mayfly"
	}
	opts.AppName = syslogField(opts.AppName, 48)
	if opts.Facility <= 0 || opts.Facility > 23 {
		opts.Facility = 13
	}
	if opts.Severity <= 0 || opts.Severity > 7 {
		opts.Severity = 6
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &SyslogSink{opts: opts}, nil
}

// Name is "syslog:" and the address.
func (s *SyslogSink) Name() string { return "syslog:" + s.opts.Addr }

// syslogField makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most max characters, "-" when empty.
func syslogField(s string, max int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// syslogTime is RFC 5424's TIMESTAMP (at most microseconds).
const syslogTime = "2006-01-02T15:04:05.000000Z07:00"

// format appends one framed message for entry at index.
func (s *SyslogSink) format(dst []byte, entry []byte, index int64) []byte {
	ts, msgid := "-", "-"
	if e, err := audit.ParseEntry(entry); err == nil {
		ts = e.Time.UTC().Format(syslogTime)
		msgid = syslogField(e.Type, 32)
	}
	pri := s.opts.Facility*8 + s.opts.Severity
	msg := fmt.Sprintf("<%d>1 %s %s %s - %s [mayfly@32473 index=\"%d\"] ", pri, ts, s.opts.Hostname, s.opts.AppName, msgid, index)
	dst = strconv.AppendInt(dst, int64(len(msg)+len(entry)), 10)
	dst = append(dst, ' ')
	dst = append(dst, msg...)
	return append(dst, entry...)
}

// Write sends every entry; on error the connection is dropped and the
// next Write reconnects.
func (s *SyslogSink) Write(ctx context.Context, entries [][]byte, firstIndex int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !peerOpen(s.conn) {
		s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		d := &net.Dialer{Timeout: s.opts.DialTimeout}
		var c net.Conn
		var err error
		if s.opts.TLS != nil {
			c, err = (&tls.Dialer{NetDialer: d, Config: s.opts.TLS}).DialContext(ctx, "tcp", s.opts.Addr)
		} else {
			c, err = d.DialContext(ctx, "tcp", s.opts.Addr)
		}
		if err != nil {
			return fmt.Errorf("audit: connecting to syslog %s: %w", s.opts.Addr, err)
		}
		s.conn = c
	}
	var buf bytes.Buffer
	for i, e := range entries {
		buf.Write(s.format(nil, e, firstIndex+int64(i)))
	}
	deadline := time.Now().Add(s.opts.WriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s.conn.SetWriteDeadline(deadline)
	if _, err := s.conn.Write(buf.Bytes()); err != nil {
		s.conn.Close()
		s.conn = nil
		return fmt.Errorf("audit: writing to syslog %s: %w", s.opts.Addr, err)
	}
	return nil
}

// peerOpen reports whether the collector has not closed the connection: a
// collector never sends, so a read that does not time out at once means
// EOF or an error, and writing would lose entries into a dead socket.
func peerOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close closes the connection.
func (s *SyslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// ForwarderOptions tune a Forwarder.
type ForwarderOptions struct {
	Batch      int           // entries per Write (default 500)
	Poll       time.Duration // how often to look for new entries (default 1s)
	MaxBackoff time.Duration // longest wait after a failure (default 30s)
	Registerer prometheus.Registerer
	// Node names this node, for a sink local to it (a file on its disk)
	// among nodes that share the store: the cursor is then the node's own,
	// "sink:"+Name()+"@"+Node, so that every node's sink gets the whole
	// log, not the share its node moved a common cursor past. Until it
	// has delivered anything it starts from the common cursor, which it
	// used before nodes had their own.
	Node string
}

// Forwarder delivers the log to one sink, at least once, in index order,
// from the cursor stored under "sink:"+Name() (see ForwarderOptions.Node),
// so it resumes after a restart. It reads only durable entries and never
// skips one.
type Forwarder struct {
	st     CursorStorage
	sink   Sink
	opts   ForwarderOptions
	cursor string
	adopt  string // the common cursor a node's own starts from; "" if none

	sent   prometheus.Counter
	errors prometheus.Counter
	lastMu sync.Mutex
	last   error
}

// NewForwarder returns a forwarder of st's entries to sink.
func NewForwarder(st CursorStorage, sink Sink, opts ForwarderOptions) *Forwarder {
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	f := &Forwarder{st: st, sink: sink, opts: opts, cursor: "sink:" + sink.Name()}
	if opts.Node != "" {
		f.cursor, f.adopt = f.cursor+"@"+opts.Node, f.cursor
	}
	sentVec, errVec := newSinkVecs(opts.Registerer)
	f.sent = sentVec.WithLabelValues(sink.Name())
	f.errors = errVec.WithLabelValues(sink.Name())
	return f
}

// Err returns the last delivery error, nil after a success.
func (f *Forwarder) Err() error {
	f.lastMu.Lock()
	defer f.lastMu.Unlock()
	return f.last
}

// Pump delivers everything durable now and returns how many entries it
// delivered.
func (f *Forwarder) Pump(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := f.step(ctx)
		total += n
		f.lastMu.Lock()
		f.last = err
		f.lastMu.Unlock()
		if err != nil {
			f.errors.Inc()
			return total, err
		}
		if n == 0 {
			return total, nil
		}
	}
}

func (f *Forwarder) step(ctx context.Context) (int, error) {
	next, err := f.st.AuditCursor(ctx, f.cursor)
	if err == nil && next == 0 && f.adopt != "" {
		next, err = f.st.AuditCursor(ctx, f.adopt)
	}
	if err != nil {
		return 0, fmt.Errorf("audit: reading cursor of %s: %w", f.sink.Name(), err)
	}
	es, err := f.st.AuditEntries(ctx, next, f.opts.Batch)
	if err != nil {
		return 0, fmt.Errorf("audit: reading entries for %s: %w", f.sink.Name(), err)
	}
	if len(es) == 0 {
		return 0, nil
	}
	for i, e := range es {
		if got := audit.EntryIndex(e); got != next+int64(i) {
			return 0, fmt.Errorf("audit: entry at %d says index %d: not forwarding past a gap", next+int64(i), got)
		}
		// An entry is one line of compact JSON, which escapes every
		// control character: a row holding one was written by someone
		// else, and a line break in it would be a forged second entry
		// in a file sink or a syslog collector's lines.
		if bytes.ContainsFunc(e, func(r rune) bool { return r < 0x20 }) {
			return 0, fmt.Errorf("audit: entry at %d holds a line break or another control character, which no entry of this log holds: not forwarding it", next+int64(i))
		}
	}
	if err := f.sink.Write(ctx, es, next); err != nil {
		return 0, fmt.Errorf("audit: delivering %d entries from %d to %s: %w", len(es), next, f.sink.Name(), err)
	}
	if err := f.st.SetAuditCursor(ctx, f.cursor, next+int64(len(es))); err != nil {
		return 0, fmt.Errorf("audit: saving cursor of %s: %w", f.sink.Name(), err)
	}
	f.sent.Add(float64(len(es)))
	return len(es), nil
}

// Run pumps until ctx ends, polling for new entries and backing off after
// failures. It returns ctx's error.
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := f.opts.Poll
	for {
		_, err := f.Pump(ctx)
		wait := f.opts.Poll
		if err != nil {
			backoff = min(2*backoff, f.opts.MaxBackoff)
			wait = backoff
		} else {
			backoff = f.opts.Poll
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func newSinkVecs(reg prometheus.Registerer) (*prometheus.CounterVec, *prometheus.CounterVec) {
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mayfly_audit_sink_entries_total", Help: "Audit entries delivered to a sink."}, []string{"sink"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mayfly_audit_sink_errors_total", Help: "Failed deliveries to a sink."}, []string{"sink"})
	if reg != nil {
		sent = register(reg, sent)
		errs = register(reg, errs)
	}
	return sent, errs
}
