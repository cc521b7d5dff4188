package gateway

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// WebDAV's COPY and MOVE (RFC 4918 §10.3) act on a second resource, named
// by the Destination header. Forwarded as sent, it would let a job write
// wherever the upstream's URL space reaches, whatever its grant's paths.
// So the gateway reads it as a gateway URL of the same upstream, the
// policy must allow that path too (for every method the request names),
// and the upstream gets it rewritten to its own URL; anything else is
// refused and never forwarded.

// destinationError is a Destination header, or another resource a request
// names (references.go), that the gateway refuses: 400 for one it cannot
// read, 403 for one outside the request's upstream.
type destinationError struct {
	status int
	reason string
}

// destinationPath returns the clean upstream path a request's Destination
// header names, or "" when it has none, or why it is refused. host is the
// request's Host, and route its gateway prefix with the upstream's name
// ("/gw/api").
func destinationPath(h http.Header, host, route string) (string, *destinationError) {
	vs := h.Values("Destination")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", &destinationError{http.StatusBadRequest, "destination: more than one Destination header"}
	}
	u, err := url.Parse(strings.TrimSpace(vs[0]))
	if err != nil || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", &destinationError{http.StatusBadRequest, "destination: the Destination header is not a URL of this gateway without query or fragment"}
	}
	if u.Scheme != "" || u.Host != "" {
		// An absolute URL must name this gateway (the host the client
		// reached it by): the upstream's own URL is not for jobs to use.
		if u.Scheme != "http" && u.Scheme != "https" || !strings.EqualFold(u.Host, host) {
			return "", &destinationError{http.StatusForbidden, "destination: the Destination header names another host"}
		}
	}
	sub, ok := strings.CutPrefix(u.EscapedPath(), route)
	if !ok || !strings.HasPrefix(sub, "/") {
		return "", &destinationError{http.StatusForbidden, "destination: the Destination header names another upstream or route"}
	}
	clean, err := policy.CleanPath(sub)
	if err != nil {
		return "", &destinationError{http.StatusBadRequest, "destination: " + err.Error()}
	}
	return clean, nil
}
