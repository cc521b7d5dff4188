package secret

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateAndLoadMasterKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, MasterKeyFile)
	if err := GenerateMasterKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode(), err)
	}
	before, _ := os.ReadFile(path)
	if err := GenerateMasterKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Generate: %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("second Generate changed the file")
	}
	key, err := LoadMasterKey(path, "")
	if err != nil || len(key) != KeySize {
		t.Fatalf("Load = %d bytes, %v", len(key), err)
	}
	if got := base64.StdEncoding.EncodeToString(key) + "\n"; got != string(before) {
		t.Fatal("loaded key differs from the file")
	}
	// Two generated keys differ.
	other := filepath.Join(dir, "other.key")
	if err := GenerateMasterKeyFile(other); err != nil {
		t.Fatal(err)
	}
	if k2, _ := LoadMasterKey(other, ""); bytes.Equal(k2, key) {
		t.Fatal("two generated keys are equal")
	}
	// The environment wins over the file.
	envKey := bytes.Repeat([]byte{7}, KeySize)
	got, err := LoadMasterKey(path, base64.StdEncoding.EncodeToString(envKey))
	if err != nil || !bytes.Equal(got, envKey) {
		t.Fatalf("env key: %v", err)
	}
	if err := GenerateMasterKeyFile(filepath.Join(dir, "no", "such", "dir", "k")); err == nil {
		t.Fatal("Generate into a missing folder succeeded")
	}
}

func TestLoadMasterKeyErrors(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, KeySize))
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	cases := []struct {
		name    string
		path    string
		env     string
		want    string // in the error
		ok      bool
		notLeak string
	}{
		{"file ok, spaces and no padding", write("raw", "  "+strings.TrimRight(good, "=")+"\r\n", 0o600), "", "", true, ""},
		{"url-safe-free standard alphabet ok", write("std", good, 0o400), "", "", true, ""},
		{"group readable", write("g", good, 0o640), "", "chmod 600", false, good},
		{"world readable", write("w", good, 0o644), "", "readable by its owner only", false, good},
		{"missing file", filepath.Join(dir, "missing"), "", "does not exist", false, ""},
		{"no path no env", "", "", MasterKeyEnv + " is not set", false, ""},
		{"empty file", write("empty", "\n", 0o600), "", "empty", false, ""},
		{"short key", write("short", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")), 0o600), "", "decodes to 16 bytes", false, "MDEyMzQ1"},
		{"not base64", write("junk", "this is not base64 at all!!", 0o600), "", "not valid base64", false, "this is not"},
		{"huge file", write("huge", strings.Repeat("A", 5000), 0o600), "", "too large", false, ""},
		{"a folder", dir, "", "not a regular file", false, ""},
		{"env not base64", "", "s3cr3t-not-base64!", MasterKeyEnv, false, "s3cr3t"},
		{"env wrong length", "", base64.StdEncoding.EncodeToString([]byte("hunter2-hunter2-hunter2")), "decodes to 23 bytes", false, "aHVudGVy"},
		{"env ok beats a bad file", write("bad2", "junk", 0o644), good, "", true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key, err := LoadMasterKey(c.path, c.env)
			if c.ok {
				if err != nil || len(key) != KeySize {
					t.Fatalf("LoadMasterKey = %d bytes, %v", len(key), err)
				}
				return
			}
			if err == nil {
				t.Fatal("LoadMasterKey succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if c.notLeak != "" && strings.Contains(err.Error(), c.notLeak) {
				t.Fatalf("error %q shows the key material", err)
			}
		})
	}
}
