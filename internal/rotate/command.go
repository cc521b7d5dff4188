package rotate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

func (c commandRotator) Rotate(ctx context.Context, secretName string, current []byte, commit func(context.Context, []byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	cmd.Env = minimalEnv(secretName)
	cmd.Dir = filepath.Dir(c.argv[0])
	cmd.Stdin = bytes.NewReader(current)
	out := &boundedBuffer{limit: secret.MaxValueSize + 2} // the value and a line end
	cmd.Stdout = out
	// Its standard error may echo a value: it is read (so the program never
	// blocks on it) and dropped.
	cmd.Stderr = io.Discard
	// After the timeout the program is killed; WaitDelay stops waiting for
	// pipes a child of it may still hold.
	cmd.WaitDelay = 2 * time.Second
	ownGroup(cmd)
	err := cmd.Run()
	endGroup(cmd)
	if errors.Is(err, exec.ErrWaitDelay) {
		// It exited 0 but left a child holding its output open: what it
		// printed before exiting is its answer (the child is killed).
		err = nil
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
	if bytes.Equal(v, current) {
		return fmt.Errorf("rotator %s: printed the current value unchanged", c.name)
	}
	return commit(ctx, v)
}
