//go:build !unix

package auditlog

import "os"

// openSinkFile opens the sink file at path (made if missing) for
// appending. Windows has no O_NOFOLLOW; there the path is used as given.
func openSinkFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
}
