package secret

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mayfly-sh/mayfly/internal/keyfile"
)

const (
	// MasterKeyFile is the master key's file name inside the data dir.
	MasterKeyFile = "master.key"
	// MasterKeyEnv is the environment variable that, when set, holds the
	// master key (base64) and wins over the file.
	MasterKeyEnv = "MAYFLY_MASTER_KEY"
)

// maxKeyFile bounds how much of a key file is read: a base64 key is 44
// bytes, anything much larger is not a key file.
const maxKeyFile = 1024

// GenerateMasterKeyFile writes a fresh random master key, base64 and a
// newline, to path with mode 0600. It refuses to overwrite an existing file
// (the error wraps fs.ErrExist), and the key is on disk (fsync of the file
// and, best effort, its folder) before it returns.
func GenerateMasterKeyFile(path string) (err error) {
	key := randomKey()
	defer zero(key)
	buf := make([]byte, base64.StdEncoding.EncodedLen(len(key))+1)
	defer zero(buf)
	base64.StdEncoding.Encode(buf, key)
	buf[len(buf)-1] = '\n'

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("secret: master key file %s already exists: refusing to overwrite it: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("secret: create master key file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	if _, err = f.Write(buf); err != nil {
		return fmt.Errorf("secret: write master key file %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("secret: sync master key file %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("secret: close master key file %s: %w", path, err)
	}
	// Make the new directory entry durable too (best effort: not every
	// platform can fsync a directory).
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// LoadMasterKey returns the 32-byte master key: from env (the value of
// MAYFLY_MASTER_KEY) when it is not empty, else from the base64 file at
// path. The file must not be readable by group or others. Errors say what is
// wrong and where, never the key's bytes.
func LoadMasterKey(path string, env string) ([]byte, error) {
	if env != "" {
		key, err := parseMasterKey([]byte(env))
		if err != nil {
			return nil, fmt.Errorf("secret: %s: %w", MasterKeyEnv, err)
		}
		return key, nil
	}
	if path == "" {
		return nil, fmt.Errorf("secret: no master key: %s is not set and no key file was given", MasterKeyEnv)
	}
	raw, err := keyfile.Read(path, maxKeyFile)
	defer zero(raw)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("secret: no master key: %s is not set and %s does not exist (run mayfly init): %w", MasterKeyEnv, path, fs.ErrNotExist)
	case errors.Is(err, keyfile.ErrFileTooLarge):
		return nil, fmt.Errorf("secret: master key file %s is too large to be a key", path)
	case err != nil:
		return nil, fmt.Errorf("secret: master key file: %w", err)
	}
	key, err := parseMasterKey(raw)
	if err != nil {
		return nil, fmt.Errorf("secret: master key file %s: %w", path, err)
	}
	return key, nil
}

// parseMasterKey decodes a base64 (standard alphabet, padded or not) master
// key, ignoring surrounding white space. It does not keep or echo raw.
func parseMasterKey(raw []byte) ([]byte, error) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return nil, errors.New("empty: want a base64-encoded 32-byte key")
	}
	if len(s) > maxKeyFile {
		return nil, errors.New("too long to be a base64-encoded 32-byte key")
	}
	enc := base64.StdEncoding
	if s[len(s)-1] != '=' && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	buf := make([]byte, enc.DecodedLen(len(s)))
	n, err := enc.Decode(buf, s)
	if err != nil {
		zero(buf)
		// CorruptInputError reports only an offset, never the input.
		return nil, fmt.Errorf("not valid base64 (%v): want a base64-encoded 32-byte key", err)
	}
	if n != KeySize {
		zero(buf)
		return nil, fmt.Errorf("decodes to %d bytes, want %d", n, KeySize)
	}
	return buf[:n], nil
}
