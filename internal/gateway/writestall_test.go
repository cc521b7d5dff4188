package gateway

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// A client that stops reading an answer loses it once one write has
// waited WriteStall: it held the handler, and the upstream's connection,
// for as long as it liked. The request's outcome is recorded, aborted.
func TestStalledReaderIsCutOff(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.WriteStall = 300 * time.Millisecond })
	tok := h.issue(lease.Request{Grants: []string{"read"}})
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive window, so the server's writes block soon.
	conn.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(conn, "GET /gw/api/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, e := range h.entries() {
			if e.Path != "/big" || e.BytesOut == 0 && e.Reason == "" {
				continue
			}
			if e.BytesOut >= 64<<20 {
				t.Fatalf("%d bytes sent: the whole body", e.BytesOut)
			}
			if e.Detail["aborted"] != true {
				t.Fatalf("entry %+v: want the answer recorded as aborted", e.Event)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no outcome recorded for a reader that stopped reading: the handler is still writing")
}
