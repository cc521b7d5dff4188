package server

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/mayfly-sh/mayfly/internal/auditlog"
)

// SinkConfig is one SIEM export of the audit log (config key audit_sinks).
type SinkConfig struct {
	Type       string `yaml:"type"` // file | syslog
	Path       string `yaml:"path"` // file: JSON lines, rotated by size
	MaxBytes   int64  `yaml:"max_bytes"`
	MaxBackups int    `yaml:"max_backups"`
	Addr       string `yaml:"addr"`    // syslog: host:port (RFC 5424 over TCP)
	TLS        bool   `yaml:"tls"`     // syslog over TLS
	CAFile     string `yaml:"ca_file"` // syslog TLS: CA to trust (default system roots)
	ServerName string `yaml:"server_name"`
}

func (c SinkConfig) open() (auditlog.Sink, error) {
	switch c.Type {
	case "file":
		if c.Path == "" {
			return nil, fmt.Errorf("audit_sinks: a file sink needs path")
		}
		return auditlog.NewFileSink(c.Path, auditlog.FileSinkOptions{MaxBytes: c.MaxBytes, MaxBackups: c.MaxBackups})
	case "syslog":
		if c.Addr == "" {
			return nil, fmt.Errorf("audit_sinks: a syslog sink needs addr")
		}
		if !c.TLS && (c.CAFile != "" || c.ServerName != "") {
			// Without this the entries would go in clear to a config that
			// reads as verified TLS.
			return nil, fmt.Errorf("audit_sinks: syslog %s: ca_file and server_name need tls: true (without it the audit log is sent unencrypted)", c.Addr)
		}
		o := auditlog.SyslogOptions{Addr: c.Addr}
		if c.TLS {
			o.TLS = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
			if c.CAFile != "" {
				pool, err := loadPool(c.CAFile)
				if err != nil {
					return nil, fmt.Errorf("audit_sinks: %w", err)
				}
				o.TLS.RootCAs = pool
			}
		}
		return auditlog.NewSyslogSink(o)
	}
	return nil, fmt.Errorf("audit_sinks: unknown type %q (file or syslog)", c.Type)
}

// plainOffLoopback reports a syslog sink without TLS to a host that is not
// loopback (a name counts as off loopback, but localhost).
func (c SinkConfig) plainOffLoopback() bool {
	if c.Type != "syslog" || c.TLS {
		return false
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		host = c.Addr
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
