package server

import (
	"errors"
	"fmt"

	"github.com/mayfly-sh/mayfly/internal/keyfile"
)

// maxKeyFile bounds a private key file read whole: a PEM key or a note
// signer key is well under it.
const maxKeyFile = 64 << 10

// readKeyFile reads the private key file path (what names it in errors),
// refusing one another local user may read (keyfile.Read).
func readKeyFile(path, what string) ([]byte, error) {
	b, err := keyfile.Read(path, maxKeyFile)
	if errors.Is(err, keyfile.ErrFileTooLarge) {
		return nil, fmt.Errorf("%s %s is too large to be a key", what, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}
