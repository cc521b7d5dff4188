package server

import (
	"fmt"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/sso"
)

// newSSO builds human sign-in from admin_oidc (nil, nil without it), its
// sessions kept by sessions.
func (s *Server) newSSO(sessions *authority.Sessions) (*sso.RP, *authority.Sessions, error) {
	cfg := s.cfg
	if cfg.AdminOIDC == nil {
		return nil, nil, nil
	}
	var secret string
	if f := cfg.AdminOIDC.ClientSecretFile; f != "" {
		// The client secret is a credential at the provider: refused when
		// others may read it, as the server's keys are.
		b, err := readKeyFile(f, "config: admin_oidc.client_secret_file")
		if err != nil {
			return nil, nil, err
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
	return rp, sessions, nil
}
