package auditlog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

func readLines(t *testing.T, paths ...string) []string {
	t.Helper()
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

func sampleEntries(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		body, _ := encodeEvent(gatewayEvent(i))
		out[i] = audit.AppendEntry(nil, int64(i), "2025-01-02T03:04:05.123456789Z", body)
	}
	return out
}

func TestFileSinkRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	es := sampleEntries(40)
	s, err := NewFileSink(path, FileSinkOptions{MaxBytes: 1000, MaxBackups: 100})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i += 8 {
		if err := s.Write(ctx, es[i:i+8], int64(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	matches, _ := filepath.Glob(path + ".*")
	if len(matches) < 5 {
		t.Fatalf("only %d rotated files", len(matches))
	}
	var paths []string
	for i := len(matches); i >= 1; i-- {
		paths = append(paths, path+"."+strconv.Itoa(i))
	}
	paths = append(paths, path)
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 1000 {
			t.Fatalf("%s has %d bytes", p, fi.Size())
		}
	}
	lines := readLines(t, paths...)
	if len(lines) != 40 {
		t.Fatalf("%d lines, want 40", len(lines))
	}
	for i, l := range lines {
		if l != string(es[i]) {
			t.Fatalf("line %d = %s", i, l)
		}
	}
	// MaxBackups bounds the files kept.
	path2 := filepath.Join(dir, "b.jsonl")
	s2, _ := NewFileSink(path2, FileSinkOptions{MaxBytes: 500, MaxBackups: 2})
	defer s2.Close()
	if err := s2.Write(ctx, es, 0); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(path2 + ".*"); len(m) != 2 {
		t.Fatalf("kept %v", m)
	}
	if fi, _ := os.Stat(path2); fi.Mode().Perm() != 0o600 {
		t.Fatalf("sink file mode %v", fi.Mode())
	}
}

// syslogServer accepts connections on 127.0.0.1 and collects framed
// messages.
type syslogServer struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
	// dropFirst closes the first connection after reading one message.
	dropFirst bool
	conns     int
}

func startSyslog(t *testing.T, cfg *tls.Config, dropFirst bool) *syslogServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	s := &syslogServer{ln: ln, dropFirst: dropFirst}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			n := s.conns
			s.mu.Unlock()
			go s.serve(c, n == 1 && s.dropFirst)
		}
	}()
	return s
}

func (s *syslogServer) serve(c net.Conn, dropAfterOne bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		lenStr, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
		if err != nil || n <= 0 || n > 1<<20 {
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, string(buf))
		s.mu.Unlock()
		if dropAfterOne {
			return
		}
	}
}

func (s *syslogServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

var rfc5424 = regexp.MustCompile(`^<110>1 2025-01-02T03:04:05\.123456Z host1 mayfly - gateway\.request \[mayfly@32473 index="(\d+)"\] (\{.*\})$`)

func TestSyslogSink(t *testing.T) {
	ctx := context.Background()
	es := sampleEntries(10)
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			var srvCfg, cliCfg *tls.Config
			if useTLS {
				srvCfg, cliCfg = testTLS(t)
			}
			srv := startSyslog(t, srvCfg, false)
			s, err := NewSyslogSink(SyslogOptions{Addr: srv.ln.Addr().String(), TLS: cliCfg, Hostname: "host1"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Write(ctx, es[:4], 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(ctx, es[4:], 4); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return len(srv.messages()) == 10 })
			for i, m := range srv.messages() {
				g := rfc5424.FindStringSubmatch(m)
				if g == nil {
					t.Fatalf("message %d not RFC 5424 as expected: %q", i, m)
				}
				if g[1] != strconv.Itoa(i) || g[2] != string(es[i]) {
					t.Fatalf("message %d carries %s / %s", i, g[1], g[2])
				}
			}
		})
	}
}

func TestSyslogReconnects(t *testing.T) {
	ctx := context.Background()
	srv := startSyslog(t, nil, true)
	s, _ := NewSyslogSink(SyslogOptions{Addr: srv.ln.Addr().String(), Hostname: "host1"})
	defer s.Close()
	es := sampleEntries(3)
	if err := s.Write(ctx, es[:1], 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(srv.messages()) == 1 })
	// The collector closes the idle connection; the sink notices and
	// reconnects instead of writing into the dead socket.
	time.Sleep(100 * time.Millisecond)
	if err := s.Write(ctx, es[1:], 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(srv.messages()) == 3 })
	// Unreachable collector: an error, not a hang.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	bad, _ := NewSyslogSink(SyslogOptions{Addr: addr, DialTimeout: time.Second})
	if err := bad.Write(ctx, es, 0); err == nil {
		t.Fatal("write to a closed port succeeded")
	}
}

func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return server, client
}

// flakySink fails while fail is set and records what it got.
type flakySink struct {
	mu   sync.Mutex
	fail bool
	got  map[int64][]byte
	n    int
}

func (f *flakySink) Name() string { return "flaky" }
func (f *flakySink) Write(ctx context.Context, es [][]byte, first int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errInjected
	}
	for i, e := range es {
		f.got[first+int64(i)] = e
	}
	f.n += len(es)
	return nil
}

func TestForwarderResumes(t *testing.T) {
	for _, b := range allBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := openLog(t, b.st, Options{})
			appendN(t, l, 30)
			path := filepath.Join(t.TempDir(), "siem.jsonl")
			sink, err := NewFileSink(path, FileSinkOptions{})
			if err != nil {
				t.Fatal(err)
			}
			f := NewForwarder(b.st, sink, ForwarderOptions{Batch: 7})
			if n, err := f.Pump(ctx); err != nil || n != 30 {
				t.Fatalf("Pump = %d, %v", n, err)
			}
			sink.Close()
			appendN(t, l, 10)
			// "Restart": new sink and forwarder on the same cursor.
			sink2, _ := NewFileSink(path, FileSinkOptions{})
			defer sink2.Close()
			f2 := NewForwarder(b.st, sink2, ForwarderOptions{Batch: 7})
			if n, err := f2.Pump(ctx); err != nil || n != 10 {
				t.Fatalf("Pump after restart = %d, %v", n, err)
			}
			lines := readLines(t, path)
			if len(lines) != 40 {
				t.Fatalf("%d lines", len(lines))
			}
			for i, line := range lines {
				if e, err := audit.ParseEntry([]byte(line)); err != nil || e.Index != int64(i) {
					t.Fatalf("line %d: %v", i, err)
				}
			}
			if c, _ := b.st.AuditCursor(ctx, "sink:"+sink.Name()); c != 40 {
				t.Fatalf("cursor %d", c)
			}
			// A failing sink keeps its place and catches up, skipping nothing.
			fl := &flakySink{fail: true, got: map[int64][]byte{}}
			ff := NewForwarder(b.st, fl, ForwarderOptions{Batch: 16})
			if _, err := ff.Pump(ctx); !errors.Is(err, errInjected) || ff.Err() == nil {
				t.Fatalf("Pump into failing sink = %v", err)
			}
			fl.mu.Lock()
			fl.fail = false
			fl.mu.Unlock()
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- NewForwarder(b.st, fl, ForwarderOptions{Poll: 10 * time.Millisecond}).Run(runCtx) }()
			appendN(t, l, 5)
			waitFor(t, func() bool { fl.mu.Lock(); defer fl.mu.Unlock(); return len(fl.got) == 45 })
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Run = %v", err)
			}
			for i := int64(0); i < 45; i++ {
				if !bytes.HasPrefix(fl.got[i], []byte(`{"index":`+strconv.FormatInt(i, 10)+`,`)) {
					t.Fatalf("entry %d delivered as %s", i, fl.got[i])
				}
			}
		})
	}
}

// A rotation renames every kept backup once, under the sink's lock and
// without looking at its context: max_backups in the millions (a slip of
// a digit) stalled the export for minutes at each rotation, or for good.
// It is refused when the sink is made, saying the bound.
func TestFileSinkMaxBackupsBounded(t *testing.T) {
	for _, tt := range []struct {
		backups int
		refused bool
	}{
		{0, false}, {5, false}, {MaxFileSinkBackups, false}, {MaxFileSinkBackups + 1, true}, {1 << 40, true},
	} {
		t.Run(strconv.Itoa(tt.backups), func(t *testing.T) {
			s, err := NewFileSink(filepath.Join(t.TempDir(), "audit.jsonl"), FileSinkOptions{MaxBytes: 100, MaxBackups: tt.backups})
			if tt.refused != (err != nil) {
				t.Fatalf("max_backups %d: %v, want refused %v", tt.backups, err, tt.refused)
			}
			if err != nil {
				if !strings.Contains(err.Error(), "max_backups") {
					t.Errorf("error %q does not name max_backups", err)
				}
				return
			}
			defer s.Close()
		})
	}
}
