package server

import (
	"net/http"
	"time"

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
		MaxGzipRatio:     s.cfg.Limits.GatewayMaxGzipRatio,
		RefusalRate:      s.cfg.Limits.GatewayRefusalRate,
		RefusalBurst:     s.cfg.Limits.GatewayRefusalBurst,
		WriteStall:       writeStall(s.cfg.Limits.WriteTimeout),
	})
}

// writeStall is the gateway's bound on one write of an answer: its default,
// unless limits.write_timeout bounds whole answers, which the gateway's
// deadline, renewed at each write, would lift.
func writeStall(writeTimeout time.Duration) time.Duration {
	if writeTimeout > 0 {
		return -1
	}
	return 0
}
