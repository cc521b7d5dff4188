// Package failclosed names the one error of mayfly's fail-closed rule:
// when something an action depends on cannot be reached (the store, the
// audit log, the shared DPoP replay cache), the action does not happen and
// the caller answers 503. Every layer wraps ErrUnavailable for that, and
// every caller tests for it with errors.Is, whichever layer failed. The
// package holds that one value and nothing else; it imports nothing of
// mayfly, so any package may import it.
package failclosed

import "errors"

// ErrUnavailable is wrapped by every error that means "could not be done
// now, and nothing was done": retry later (HTTP 503). Wrap it with what
// was unavailable, e.g. fmt.Errorf("audit log %w: …", ErrUnavailable), so
// that messages say which dependency failed.
var ErrUnavailable = errors.New("unavailable")
