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

// RequireUnshared refuses an existing data dir another local user could
// change: one they own (made in /tmp before the victim ran init), or one
// anyone may write to (even sticky: they may still add names). They could
// swap ca.pem and the server's certificate and key for a pair of their
// own, or plant a link where the server later makes a file. Root's dirs
// and group-writable ones (a Kubernetes fsGroup volume) pass; a dir that
// does not exist yet passes too (init makes it, mode 0700).
func (d Dir) RequireUnshared() error {
	fi, err := os.Stat(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", string(d))
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int64(st.Uid) != int64(os.Geteuid()) {
		return fmt.Errorf("%s belongs to uid %d, not to uid %d running init: that user could replace its keys and certificates (another user may have made it ahead of you: use a directory of your own)",
			string(d), st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return fmt.Errorf("%s has mode %04o: any local user could replace its keys and certificates (chmod 700 %s, or name a new folder inside it: init makes it, mode 0700)",
			string(d), fi.Mode().Perm(), string(d))
	}
	return nil
}
