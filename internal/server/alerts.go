package server

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/mayfly-sh/mayfly/internal/alert"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
)

// startAlerts runs the alert engine when the config has alerts: it reads
// the audit log as a sink (cursor "sink:alerts", so it resumes after a
// restart) and polls the log's health. Each target's HMAC key is read here,
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
			b, err := os.ReadFile(t.HMACKeyFile)
			if err != nil {
				return fmt.Errorf("alerts: target %s: reading hmac_key_file: %w", t.Name, err)
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
	f := auditlog.NewForwarder(s.store, eng, auditlog.ForwarderOptions{Registerer: s.registry})
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		eng.Wait()
	}()
	go func() {
		defer s.bg.Done()
		f.Run(s.bgCtx)
	}()
	go func() {
		defer s.bg.Done()
		eng.WatchHealth(s.bgCtx, s.audit.Healthy)
	}()
	return nil
}
