// Package keyfile reads private files (keys, saved admin sessions) whole,
// refusing one another local user may read, as ssh does: the one place
// that check is made, so the master key, the server's keys and the CLI's
// session file agree on it. It never parses, keeps or prints what it reads.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// ErrReadableByOthers says a private file is refused for its mode.
var ErrReadableByOthers = errors.New("it must be readable by its owner only")

// ErrFileTooLarge says a private file holds more than its reader takes.
var ErrFileTooLarge = errors.New("too large")

// ErrNotOwned says a private file is refused for its owner (ReadOwn).
var ErrNotOwned = errors.New("it must belong to the user reading it")

// Read reads the file at path whole, up to max bytes, refusing
// (as ssh refuses such a key) a file another local user may read: a key
// or session others can read is as good as leaked, and using it silently
// would hide that. The mode is checked on the open file, so a swap after
// the check is not read. Windows has no such mode bits: there it is not
// checked. Errors name the file and, for its mode, the chmod to run.
func Read(path string, max int64) ([]byte, error) { return read(path, max, false) }

// ReadOwn is Read that also refuses, on Unix, a file another user owns:
// one whose contents are trusted, not only kept secret (the CLI's saved
// sessions, chosen by $MAYFLY_SESSION_FILE, perhaps in a shared
// directory), must not be one another user put there, mode 0600, for
// root to read and act on. The owner is checked on the open file too.
func ReadOwn(path string, max int64) ([]byte, error) { return read(path, max, true) }

func read(path string, max int64, own bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: %w (chmod 600 %s)", path, st.Mode().Perm(), ErrReadableByOthers, path)
	}
	if own {
		if err := ownedByMe(path, st); err != nil {
			return nil, err
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > max {
		clear(b)
		return nil, fmt.Errorf("%s is %w", path, ErrFileTooLarge)
	}
	return b, nil
}
