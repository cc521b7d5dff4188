//go:build unix

package keyfile

import (
	"fmt"
	"os"
	"syscall"
)

// ownedByMe refuses st, the open file at path, unless the effective user
// owns it (root included: a file another user made is theirs to fill).
func ownedByMe(path string, st os.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: its owner is unknown: %w", path, ErrNotOwned)
	}
	if me := os.Geteuid(); int64(sys.Uid) != int64(me) {
		return fmt.Errorf("%s belongs to uid %d, not to uid %d reading it: %w (another user may have put it there: remove it)", path, sys.Uid, me, ErrNotOwned)
	}
	return nil
}
