package server

import (
	"net/http"

	"github.com/mayfly-sh/mayfly/internal/dpop"
)

// newGateway builds the /gw/ handler.
func (s *Server) newGateway(dp *dpop.Verifier) (http.Handler, error) {
	return nil, nil
}
