package auditlog

import (
	"errors"

	"github.com/mayfly-sh/mayfly/internal/store"
)

func isConflict(err error) bool { return errors.Is(err, store.ErrConflict) }
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
