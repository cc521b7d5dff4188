package main

import (
	"testing"

	"github.com/mayfly-sh/mayfly/internal/server"
)

// A flag laid over the config file replaces that value alone: --tls-key
// given without --tls-cert was dropped, and the file's key served.
func TestMergeConfigTLSFlags(t *testing.T) {
	file := server.Config{TLSCert: "/file/cert.pem", TLSKey: "/file/key.pem"}
	tests := []struct {
		args              []string
		wantCert, wantKey string
	}{
		{nil, "/file/cert.pem", "/file/key.pem"},
		{[]string{"--tls-key", "/flag/key.pem"}, "/file/cert.pem", "/flag/key.pem"},
		{[]string{"--tls-cert", "/flag/cert.pem"}, "/flag/cert.pem", "/file/key.pem"},
		{[]string{"--tls-cert", "/flag/cert.pem", "--tls-key", "/flag/key.pem"}, "/flag/cert.pem", "/flag/key.pem"},
	}
	for _, tt := range tests {
		cmd := newServerCmd()
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		var flags server.Config
		flags.TLSCert, _ = cmd.Flags().GetString("tls-cert")
		flags.TLSKey, _ = cmd.Flags().GetString("tls-key")
		got := mergeConfig(file, flags, cmd)
		if got.TLSCert != tt.wantCert || got.TLSKey != tt.wantKey {
			t.Errorf("%v: cert %q key %q, want %q %q", tt.args, got.TLSCert, got.TLSKey, tt.wantCert, tt.wantKey)
		}
	}
}
