package server

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/githubapp"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/pgrole"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// newMinter builds the manager of minted upstream credentials (SPEC
// section 9) with every credential source this build has.
func (s *Server) newMinter(ctx context.Context, hasher *token.Hasher) (*mint.Manager, error) {
	key, err := s.vault.SystemKey(ctx, "mint-seal", 32)
	if err != nil {
		return nil, fmt.Errorf("minted credentials: seal key: %w", err)
	}
	return mint.New(mint.Config{
		Store:      s.store,
		Sources:    s.credentialSources(),
		Hasher:     hasher,
		SealKey:    key,
		Audit:      s.audit,
		Registerer: s.registry,
		Logger:     s.log,
		// A negative value would make every pending credential stale.
		StalePending: max(s.cfg.Minted.StalePending, 0),
	})
}

// credentialSources are the sources by policy upstream kind.
func (s *Server) credentialSources() map[string]mint.Source {
	// Records whose fields are not authenticated are acted on only as the
	// policy in force says.
	inForce := func() *policy.Policy {
		if s.authority == nil {
			return nil
		}
		return s.authority.Policy()
	}
	s.pgRoles = pgrole.New(pgrole.Options{Logger: s.log})
	s.pgSource = &pgrole.Source{
		Roles:   s.pgRoles,
		Secrets: s.vault,
		Policy:  inForce,
		Known:   s.store.MintedNames,
		Audit: func(ctx context.Context, ev audit.Event) error {
			_, err := s.audit.Add(ctx, ev).Wait(ctx)
			return err
		},
		AuditFailed: func(upstream string, dropped int, err error) {
			s.log.Warn("dropped roles no record knows, but their audit entry was not written", "upstream", upstream, "count", dropped, "err", err)
		},
	}
	swept := prometheus.NewCounter(prometheus.CounterOpts{Name: "mayfly_pgrole_swept_total",
		Help: "Roles of postgres upstreams dropped because no record knew them."})
	failed := prometheus.NewCounter(prometheus.CounterOpts{Name: "mayfly_pgrole_sweep_failures_total",
		Help: "Sweeps of postgres upstreams' roles that failed (retried at the next sweep)."})
	s.registry.MustRegister(swept, failed)
	s.pgSweepReport = func(n int, err error) {
		swept.Add(float64(n))
		if n > 0 {
			s.log.Warn("dropped roles no record knows", "count", n)
		}
		if err != nil {
			failed.Inc()
			s.log.Warn("role sweep failed", "err", err)
		}
	}
	return map[string]mint.Source{
		policy.KindGitHubApp: githubapp.New(githubapp.Config{Secrets: s.vault, Policy: inForce}),
		policy.KindPostgres:  s.pgSource,
	}
}

// sweepRoles drops, at start and then periodically, the roles of postgres
// upstreams that no record knows (what a lost record left).
func (s *Server) sweepRoles(ctx context.Context) {
	s.pgSource.RunSweeps(ctx, s.cfg.Minted.RoleSweepInterval, s.pgSweepReport)
}

// sharedCredentials shows the mint manager's shared credentials to the
// gateway.
type sharedCredentials struct{ m *mint.Manager }

func (a sharedCredentials) SharedCredential(ctx context.Context, up *policy.Upstream, g *policy.Grant) (string, string, error) {
	is, err := a.m.Shared(ctx, up, g)
	if err != nil {
		return "", "", err
	}
	return is.Secret, is.ID, nil
}
