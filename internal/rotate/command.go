package rotate

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/mayfly-sh/mayfly/internal/secret"
)

// commandRotator runs a program the server's config file names (never one
// an API caller names): the current value on its standard input, the new
// one read from its standard output. No shell, a minimal environment, a
// timeout, and output bounded to the largest value a secret may hold.
type commandRotator struct {
	name    string
	argv    []string
	timeout time.Duration
}

// CheckRotators validates the config file's rotators: each a name a
// secret's settings can use and an absolute program path (the server's
// PATH never chooses what runs).
func CheckRotators(r map[string][]string) error {
	for name, argv := range r {
		if err := secret.ValidateName(name); err != nil {
			return fmt.Errorf("rotators: %q: a rotator's name follows the rules of secret names", name)
		}
		if len(argv) == 0 || argv[0] == "" {
			return fmt.Errorf("rotators: %s: want [program, args…]", name)
		}
		if !filepath.IsAbs(argv[0]) {
			return fmt.Errorf("rotators: %s: the program %q must be an absolute path", name, argv[0])
		}
	}
	return nil
}

// minimalEnv is the whole environment of a rotator command: enough for a
// script to find the usual tools, nothing of the server's own (its
// MAYFLY_* settings, credentials of its process).
func minimalEnv(secretName string) []string {
	env := []string{"MAYFLY_SECRET_NAME=" + secretName, "LANG=C"}
	if runtime.GOOS == "windows" {
		return append(env, `PATH=C:\Windows\System32;C:\Windows`, `SystemRoot=C:\Windows`)
	}
	return append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
}

// boundedBuffer keeps at most limit bytes and notes that more came.
type boundedBuffer struct {
	buf   bytes.Buffer
	limit int
	over  bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.buf.Len(); room < len(p) {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil // keep draining so the program is not blocked
	}
	return b.buf.Write(p)
}

func (c commandRotator) Rotate(ctx context.Context, secretName string, current []byte, w writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	cmd.Env = minimalEnv(secretName)
	cmd.Dir = filepath.Dir(c.argv[0])
	cmd.Stdin = bytes.NewReader(current)
	out := &boundedBuffer{limit: secret.MaxValueSize + 2} // the value and a line end
	// Its standard output is a pipe of our own, not one exec copies from:
	// Wait then returns when the program exits, and what it left running
	// is killed at once (endGroup), not after a wait for the pipe to close
	// during which a child could go on acting.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("rotator %s: could not make its output pipe: %w", c.name, err)
	}
	defer pr.Close()
	cmd.Stdout = pw
	// Its standard error may echo a value: it goes to the null device.
	cmd.Stderr = nil
	read := make(chan struct{})
	go func() {
		defer close(read)
		io.Copy(out, pr)
	}()
	// WaitDelay bounds the wait for the goroutine feeding its standard
	// input, should a child hold that open unread.
	cmd.WaitDelay = 2 * time.Second
	ownGroup(cmd)
	err = cmd.Start()
	pw.Close()
	if err == nil {
		err = cmd.Wait()
	}
	endGroup(cmd)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; only the feeding of its input was cut short
	}
	select {
	case <-read:
	case <-time.After(2 * time.Second):
		// Something outside its process group still holds the output
		// open: its answer cannot be told complete.
		return fmt.Errorf("rotator %s: its output stayed open after it exited (a program it started holds it)", c.name)
	}
	defer clear(out.buf.Bytes())
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("rotator %s: no answer within %v", c.name, c.timeout)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("rotator %s: exited with status %d", c.name, ee.ExitCode())
		}
		return fmt.Errorf("rotator %s: could not run it: %w", c.name, err)
	case out.over:
		return fmt.Errorf("rotator %s: printed more than %d bytes", c.name, secret.MaxValueSize)
	}
	v := out.buf.Bytes()
	v = bytes.TrimSuffix(v, []byte("\n"))
	v = bytes.TrimSuffix(v, []byte("\r"))
	if len(v) == 0 {
		return fmt.Errorf("rotator %s: printed no value", c.name)
	}
	if subtle.ConstantTimeCompare(v, current) == 1 {
		return fmt.Errorf("rotator %s: printed the current value unchanged", c.name)
	}
	return w.commit(ctx, v)
}
