package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/datadir"
)

// The policy floor (datadir.PolicyFloor) is the newest policy version this
// node has put in force. A policy version's MAC covers its number, so a
// database writer without master.key cannot renumber an old version, but
// they can delete the newest ones, and an older genuine version (which may
// grant more) is then the latest. Only state outside the database can tell
// that from a cluster that never went further: the node's data dir, as for
// policy-sealed. Version numbers only grow in a cluster, so each node's
// own floor is at most the true latest and nodes need not agree on it. A
// node that has never run (a new join) has no floor: until its first
// version it trusts the database, as it must.

// readPolicyFloor returns the data dir's policy floor (0 when none).
func readPolicyFloor(d datadir.Dir) (int64, error) {
	b, err := os.ReadFile(d.PolicyFloor())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("policy versions: reading the newest version this node enforced: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("policy versions: %s does not hold a version number", d.PolicyFloor())
	}
	return v, nil
}

// policyFollower returns the Authority's PolicyFollowed: it raises the
// data dir's floor to each newer version put in force (calls come in
// order, under the Authority's apply lock). A failure to write it is
// logged: the version is in force already, and the floor stays lower.
func policyFollower(d datadir.Dir, floor int64, log *slog.Logger) func(int64) {
	return func(v int64) {
		if v <= floor {
			return
		}
		if err := writeFileAtomic(d.PolicyFloor(), []byte(strconv.FormatInt(v, 10)+"\n")); err != nil {
			log.Error("policy: recording the version in force in the data dir failed; a rollback of the database below it would not be noticed at the next start", "version", v, "err", err)
			return
		}
		floor = v
	}
}

// writeFileAtomic replaces path with data (mode 0600): a crash leaves the
// old file or the new one, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
