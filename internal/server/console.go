package server

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/mayfly-sh/mayfly/internal/console"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/version"
)

// heartbeatEvery is how often a node records that it is up (the console's
// health page lists the nodes seen in the last ten minutes).
const heartbeatEvery = 15 * time.Second

// nodeName names this node on the health page: its host and listener.
func nodeName(addr string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "mayfly"
	}
	return host + " " + addr
}

// heartbeat records this node in the store until ctx ends.
func (s *Server) heartbeat(ctx context.Context, addr string) {
	n := store.Node{ID: nodeName(addr), StartedAt: time.Now(), Version: version.Get().Version}
	s.nodeID.Store(&n.ID)
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		n.SeenAt = time.Now()
		if err := s.store.Heartbeat(ctx, n); err != nil && ctx.Err() == nil {
			s.log.Warn("heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// consoleHandler is ui as the API's Console, or nil (not a typed nil).
func consoleHandler(ui *console.Console) http.Handler {
	if ui == nil {
		return nil
	}
	return ui
}
