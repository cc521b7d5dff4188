package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A syslog sink has one cursor for a cluster: one node at a time feeds
// it, under the exclusive right the node holds while it does (the alerts
// have theirs), so that no other node sends the same entries again. Before,
// every node forwarded from the one cursor and the SIEM got entries once
// per node.
func TestClusterSinkFedByOneNode(t *testing.T) {
	dsn := storetest.FreshSchema(t, storetest.PostgresDSN(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 4096)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					select {
					case got <- struct{}{}:
					default:
					}
				}
			}()
		}
	}()
	newHarness(t, Config{Postgres: dsn, AuditSinks: []SinkConfig{{Type: "syslog", Addr: ln.Addr().String()}}})
	select { // the node is feeding the sink
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("nothing reached the syslog sink")
	}
	other, err := store.Open(context.Background(), store.Config{PostgresDSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	x, err := other.TryExclusive(context.Background(), clusterSinksRight)
	if err != nil {
		t.Fatal(err)
	}
	if x != nil {
		x.Release()
		t.Fatal("another node could take the right to feed the cluster's syslog sink while this node feeds it")
	}
}
