package server

import (
	"net/http"

	"github.com/mayfly-sh/mayfly/internal/dpop"
	"github.com/mayfly-sh/mayfly/internal/gateway"
)

// newGateway builds the /gw/ handler over the node's leases, policy,
// vault and audit log.
func (s *Server) newGateway(dp *dpop.Verifier) (http.Handler, error) {
	return gateway.New(gateway.Config{
		Leases:     s.leases,
		Policies:   s.authority,
		Secrets:    s.vault,
		Minted:     sharedCredentials{s.minter},
		Auditor:    s.audit,
		DPoP:       dp,
		ClientIP:   s.clientIP,
		Registerer: s.registry,
		Logger:     s.log,
		PublicURL:  s.publicURL,
		// Bodies the gateway reads for method overrides.
		MaxInspectedBody: s.cfg.Limits.GatewayMaxInspectedBody,
		RefusalRate:      s.cfg.Limits.GatewayRefusalRate,
		RefusalBurst:     s.cfg.Limits.GatewayRefusalBurst,
	})
}
