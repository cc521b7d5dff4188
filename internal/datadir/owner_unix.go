//go:build unix

package datadir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// RequireOwner refuses root's writes into a data dir another user owns
// (the systemd unit's mayfly user, a container's nonroot): every file they
// made (the audit journal, a renewed key) would be root's, mode 0600, and
// the server, running as that user, could not open it and would not start.
// Such a user, and root in a dir of its own, pass; a dir that does not
// exist yet passes too (init makes it, as the caller).
func (d Dir) RequireOwner() error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	uid := strconv.FormatUint(uint64(st.Uid), 10)
	who, as := "uid "+uid, "sudo -u '#"+uid+"'"
	if u, err := user.LookupId(uid); err == nil {
		who, as = u.Username+" (uid "+uid+")", "sudo -u "+u.Username
	}
	return fmt.Errorf("%s belongs to %s, not root: run this command as that user (%s mayfly …); "+
		"files made as root would be root's, and a server running as that user could not open them", string(d), who, as)
}
