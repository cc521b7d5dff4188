package audit

import "errors"

// Placeholders until internal/store lands; then these become
// errors.Is(err, store.ErrConflict) / store.ErrNotFound.
var (
	errStoreConflict = errors.New("store: conflict")
	errStoreNotFound = errors.New("store: not found")
)

func isConflict(err error) bool { return errors.Is(err, errStoreConflict) }
func isNotFound(err error) bool { return errors.Is(err, errStoreNotFound) }
