//go:build unix

package gateway

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// TestCAFileBounded: an upstream's ca_file is named by the policy and read
// under the gateway's lock (which every request's transport and credential
// take). A FIFO held every gateway request behind that lock until someone
// wrote to it; a device (/dev/zero, /dev/urandom) or a huge file grew memory
// without bound. Only a regular file of at most maxCAFile is read; anything
// else fails that upstream's requests (502), at once.
func TestCAFileBounded(t *testing.T) {
	srv := httptest.NewTLSServer(nil)
	t.Cleanup(srv.Close)
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	dir := t.TempDir()

	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	// A bundle with a valid certificate after 8 MiB of comment.
	huge := filepath.Join(dir, "huge.pem")
	if err := os.WriteFile(huge, append(bytes.Repeat([]byte("# padding\n"), 8<<20/10), cert...), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Releases a reader the code under test left blocked on it.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})

	tests := []struct {
		name, file string
		wantErr    string
	}{
		{"a CA bundle", good, ""},
		{"larger than the bound", huge, "larger than"},
		{"a FIFO", fifo, "not a regular file"},
		{"a folder", dir, "not a regular file"},
		{"missing", filepath.Join(dir, "none.pem"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gateway{transports: map[string]*upstreamTransport{}}
			up := &policy.Upstream{Name: "api", URL: srv.URL, CAFile: tt.file}
			done := make(chan error, 1)
			go func() {
				tr, err := g.transport(up)
				if err == nil {
					var pool *x509.CertPool
					if pool = tr.tr.TLSClientConfig.RootCAs; pool == nil {
						err = os.ErrInvalid
					}
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("reading the ca_file still blocks the gateway after 5s")
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("transport: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("transport error %v, want %q", err, tt.wantErr)
			}
		})
	}
}
