package server

import (
	"context"
	"fmt"

	"github.com/mayfly-sh/mayfly/internal/githubapp"
	"github.com/mayfly-sh/mayfly/internal/mint"
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
	})
}

// credentialSources are the sources by policy upstream kind.
func (s *Server) credentialSources() map[string]mint.Source {
	return map[string]mint.Source{
		policy.KindGitHubApp: githubapp.New(githubapp.Config{Secrets: s.vault}),
	}
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
