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
	"sync"
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

// The rotations' head (store.RotationHead) has a floor of its own
// (datadir.RotationHeadFloor), for the same reason: a database writer who
// kept an older head with its rows could put both back.

// readFloor returns the number in the floor file path (0, false when
// there is none).
func readFloor(path string) (int64, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading %s: %w", path, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || v < 0 {
		return 0, false, fmt.Errorf("%s does not hold a number", path)
	}
	return v, true, nil
}

// floorFollower returns a PolicyFollowed or HeadFollowed: it raises the
// floor in path to each newer number it is told. A failure to write it is
// logged: the number is followed already, and the floor stays lower.
func floorFollower(path string, floor int64, log *slog.Logger) func(int64) {
	var mu sync.Mutex
	return func(v int64) {
		mu.Lock()
		defer mu.Unlock()
		if v <= floor {
			return
		}
		if err := writeFileAtomic(path, []byte(strconv.FormatInt(v, 10)+"\n"), 0o600); err != nil {
			log.Error("recording what this node has followed in the data dir failed; a rollback of the database below it would not be noticed at the next start", "file", path, "value", v, "err", err)
			return
		}
		floor = v
	}
}

// writeFileAtomic replaces path with data (mode perm): a crash leaves the
// old file or the new one, never a torn one. Its temporary file is a new
// one of a random name (O_EXCL): a fixed name in a shared directory could
// be a link another user planted. The directory is synced too: until then
// a power loss could undo the rename (a floor would go back below what
// this node has followed).
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
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
		return err
	}
	return syncDir(filepath.Dir(path))
}
