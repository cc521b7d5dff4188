//go:build unix

package auditlog

import (
	"fmt"
	"os"
	"syscall"
)

// openSinkFile opens the sink file at path (made mode 0600 if missing)
// for appending, refusing a symbolic link there: whoever may write to its
// folder could otherwise point it at any file the server may write, which
// the server would then append entries to, cut back to a line end
// (endTornLine), or create.
func openSinkFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		// O_NOFOLLOW fails with ELOOP on Linux, but EMLINK or EFTYPE
		// elsewhere: say what was refused whatever the errno.
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s is a symbolic link, refused: name the file itself", path)
		}
		return nil, err
	}
	return f, nil
}
