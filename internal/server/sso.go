package server

import (
	"fmt"
	"os"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/sso"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// newSSO builds human sign-in from admin_oidc (nil, nil without it).
func (s *Server) newSSO(hasher *token.Hasher) (*sso.RP, *authority.Sessions, error) {
	cfg := s.cfg
	if cfg.AdminSessionTTL < 0 {
		return nil, nil, fmt.Errorf("config: admin_session_ttl must be positive")
	}
	if cfg.AdminOIDC == nil {
		return nil, nil, nil
	}
	var secret string
	if f := cfg.AdminOIDC.ClientSecretFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("config: admin_oidc.client_secret_file: %w", err)
		}
		secret = string(b)
		clear(b)
	}
	rp, err := sso.New(*cfg.AdminOIDC, secret, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	if !cfg.InsecureHTTP && !rp.Secure() {
		return nil, nil, fmt.Errorf("config: admin_oidc.redirect_url must be https on a TLS server")
	}
	return rp, authority.NewSessions(s.store, hasher, s.audit, nil, cfg.AdminSessionTTL), nil
}
