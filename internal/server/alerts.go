package server

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/alert"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
)

// startAlerts runs the alert engine when the config has alerts: each
// target reads the audit log as its own sink (cursor "sink:alerts:NAME",
// so it resumes after a restart and a target that is down holds back no
// other; all on one node at a time of a cluster, so alerts are not sent
// once per node) and polls the log's health (on every node: each knows
// its own). Each target's HMAC key is read here,
// from its file or stored secret, and handed over as bytes: the alert
// package never reaches the vault.
func (s *Server) startAlerts(ctx context.Context) error {
	if s.cfg.Alerts == nil {
		return nil
	}
	cfg := *s.cfg.Alerts
	if err := cfg.Validate(); err != nil {
		return err
	}
	keys := map[string][]byte{}
	for _, t := range cfg.Targets {
		switch {
		case t.HMACKeyFile != "":
			// A signing key others may read lets them forge alerts: refused
			// as the server's other keys are.
			b, err := readKeyFile(t.HMACKeyFile, "alerts: target "+t.Name+": hmac_key_file")
			if err != nil {
				return err
			}
			keys[t.Name] = bytes.TrimSpace(b)
		case t.HMACKeySecret != "":
			b, _, err := s.vault.Reveal(ctx, t.HMACKeySecret)
			if err != nil {
				return fmt.Errorf("alerts: target %s: reading hmac_key_secret %q: %w", t.Name, t.HMACKeySecret, err)
			}
			keys[t.Name] = bytes.TrimSpace(b)
		}
	}
	eng, err := alert.New(cfg, alert.Options{Keys: keys, Server: s.cfg.PublicURL, Logger: s.log, Registerer: s.registry})
	if err != nil {
		return err
	}
	eng.Start(s.bgCtx)
	var fs []*auditlog.Forwarder
	var names []string
	for _, sk := range eng.Sinks() {
		fs = append(fs, auditlog.NewForwarder(s.store, sk, auditlog.ForwarderOptions{Registerer: s.registry}))
		names = append(names, sk.Name())
	}
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		eng.Wait()
	}()
	go func() {
		defer s.bg.Done()
		s.runExclusive(s.bgCtx, "sink:alerts", func(ctx context.Context) {
			if err := adoptAlertsCursor(ctx, s.store, names); err != nil {
				s.log.Warn("alerts: could not start the targets' cursors from the shared one; will retry", "err", err)
				return
			}
			var wg sync.WaitGroup
			for _, f := range fs {
				wg.Go(func() { f.Run(ctx) })
			}
			wg.Wait()
		})
	}()
	go func() {
		defer s.bg.Done()
		eng.WatchHealth(s.bgCtx, s.audit.Healthy)
	}()
	return nil
}

// adoptAlertsCursor starts each sink that has no cursor yet from the one
// cursor, "sink:alerts", that all targets shared before each had its own,
// so that an upgrade neither raises alerts again nor reads the log anew.
// It runs under the exclusive right, so no other node moves the cursors
// meanwhile.
func adoptAlertsCursor(ctx context.Context, st auditlog.CursorStorage, sinks []string) error {
	shared, err := st.AuditCursor(ctx, "sink:alerts")
	if err != nil || shared == 0 {
		return err
	}
	for _, name := range sinks {
		next, err := st.AuditCursor(ctx, "sink:"+name)
		if err != nil {
			return err
		}
		if next == 0 {
			if err := st.SetAuditCursor(ctx, "sink:"+name, shared); err != nil {
				return err
			}
		}
	}
	return nil
}

// clusterSinksRight is the exclusive right under which one node at a time
// feeds the audit sinks that have one cursor for the cluster.
const clusterSinksRight = "sinks"

// exclusiveRetry is how often a node that does not hold an exclusive
// right asks for it again, and how often the holder checks it still does.
const exclusiveRetry = 5 * time.Second

// runExclusive runs work while this node holds the store's exclusive
// right called name, until ctx ends: when the right is lost (the session
// holding it died) work's context ends, and the right is asked for again.
// Whoever holds it next resumes from the stored cursor.
func (s *Server) runExclusive(ctx context.Context, name string, work func(context.Context)) {
	t := time.NewTicker(exclusiveRetry)
	defer t.Stop()
	for {
		x, err := s.store.TryExclusive(ctx, name)
		if err != nil {
			s.log.Warn("could not ask for an exclusive right; will retry", "name", name, "err", err)
		}
		if x != nil {
			wctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				work(wctx)
			}()
		held:
			for {
				select {
				case <-done:
					break held
				case <-t.C:
					if err := x.Alive(ctx); err != nil {
						s.log.Warn("lost an exclusive right; its work stops until it is held again", "name", name, "err", err)
						break held
					}
				}
			}
			cancel()
			<-done
			x.Release()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
