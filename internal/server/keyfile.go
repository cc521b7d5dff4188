package server

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

// maxKeyFile bounds a private key file read whole: a PEM key or a note
// signer key is well under it.
const maxKeyFile = 64 << 10

// readKeyFile reads the private key file path (what names it in errors).
// As ssh does, it refuses a file another local user may read: such a key
// is as good as leaked, and using it silently would hide that. The mode
// is checked on the open file, so a swap after the check is not read.
// Windows has no such mode bits: there it is not checked.
func readKeyFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o: a private key must be readable by its owner only (chmod 600 %s)", what, path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(b) > maxKeyFile {
		clear(b)
		return nil, fmt.Errorf("%s %s is too large to be a key", what, path)
	}
	return b, nil
}
