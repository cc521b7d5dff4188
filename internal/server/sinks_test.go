package server

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestCA writes a CA certificate (PEM) and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := generateTLS(ca, filepath.Join(dir, "ca-key.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	return ca
}

// A syslog sink given TLS settings (ca_file, server_name) without tls: true
// would send the audit log in clear while its config reads as verified TLS:
// it is refused. With tls: true, or with no TLS setting, it opens.
func TestSyslogSinkTLSSettingsNeedTLS(t *testing.T) {
	caFile := writeTestCA(t)
	tests := []struct {
		name    string
		cfg     SinkConfig
		wantErr string
	}{
		{"plain", SinkConfig{Type: "syslog", Addr: "127.0.0.1:6514"}, ""},
		{"tls", SinkConfig{Type: "syslog", Addr: "siem.internal:6514", TLS: true}, ""},
		{"tls with ca_file and server_name", SinkConfig{Type: "syslog", Addr: "10.0.0.9:6514", TLS: true, CAFile: caFile, ServerName: "siem.internal"}, ""},
		{"ca_file without tls", SinkConfig{Type: "syslog", Addr: "siem.internal:6514", CAFile: caFile}, "ca_file and server_name need tls: true"},
		{"server_name without tls", SinkConfig{Type: "syslog", Addr: "10.0.0.9:6514", ServerName: "siem.internal"}, "ca_file and server_name need tls: true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.cfg.open()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c, ok := s.(io.Closer); ok {
					c.Close()
				}
				return
			}
			if err == nil {
				if c, ok := s.(io.Closer); ok {
					c.Close()
				}
				t.Fatalf("opened %s; want an error with %q", s.Name(), tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q lacks %q", err, tt.wantErr)
			}
		})
	}
}

// A syslog sink without TLS to a host off loopback sends the audit log in
// clear: the server says so when it starts (alerts refuse the like unless
// allow_http; a sink is kept working, as a plain SIEM port is common).
func TestPlainSyslogOffLoopbackIsWarned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if _, err := Init(context.Background(), InitOptions{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	const warning = "sends the audit log unencrypted"
	tests := []struct {
		name string
		sink SinkConfig
		warn bool
	}{
		{"plain, off loopback", SinkConfig{Type: "syslog", Addr: "192.0.2.1:514"}, true},
		{"plain, by name", SinkConfig{Type: "syslog", Addr: "siem.invalid:514"}, true},
		{"tls", SinkConfig{Type: "syslog", Addr: "192.0.2.1:6514", TLS: true}, false},
		{"plain, loopback", SinkConfig{Type: "syslog", Addr: "127.0.0.1:514"}, false},
		{"plain, localhost", SinkConfig{Type: "syslog", Addr: "localhost:514"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := New(context.Background(), Config{DataDir: dir, Listen: "127.0.0.1:0", AuditSinks: []SinkConfig{tt.sink}}, NewLogger(&lockedWriter{w: &logs}, "text", "info"))
			if err != nil {
				t.Fatal(err)
			}
			s.Close(context.Background())
			if got := strings.Contains(logs.String(), warning); got != tt.warn {
				t.Fatalf("warned %v, want %v; logs:\n%s", got, tt.warn, logs.String())
			}
		})
	}
}
